"""Kimi Delta Attention block (Kimi Linear, arXiv 2510.26692, §4 Eq. 10; fla's KimiDeltaAttention).

    q, k = L2Norm(SiLU(ShortConv4(W_q x))), L2Norm(SiLU(ShortConv4(W_k x)))    per head, [B, T, H, K]
    v    = SiLU(ShortConv4(W_v x))                                              [B, T, HV, V]
    g    = -exp(A_log) · softplus(W_f↑ W_f↓ x + dt_bias)   log-decay per channel, rank = head_dim
    β    = sigmoid(W_β x)                                   one per value head
    o    = KDA(q, k, v, g, β)                               ops/kda: the delta rule, KL Eq. 1
    y    = W_o(RMSNorm_head(o) ⊙ σ(W_g↑ W_g↓ x + b))       sigmoid output gate, low rank = head_dim

q, k and v keep separate matrices, as fla's and Kimi's layers have them: Muon orthogonalises
each parameter whole, so one fused [q; k; v] matrix would change its update. Decoding can still
run every projection of x as one GEMV (merge_step_projections, layers.MergedStepProjections).

Init as fla: A = exp(A_log) ~ U(1, 16) per value head; softplus(dt_bias) ~ logU(1e-3, 0.1) per
channel. Kimi Table 1 ablations: output_gate='swish' or 'none', use_short_conv=False (SiLU only).
fuse_inputs=True (the default) hands the kernel path's ops the raw q, k, gate and beta projections,
which fla's chunk_kda and fused_recurrent_kda normalise, gate and sigmoid in-kernel (as fla's own
layer): on an H200 the layer's forward+backward took 8.3 instead of 9.0 ms and decoding was no
slower (results/bench/README.md, 2026-12-03). The torch path always runs the unfused equations.
HV = n_v_heads > H gives grouped value heads (value head i reads q/k head i // (HV/H)).
On the kernel path the short convs of a whole sequence run fla's conv kernel (ops/short_conv),
and impl_ran says which: "fla.chunk_kda+fla.causal_conv1d_gluon" (or "+fla.causal_conv1d").

Decoding state, a flat dict: conv_q, conv_k [B, H·K, conv_size-1] and conv_v [B, HV·V,
conv_size-1] in the model dtype (absent without short convs); S [B, HV, K, V] in at least
float32, the recurrent state, whose size is constant in the context length.

``DeltaRuleMixer`` is what KDA and GDN (mixers/gdn.py) share; each subclass supplies its gate,
its output-gate projection and its ops.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.kda import kernel as kda_kernel
from ..ops.kda import reference as kda_reference
from .base import Mixer, State, check_impl, choose_impl, dtype_bytes
from .layers import GatedRMSNorm, MergedStepProjections, ShortConv, l2norm

OUTPUT_GATES = {"sigmoid": "sigmoid", "swish": "silu", "none": "none"}  # name -> GatedRMSNorm activation


def dt_bias_init(n: int, dt_min=1e-3, dt_max=0.1, floor=1e-4) -> torch.Tensor:
    """softplus^{-1}(dt) for dt ~ logU(dt_min, dt_max) floored (Mamba's init, used by fla's KDA/GDN)."""
    dt = (torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).exp().clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


def _positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return value


def _head_dims(d_model, n_heads, head_dim, n_v_heads, expand_v) -> tuple[int, int, int, int]:
    """(H, HV, K, V) from the constructor's arguments, or a ValueError naming the bad one."""
    _positive_int("n_heads", n_heads)
    if head_dim is None:  # split d_model over the heads
        if d_model % n_heads:
            raise ValueError(f"head_dim=None needs n_heads={n_heads} to divide d_model={d_model}")
        head_dim = d_model // n_heads
    _positive_int("head_dim", head_dim)
    if isinstance(expand_v, bool) or not isinstance(expand_v, (int, float)) or expand_v <= 0 \
            or (head_dim * expand_v) % 1:
        raise ValueError(f"expand_v must make head_dim * expand_v a positive int; got {expand_v!r}")
    n_v_heads = n_heads if n_v_heads is None else _positive_int("n_v_heads", n_v_heads)
    if n_v_heads % n_heads:
        raise ValueError(f"n_v_heads={n_v_heads} must be a multiple of n_heads={n_heads}")
    return n_heads, n_v_heads, head_dim, int(head_dim * expand_v)


