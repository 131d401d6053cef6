"""Full causal softmax attention with grouped-query heads, RoPE and a preallocated KV cache.

    q, k, v = x W_q, x W_k, x W_v        q [B, T, H, K], k and v [B, T, H_kv, K]
    q, k    = RoPE(q, pos), RoPE(k, pos)  (pos_emb='rope'; 'none' leaves positions to the stack)
    o       = softmax(q kᵀ / sqrt(K) + causal mask) v,   y = o W_o

impl: 'torch' runs the explicit reference (ops/attention/reference.py), 'kernel' runs SDPA or
flash_attn (ops/attention/kernel.py), 'auto' = 'kernel' (SDPA exists wherever torch does).
``impl_ran`` says which ran: 'torch.softmax', 'sdpa' or 'flash_attn'.

Decoding: ``init_state`` preallocates k, v [B, H_kv, max_len, K] (SDPA's layout, so that the
filled prefix is a view) and an int 'len'. A forward with a state writes the new keys at
len .. len + T - 1 in place and attends over the filled prefix; the returned dict carries the
same tensors and the new length. The cache is for inference: run decoding under no_grad.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..ops.attention import kernel as attn_kernel
from ..ops.attention.reference import attention_reference
from .base import Mixer, State, choose_impl, dtype_bytes, require_divisible
from .rope import RotaryTable, compute_dtype, rotate

POS_EMBS = ("rope", "none")


class Attention(RotaryTable, Mixer):
    def __init__(
        self,
        d_model: int,
        n_heads: int = 16,
        head_dim: int | None = None,
        n_kv_heads: int | None = None,
        pos_emb: str = "rope",
        rope_theta: float = 10000.0,
        impl: str = "auto",
    ):
        super().__init__(d_model, impl)
        if n_heads <= 0:
            raise ValueError(f"n_heads must be a positive integer; got {n_heads}")
        if head_dim is None:
            require_divisible("d_model", d_model, "n_heads", n_heads)
            head_dim = d_model // n_heads
        if head_dim <= 0:
            raise ValueError(f"head_dim must be a positive integer or None (= d_model // n_heads); got {head_dim}")
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        require_divisible("n_heads", n_heads, "n_kv_heads", n_kv_heads)
        if pos_emb not in POS_EMBS:
            raise ValueError(f"pos_emb must be one of {', '.join(POS_EMBS)}; got {pos_emb!r}")
        if pos_emb == "rope" and head_dim % 2:
            raise ValueError(f"pos_emb='rope' needs an even head_dim; got {head_dim}")
        self.n_heads, self.head_dim, self.n_kv_heads = n_heads, head_dim, n_kv_heads
        self.pos_emb, self.rope_theta = pos_emb, rope_theta
        self.scale = 1.0 / math.sqrt(head_dim)
        # One fused matmul for q, k, v: [D] -> [(H + 2 H_kv) K].
        self.qkv_proj = nn.Linear(d_model, (n_heads + 2 * n_kv_heads) * head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * head_dim, d_model, bias=False)
        self.resolved_impl = choose_impl(impl, (True, ""), "Attention")  # SDPA is always there
        # Decided here, not per call: traced in a compiled forward, the flash_attn import attempt
        # behind kernel.available() was a graph break per layer (torch 2.11, CUDA, no flash_attn).
        self.kernel_backend = "auto" if attn_kernel.available()[0] else "sdpa"
        if pos_emb == "rope":
            self.init_rotary_table(head_dim, rope_theta)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, head_dim={self.head_dim}, "
            f"n_kv_heads={self.n_kv_heads}, pos_emb={self.pos_emb}, impl={self.impl}"
        )

    # -- decoding state ---------------------------------------------------------------------
    def init_state(self, batch: int, max_len: int, device=None, dtype=torch.float32) -> State:
        if batch <= 0 or max_len <= 0:
            raise ValueError(f"batch and max_len must be positive; got batch={batch}, max_len={max_len}")
        shape = (batch, self.n_kv_heads, max_len, self.head_dim)  # [B, H_kv, max_len, K]
        return {
            "k": torch.zeros(shape, device=device, dtype=dtype),
            "v": torch.zeros(shape, device=device, dtype=dtype),
            "len": 0,
        }

    def state_bytes(self, context_len: int, batch: int = 1, dtype: torch.dtype = torch.bfloat16) -> int:
        """2 (k and v) · L · H_kv · K · B · bytes."""
        return 2 * context_len * self.n_kv_heads * self.head_dim * batch * dtype_bytes(dtype)

    def _validated_len(self, state: State, batch: int, t: int) -> int:
        k = state.get("k")
        max_len = k.shape[2] if isinstance(k, torch.Tensor) and k.dim() == 4 else 0
        meta = torch.empty(batch, self.n_kv_heads, max_len, self.head_dim, device="meta")
        self.check_state(state, {"k": meta, "v": meta})
        return self.cache_len(state, t, max_len, "KV cache")

    # -- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State | None]:
        b, t = self.check_input(x)
        offset = 0 if state is None else self._validated_len(state, b, t)
        h, h_kv, dk = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.qkv_proj(x).split([h * dk, h_kv * dk, h_kv * dk], dim=-1)
        q = q.view(b, t, h, dk)  # [B, T, H, K]
        k = k.view(b, t, h_kv, dk)  # [B, T, H_kv, K]
        v = v.view(b, t, h_kv, dk)  # [B, T, H_kv, K]
        if self.pos_emb == "rope":  # at absolute positions offset .. offset + T - 1
            cos, sin = self.rotary_table(offset, t, compute_dtype(q.dtype), x.device)
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if state is not None:
            k, v, state = self._append(state, k, v, offset)  # the filled prefix, [B, S, H_kv, K]
        o = self._attend(q, k.to(q.dtype), v.to(q.dtype))  # [B, T, H, K]
        return self.o_proj(o.reshape(b, t, h * dk)), state

    def _append(self, state: State, k: torch.Tensor, v: torch.Tensor, offset: int):
        end = offset + k.shape[1]
        cache_k, cache_v = state["k"], state["v"]
        cache_k[:, :, offset:end] = k.transpose(1, 2)  # [B, H_kv, T, K] into [B, H_kv, max_len, K]
        cache_v[:, :, offset:end] = v.transpose(1, 2)
        # Keys so far, as views in our [B, S, H_kv, K] layout (SDPA transposes them straight back).
        keys, values = cache_k[:, :, :end].transpose(1, 2), cache_v[:, :, :end].transpose(1, 2)
        return keys, values, {**state, "len": end}

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.resolved_impl == "torch":
            self.impl_ran = "torch.softmax"
            return attention_reference(q, k, v, self.scale)
        o, self.impl_ran = attn_kernel.attention(q, k, v, self.scale, backend=self.kernel_backend)
        return o

    # -- cost -------------------------------------------------------------------------------
    def flops_per_token(self, context_len: int, decode: bool = False) -> float:
        """Forward matmul FLOPs per token (2 per multiply-add).

        Projections: 2·D·(H + 2 H_kv)·K for q, k, v and 2·H·K·D for the output.
        Attention: 2·H·K per attended key for Q Kᵀ plus 2·H·K for P V, i.e. 4·L_avg·H·K.
        Causal masking halves the work: averaged over a training/prefill sequence of length L,
        a token attends L_avg = (L + 1) / 2 keys. With decode=True the token is the last of L,
        L_avg = L. (Kernels that skip masked blocks do about this much work; the explicit
        reference computes the full T x S matrix and masks it.)
        """
        d, h, h_kv, dk = self.d_model, self.n_heads, self.n_kv_heads, self.head_dim
        projections = 2 * d * (h + 2 * h_kv) * dk + 2 * h * dk * d
        attended = context_len if decode else (context_len + 1) / 2
        return float(projections + 4 * attended * h * dk)
