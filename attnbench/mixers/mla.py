"""Multi-head latent attention (DeepSeek-V2, arXiv 2405.04434 §2.1.2-2.1.3) with a latent cache.

    c^Q   = RMSNorm(x W^DQ)                       (q_lora_rank given; else q = x W^Q directly)
    [q^C; q^R] = c^Q W^UQ      per head [Kn; R]   q^R = RoPE(q^R)
    [c^KV; k^R] = x W^DKV      c^KV = RMSNorm(c^KV) [C], k^R = RoPE(k^R) [R], shared by heads
    attention over keys [W^UK_i c^KV; k^R], values W^UV_i c^KV (ops/mla), y = o W^O

rope_dim = 0 is NoPE, as Kimi Linear uses MLA in its KDA hybrids (the linear layers carry
position); rope_dim = 64 is DeepSeek's decoupled RoPE. Scale 1/sqrt(Kn + R).

The decode cache holds only what Eq. 9 and 15 say must be kept: the normalised latent
c^KV [B, max_len, C] and the rotated rope key k^R [B, max_len, R] (+ int 'len'):
L·(C + R) values per sequence (576 per token for DeepSeek's 512 + 64), not the full per-head
K/V that fla's MLA caches (L·H·(Kn + R + V): 5120 per token at 16 heads).

Which form runs (``absorb``): 'never' = un-absorbed, 'always' = absorbed, 'auto' = un-absorbed
for training (no state), and with a state whichever form needs fewer FLOPs for this call
(``form_flops``): absorbed for decode steps, un-absorbed for prefill. impl: 'torch' = the
explicit softmax reference, 'kernel'/'auto' = SDPA, and for the absorbed form cuBLAS matmuls
over the latent, or (``decode_kernel='auto'``) for a one-token decode step on a GPU, one
flash-decoding Triton kernel that reads the latent once (ops/mla/decode_triton.py).
``decode_kernel='matmul'`` keeps the matmuls (the baseline the benchmarks compare it with).
``impl_ran`` names both, e.g. 'triton.absorbed', 'matmul.absorbed', 'torch.unabsorbed'.
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops.mla import kernel as mla_kernel
from ..ops.mla.reference import mla_absorbed, mla_scale, mla_unabsorbed
from .base import Mixer, State, choose_impl, dtype_bytes
from .layers import GatedRMSNorm, MergedStepProjections
from .rope import RotaryTable, compute_dtype, rotate

ABSORB = ("auto", "always", "never")
DECODE_KERNELS = ("auto", "matmul")  # auto: the Triton flash-decoding kernel where it fits
_FORMS = {  # (resolved impl, absorbed) -> (op, impl_ran)
    ("torch", False): (mla_unabsorbed, "torch.unabsorbed"),
    ("torch", True): (mla_absorbed, "torch.absorbed"),
    ("kernel", False): (mla_kernel.mla_unabsorbed_sdpa, "sdpa.unabsorbed"),
    ("kernel", True): (mla_kernel.mla_absorbed_matmul, "matmul.absorbed"),
}


class MLA(RotaryTable, MergedStepProjections, Mixer):
    def __init__(
        self,
        d_model: int,
        n_heads: int = 16,
        kv_lora_rank: int = 512,
        q_lora_rank: int | None = None,
        qk_nope_head_dim: int = 128,
        rope_dim: int = 0,
        v_head_dim: int = 128,
        rope_theta: float = 10000.0,
        impl: str = "auto",
        absorb: str = "auto",
        decode_kernel: str = "auto",
    ):
        super().__init__(d_model, impl)
        for name, value in (("n_heads", n_heads), ("kv_lora_rank", kv_lora_rank),
                            ("qk_nope_head_dim", qk_nope_head_dim), ("v_head_dim", v_head_dim)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if q_lora_rank is not None and (not isinstance(q_lora_rank, int) or q_lora_rank <= 0):
            raise ValueError(f"q_lora_rank must be a positive integer or None (no query low-rank); got {q_lora_rank!r}")
        if not isinstance(rope_dim, int) or rope_dim < 0 or rope_dim % 2:
            raise ValueError(f"rope_dim must be 0 (NoPE) or a positive even integer; got {rope_dim!r}")
        if absorb not in ABSORB:
            raise ValueError(f"absorb must be one of {', '.join(ABSORB)}; got {absorb!r}")
        if decode_kernel not in DECODE_KERNELS:
            raise ValueError(f"decode_kernel must be one of {', '.join(DECODE_KERNELS)}; got {decode_kernel!r}")
        self.decode_kernel = decode_kernel
        self.n_heads, self.kv_lora_rank, self.q_lora_rank = n_heads, kv_lora_rank, q_lora_rank
        self.qk_nope_head_dim, self.rope_dim, self.v_head_dim = qk_nope_head_dim, rope_dim, v_head_dim
        self.rope_theta, self.absorb = rope_theta, absorb
        self.scale = mla_scale(qk_nope_head_dim, rope_dim)
        q_out = n_heads * (qk_nope_head_dim + rope_dim)
        if q_lora_rank is None:
            self.q_proj = nn.Linear(d_model, q_out, bias=False)
        else:  # Eqs. 12-13: a low-rank query with its own norm, as DeepSeek-V2 does
            self.q_down = nn.Linear(d_model, q_lora_rank, bias=False)
            self.q_norm = GatedRMSNorm(q_lora_rank, activation="none", eps=1e-6)
            self.q_up = nn.Linear(q_lora_rank, q_out, bias=False)
        self.kv_down = nn.Linear(d_model, kv_lora_rank + rope_dim, bias=False)  # W^DKV and W^KR in one
        self.kv_norm = GatedRMSNorm(kv_lora_rank, activation="none", eps=1e-6)
        # W^UK and W^UV stacked per head: weight [H·(Kn + V), C] viewed as [H, Kn + V, C].
        self.kv_up = nn.Linear(kv_lora_rank, n_heads * (qk_nope_head_dim + v_head_dim), bias=False)
        self.o_proj = nn.Linear(n_heads * v_head_dim, d_model, bias=False)
        self.resolved_impl = choose_impl(impl, (True, ""), "MLA")  # SDPA is always there
        self.init_merged_projections()
        if rope_dim:
            self.init_rotary_table(rope_dim, rope_theta)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, kv_lora_rank={self.kv_lora_rank}, "
            f"q_lora_rank={self.q_lora_rank}, qk_nope_head_dim={self.qk_nope_head_dim}, rope_dim={self.rope_dim}, "
            f"v_head_dim={self.v_head_dim}, impl={self.impl}, absorb={self.absorb}, decode_kernel={self.decode_kernel}"
        )

    # -- decoding state ---------------------------------------------------------------------
    def init_state(self, batch: int, max_len: int, device=None, dtype=torch.float32) -> State:
        if batch <= 0 or max_len <= 0:
            raise ValueError(f"batch and max_len must be positive; got batch={batch}, max_len={max_len}")
        return {
            "c_kv": torch.zeros(batch, max_len, self.kv_lora_rank, device=device, dtype=dtype),  # [B, L, C]
            "k_rope": torch.zeros(batch, max_len, self.rope_dim, device=device, dtype=dtype),  # [B, L, R]
            "len": 0,
        }

    def state_bytes(self, context_len: int, batch: int = 1, dtype: torch.dtype = torch.bfloat16) -> int:
        """L · (C + R) · B · bytes: the latent and the shared rope key, nothing per head."""
        return context_len * (self.kv_lora_rank + self.rope_dim) * batch * dtype_bytes(dtype)

    def _validated_len(self, state: State, batch: int, t: int) -> int:
        c_kv = state.get("c_kv")
        max_len = c_kv.shape[1] if isinstance(c_kv, torch.Tensor) and c_kv.dim() == 3 else 0
        self.check_state(state, {
            "c_kv": torch.empty(batch, max_len, self.kv_lora_rank, device="meta"),
            "k_rope": torch.empty(batch, max_len, self.rope_dim, device="meta"),
        })
        return self.cache_len(state, t, max_len, "latent cache")

    # -- forward ----------------------------------------------------------------------------
    def x_linears(self) -> dict[str, nn.Linear]:
        """The projections of x: the query's (or its low-rank first factor) and the latent's."""
        return {"q": self.q_proj if self.q_lora_rank is None else self.q_down, "kv": self.kv_down}

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State | None]:
        b, t = self.check_input(x)
        offset = 0 if state is None else self._validated_len(state, b, t)
        h, kn, r, c, dv = self.n_heads, self.qk_nope_head_dim, self.rope_dim, self.kv_lora_rank, self.v_head_dim
        p = self.project_x(x)
        q = p["q"] if self.q_lora_rank is None else self.q_up(self.q_norm(p["q"], None))
        q_nope, q_rope = q.view(b, t, h, kn + r).split([kn, r], dim=-1)  # [B, T, H, Kn], [B, T, H, R]
        c_kv, k_rope = p["kv"].split([c, r], dim=-1)  # [B, T, C], [B, T, R]
        c_kv = self.kv_norm(c_kv, None)
        if r:
            cos, sin = self.rotary_table(offset, t, compute_dtype(q_rope.dtype), x.device)
            q_rope = rotate(q_rope, cos, sin)
            k_rope = rotate(k_rope[:, :, None, :], cos, sin)[:, :, 0, :]  # [B, T, R]
        if state is not None:
            c_kv, k_rope, state = self._append(state, c_kv, k_rope, offset)  # [B, S, C], [B, S, R]
            c_kv, k_rope = c_kv.to(x.dtype), k_rope.to(x.dtype)
        w_uk, w_uv = self.kv_up.weight.view(h, kn + dv, c).split([kn, dv], dim=1)  # [H, Kn, C], [H, V, C]
        op, self.impl_ran = self._pick_op(self._absorbed(t, c_kv.shape[1], state is not None), q_nope, c_kv)
        rope_args = (q_rope, k_rope) if r else (None, None)
        o = op(q_nope, rope_args[0], c_kv, rope_args[1], w_uk, w_uv, self.scale)  # [B, T, H, V]
        return self.o_proj(o.reshape(b, t, h * dv)), state

    def _append(self, state: State, c_kv: torch.Tensor, k_rope: torch.Tensor, offset: int):
        end = offset + c_kv.shape[1]
        state["c_kv"][:, offset:end] = c_kv  # written in place into the preallocated cache
        state["k_rope"][:, offset:end] = k_rope
        return state["c_kv"][:, :end], state["k_rope"][:, :end], {**state, "len": end}

    def _pick_op(self, absorbed: bool, q_nope: torch.Tensor, c_kv: torch.Tensor):
        """(op, impl_ran): the form's op, or the Triton decode kernel for a step it fits."""
        if absorbed and self.resolved_impl == "kernel" and self.decode_kernel == "auto" \
                and mla_kernel.triton_decode_fits(q_nope, c_kv)[0]:
            return mla_kernel.mla_absorbed_triton, "triton.absorbed"
        return _FORMS[(self.resolved_impl, absorbed)]

    def _absorbed(self, t: int, s: int, decoding: bool) -> bool:
        if self.absorb != "auto":
            return self.absorb == "always"
        if not decoding:
            return False
        unabsorbed, absorbed = self.form_flops(t, s)
        return absorbed < unabsorbed

    # -- cost -------------------------------------------------------------------------------
    def form_flops(self, t: int, s: int) -> tuple[float, float]:
        """(un-absorbed, absorbed) FLOPs of the attention part of one call: T queries, S keys.

        un-absorbed: expand S latents to K, V (2·S·C·H·(Kn + V)) + attention 2·T·S·H·(Kn + R + V)
        absorbed:    fold T queries and outputs (2·T·H·C·(Kn + V)) + attention 2·T·S·H·(2C + R)
        (S as the attended length on both sides: the causal saving is the same for both.)
        """
        h, kn, r, c, dv = self.n_heads, self.qk_nope_head_dim, self.rope_dim, self.kv_lora_rank, self.v_head_dim
        unabsorbed = 2 * s * c * h * (kn + dv) + 2 * t * s * h * (kn + r + dv)
        absorbed = 2 * t * h * c * (kn + dv) + 2 * t * s * h * (2 * c + r)
        return float(unabsorbed), float(absorbed)

    def flops_per_token(self, context_len: int, decode: bool = False, absorbed: bool | None = None) -> float:
        """Forward matmul FLOPs per token (2 per multiply-add); absorbed=None means decode.

        Shared: query 2·D·H·(Kn + R) (or 2·D·r_q + 2·r_q·H·(Kn + R) with q_lora_rank r_q),
        kv down 2·D·(C + R), output 2·H·V·D.
        Un-absorbed: kv up 2·C·H·(Kn + V) for each new token (while training or prefilling;
        a decode step re-expands all L cached latents: L times that), attention
        2·L_avg·H·(Kn + R) + 2·L_avg·H·V.
        Absorbed: query fold 2·H·Kn·C, output unfold 2·H·C·V, attention 2·L_avg·H·(C + R) + 2·L_avg·H·C.
        L_avg = (L + 1) / 2 averaged over a causal sequence of L tokens; L with decode=True.
        """
        d, h, kn, dv = self.d_model, self.n_heads, self.qk_nope_head_dim, self.v_head_dim
        r, c = self.rope_dim, self.kv_lora_rank
        absorbed = decode if absorbed is None else absorbed
        rq = self.q_lora_rank
        query = 2 * d * h * (kn + r) if rq is None else 2 * d * rq + 2 * rq * h * (kn + r)
        shared = query + 2 * d * (c + r) + 2 * h * dv * d
        attended = context_len if decode else (context_len + 1) / 2
        if absorbed:
            mixing = 2 * h * kn * c + 2 * h * c * dv + 2 * attended * h * (c + r) + 2 * attended * h * c
        else:
            expand = 2 * c * h * (kn + dv) * (context_len if decode else 1)
            mixing = expand + 2 * attended * h * (kn + r) + 2 * attended * h * dv
        return float(shared + mixing)