class DeltaRuleMixer(MergedStepProjections, Mixer):
    """Projections, short convs, q/k L2 norm, β, gated output norm, state and op routing."""

    def __init__(self, d_model, n_heads, head_dim, n_v_heads, expand_v, conv_size, use_short_conv,
                 output_gate, chunk_size, norm_eps, impl):
        super().__init__(d_model, check_impl(impl))
        self.H, self.HV, self.K, self.V = _head_dims(d_model, n_heads, head_dim, n_v_heads, expand_v)
        _positive_int("conv_size", conv_size)
        if output_gate not in OUTPUT_GATES:
            raise ValueError(f"output_gate must be one of {', '.join(OUTPUT_GATES)}; got {output_gate!r}")
        if _positive_int("chunk_size", chunk_size) & (chunk_size - 1):
            raise ValueError(f"chunk_size must be a power of two (the kernels take 32 or 64); got {chunk_size}")
        self.conv_size, self.use_short_conv = conv_size, use_short_conv
        self.output_gate, self.chunk_size = output_gate, chunk_size
        H, HV, K, V = self.H, self.HV, self.K, self.V

        self.q_proj = nn.Linear(d_model, H * K, bias=False)
        self.k_proj = nn.Linear(d_model, H * K, bias=False)
        self.v_proj = nn.Linear(d_model, HV * V, bias=False)
        if use_short_conv:
            self.q_conv = ShortConv(H * K, conv_size, activation="silu")
            self.k_conv = ShortConv(H * K, conv_size, activation="silu")
            self.v_conv = ShortConv(HV * V, conv_size, activation="silu")
        self.b_proj = nn.Linear(d_model, HV, bias=False)
        self.o_norm = GatedRMSNorm(V, activation=OUTPUT_GATES[output_gate], eps=norm_eps)
        self.o_proj = nn.Linear(HV * V, d_model, bias=False)
        self.init_merged_projections()

    # ---- what a subclass supplies -------------------------------------------------------------
    def gate_linears(self) -> dict[str, nn.Linear]:
        """The gates' projections that read x, by name (their outputs reach the methods below)."""
        raise NotImplementedError

    def log_decay(self, p: dict) -> torch.Tensor:
        """g <= 0 in at least float32: [B, T, HV, K] (KDA) or [B, T, HV] (GDN), from project_x's p."""
        raise NotImplementedError

    def gate_input(self, p: dict) -> torch.Tensor:
        """The decay gate's pre-activation (for ops that make g themselves)."""
        raise NotImplementedError

    def output_gate_input(self, p: dict) -> torch.Tensor | None:
        """The pre-activation of the output gate, [B, T, HV·V], or None without a gate."""
        raise NotImplementedError

    kernel_ops = None  # the op's kernel module (ops/<op>/kernel.py), set by each subclass

    def kernel_ready(self, x: torch.Tensor) -> tuple[bool, str]:
        usable, why_not = self.kernel_ops.available()
        if usable and not x.is_cuda:
            return False, f"the input is on {x.device.type}, not CUDA"
        return usable, why_not

    def pick_op(self, step: bool, use_kernel: bool, device) -> tuple[callable, str, dict]:
        """(function, what impl_ran records, extra kwargs) for a single decode step or a chunked pass."""
        raise NotImplementedError

    # ---- decoding state -----------------------------------------------------------------------
    def init_state(self, batch: int, max_len: int = 0, device=None, dtype=torch.float32) -> State:
        state = {}
        if self.use_short_conv:
            for name in ("q", "k", "v"):
                state[f"conv_{name}"] = getattr(self, f"{name}_conv").init_state(batch, device=device, dtype=dtype)
        S_dtype = torch.promote_types(dtype, torch.float32)  # S sums many small terms
        state["S"] = torch.zeros(batch, self.HV, self.K, self.V, device=device, dtype=S_dtype)
        return state

    def state_bytes(self, context_len: int, batch: int = 1, dtype: torch.dtype = torch.bfloat16) -> int:
        """Constant in context_len: the conv windows plus S."""
        conv = (2 * self.H * self.K + self.HV * self.V) * (self.conv_size - 1) if self.use_short_conv else 0
        S = self.HV * self.K * self.V * dtype_bytes(torch.promote_types(dtype, torch.float32))
        return batch * (conv * dtype_bytes(dtype) + S)

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State | None]:
        batch, T = self.check_call(x, state)
        if T == 0:  # nothing to mix; the state is unchanged
            self.impl_ran = "none"
            return x.new_zeros(batch, 0, self.d_model), state
        new_state = {}
        # one choice for the call: the short convs take fla's kernel only on the kernel path
        use_kernel = choose_impl(self.impl, self.kernel_ready(x), type(self).__name__) == "kernel"
        p = self.project_x(x)
        q, k, v = (self._conv(name, p[name], state, new_state, use_kernel) for name in ("q", "k", "v"))
        q = q.unflatten(-1, (self.H, self.K))  # [B, T, H, K]
        k = k.unflatten(-1, (self.H, self.K))
        v = v.unflatten(-1, (self.HV, self.V))  # [B, T, HV, V]
        o, S = self._mix(p, q, k, v, None if state is None else state["S"], use_kernel)
        if self.use_short_conv and self.q_conv.ran_kernel:  # the gate checks short_conv's parity too
            self.impl_ran += "+" + self.q_conv.impl_ran

        gate = self.output_gate_input(p)
        gate = None if gate is None else gate.unflatten(-1, (self.HV, self.V))
        y = self.o_proj(self.o_norm(o.to(v.dtype), gate).flatten(-2))  # [B, T, D]; v's dtype: autocast's
        if state is None:
            return y, None
        return y, {**new_state, "S": S.to(state["S"].dtype)}

    # ---- the projections of x ----------------------------------------------------------------
    def x_linears(self) -> dict[str, nn.Linear]:
        """Every nn.Linear that reads x, by name (project_x runs them; layers.MergedStepProjections)."""
        return {"q": self.q_proj, "k": self.k_proj, "v": self.v_proj, "b": self.b_proj, **self.gate_linears()}

    def _conv(self, name: str, h: torch.Tensor, state: State | None, new_state: dict,
              use_kernel: bool) -> torch.Tensor:
        """The causal short conv of a projection (continuing from the state's window) and SiLU."""
        if not self.use_short_conv:
            return F.silu(h)
        conv_state = None if state is None else state[f"conv_{name}"]
        h, window = getattr(self, f"{name}_conv")(h, conv_state, use_kernel=use_kernel)
        if state is not None:
            new_state[f"conv_{name}"] = window
        return h

    @staticmethod
    def _unit(x: torch.Tensor) -> torch.Tensor:
        """L2-normalise each head in at least float32 (fla normalises in float32 in-kernel)."""
        return l2norm(x)

    def _mix(self, p, q, k, v, S0, use_kernel: bool):
        """Training (S0 None) and prefill: the chunked op. One token with a state: the recurrent op.
        An op that takes raw inputs (``raw_inputs`` in its extras) normalises q, k, makes the
        gate and sigmoids beta itself; every other op gets them made here."""
        step = S0 is not None and q.shape[1] == 1
        fn, self.impl_ran, extra = self.pick_op(step, use_kernel, q.device)
        if extra.pop("raw_inputs", False):
            args = (q, k, v, self.gate_input(p), p["b"])
        else:
            args = (self._unit(q), self._unit(k), v, self.log_decay(p), torch.sigmoid(p["b"]))
        return fn(*args, initial_state=S0, output_final_state=S0 is not None, **extra)

    # ---- accounting ---------------------------------------------------------------------------
    def flops_per_token(self, context_len: int) -> float:
        """Forward matmul FLOPs per token, 2 per multiply-add: every projection 2·in·out, plus the
        chunked delta rule per value head, KL Eq. 13 per token with d_h² -> K·V, d_h -> K:
            6·K·V + 3·C·K + C²,   C = min(chunk_size, L).
        Short convs, norms, gates' elementwise work and the sequential state pass are left out."""
        C = min(self.chunk_size, max(int(context_len), 1))
        proj = sum(2 * m.in_features * m.out_features for m in self.modules() if isinstance(m, nn.Linear))
        return float(proj + self.HV * (6 * self.K * self.V + 3 * C * self.K + C * C))


class KDA(DeltaRuleMixer):
    kernel_ops = kda_kernel

    def __init__(self, d_model: int, n_heads: int = 16, head_dim: int | None = 128, n_v_heads: int | None = None,
                 conv_size: int = 4, use_short_conv: bool = True, output_gate: str = "sigmoid", chunk_size: int = 64,
                 norm_eps: float = 1e-5, A_init_range: tuple[float, float] = (1.0, 16.0), dt_min: float = 1e-3,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4, fuse_inputs: bool = True, impl: str = "auto"):
        super().__init__(d_model, n_heads, head_dim, n_v_heads, 1, conv_size, use_short_conv,
                         output_gate, chunk_size, norm_eps, impl)
        if not isinstance(fuse_inputs, bool):
            raise ValueError(f"fuse_inputs must be true or false; got {fuse_inputs!r}")
        self.fuse_inputs = fuse_inputs  # the kernel path's ops normalise q, k and make g and beta
        if not 0 < A_init_range[0] <= A_init_range[1]:
            raise ValueError(f"A_init_range must be (lo, hi) with 0 < lo <= hi; got {A_init_range}")
        HV, K = self.HV, self.K
        self.f_proj = nn.Sequential(nn.Linear(d_model, K, bias=False), nn.Linear(K, HV * K, bias=False))
        self.A_log = nn.Parameter(torch.empty(HV).uniform_(*A_init_range).log())
        self.dt_bias = nn.Parameter(dt_bias_init(HV * K, dt_min, dt_max, dt_init_floor))
        if output_gate != "none":
            self.g_proj = nn.Sequential(nn.Linear(d_model, K, bias=False), nn.Linear(K, HV * self.V, bias=True))

    def gate_linears(self):
        """The low-rank gates' first factors W_f↓, W_g↓ (the second factors read their outputs)."""
        return {"f": self.f_proj[0], **({"g": self.g_proj[0]} if self.output_gate != "none" else {})}

    def log_decay(self, p):
        """g = -exp(A_log) · softplus(W_f↑ W_f↓ x + dt_bias), [B, T, HV, K], in at least float32."""
        return _kda_gate(self.f_proj[1](p["f"]), self.dt_bias, self.A_log)

    def gate_input(self, p):
        """The gate's pre-activation W_f↑ W_f↓ x, [B, T, HV, K] (for ops that make g themselves)."""
        return self.f_proj[1](p["f"]).unflatten(-1, (self.HV, self.K))

    def output_gate_input(self, p):
        return self.g_proj[1](p["g"]) if self.output_gate != "none" else None

    def pick_op(self, step, use_kernel, device):
        if not use_kernel:
            if step:
                return kda_reference.kda_recurrent, "torch.recurrent", {}
            return kda_reference.kda_chunked, "torch.chunked", {"chunk_size": self.chunk_size}
        decode = step and not torch.is_grad_enabled()  # the decode kernel has no backward
        if self.fuse_inputs:
            raw = {"raw_inputs": True, "A_log": self.A_log, "dt_bias": self.dt_bias}
            if decode:
                return kda_kernel.kda_recurrent_raw, "fla.fused_recurrent_kda+fused_inputs", raw
            return kda_kernel.kda_chunked_raw, "fla.chunk_kda+fused_inputs", {"chunk_size": self.chunk_size, **raw}
        if decode:
            return kda_kernel.kda_recurrent, "fla.fused_recurrent_kda", {}
        return kda_kernel.kda_chunked, "fla.chunk_kda", {"chunk_size": self.chunk_size}


# Eager on purpose: compiled, this chain ran slower than its eager ops (forward+backward at B=8,
# T=2048, 16x128 on an H200: eager 0.89 ms, compiled 1.25 ms static / 1.42 ms dynamic shapes,
# scripts/fusion_check.py, 2026-12-02; why is not yet profiled).
def _kda_gate(f: torch.Tensor, dt_bias: torch.Tensor, A_log: torch.Tensor) -> torch.Tensor:
    """-exp(A_log) · softplus(f + dt_bias): f [B, T, HV·K] -> g [B, T, HV, K], at least float32."""
    f32 = torch.promote_types(f.dtype, torch.float32)
    pre = (f.to(f32) + dt_bias.to(f32)).unflatten(-1, (A_log.shape[0], -1))  # [B, T, HV, K]
    return -A_log.to(f32).exp()[:, None] * F.softplus(pre)
