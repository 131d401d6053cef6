"""Gated DeltaNet block (Gated Delta Networks, arXiv 2412.06464, §3.4 and Fig. 1; fla's GatedDeltaNet).

    q, k = L2Norm(SiLU(ShortConv4(W_q x))), L2Norm(SiLU(ShortConv4(W_k x)))    per head, [B, T, H, K]
    v    = SiLU(ShortConv4(W_v x))                                              [B, T, HV, V], V = K·expand_v
    g    = -exp(A_log) · softplus(W_a x + dt_bias)       one log-decay per value head (Mamba2's form)
    β    = sigmoid(W_β x)
    o    = GDN(q, k, v, g, β)                            ops/gated_delta_rule: GDN Eq. 10
    y    = W_o(RMSNorm_head(o) ⊙ act(W_g x))              act = SiLU (swish, the GDN paper) or sigmoid
                                                          (Kimi's GDN-H baseline), or no gate

Init: A ~ U(1, 16) per value head (fla's GatedDeltaNet draws U(0, 16); the lower end 1 is
Mamba2's, so no head starts without decay), softplus(dt_bias) ~ logU(1e-3, 0.1).
Everything else (convs, state, routing, FLOPs) is shared with KDA: see DeltaRuleMixer in kda.py.

Kernel paths: training and prefill run fla's chunk_gated_delta_rule, or, on Hopper with Triton
< 3.7.1 where fla refuses that kernel's backward, chunk_kda with the gate broadcast over K
(``ops.gated_delta_rule.kernel.chunk_path``); ``kernel_path`` forces one. fuse_inputs=True (the default) hands
either the raw q, k, gate and beta projections to normalise and sigmoid in-kernel (and, through
chunk_kda, to gate). Decode steps run fla's fused_recurrent_gated_delta_rule.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.gated_delta_rule import kernel as gdn_kernel
from ..ops.gated_delta_rule import reference as gdn_reference
from .kda import DeltaRuleMixer, dt_bias_init

KERNEL_PATHS = {"auto": None, "native": gdn_kernel.NATIVE, "via_kda": gdn_kernel.VIA_KDA}


class GatedDeltaNet(DeltaRuleMixer):
    kernel_ops = gdn_kernel

    def __init__(self, d_model: int, n_heads: int = 16, head_dim: int | None = 128, n_v_heads: int | None = None,
                 expand_v: float = 1, conv_size: int = 4, use_short_conv: bool = True, output_gate: str = "swish",
                 chunk_size: int = 64, norm_eps: float = 1e-5, A_init_range: tuple[float, float] = (1.0, 16.0),
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 kernel_path: str = "auto", fuse_inputs: bool = True, impl: str = "auto"):
        super().__init__(d_model, n_heads, head_dim, n_v_heads, expand_v, conv_size, use_short_conv,
                         output_gate, chunk_size, norm_eps, impl)
        if kernel_path not in KERNEL_PATHS:
            raise ValueError(f"kernel_path must be one of {', '.join(KERNEL_PATHS)}; got {kernel_path!r}")
        if not 0 < A_init_range[0] <= A_init_range[1]:
            raise ValueError(f"A_init_range must be (lo, hi) with 0 < lo <= hi; got {A_init_range}")
        if not isinstance(fuse_inputs, bool):
            raise ValueError(f"fuse_inputs must be true or false; got {fuse_inputs!r}")
        self.kernel_path, self.fuse_inputs = kernel_path, fuse_inputs
        self.a_proj = nn.Linear(d_model, self.HV, bias=False)
        self.A_log = nn.Parameter(torch.empty(self.HV).uniform_(*A_init_range).log())
        self.dt_bias = nn.Parameter(dt_bias_init(self.HV, dt_min, dt_max, dt_init_floor))
        if output_gate != "none":
            self.g_proj = nn.Linear(d_model, self.HV * self.V, bias=False)

    def gate_linears(self):
        return {"a": self.a_proj, **({"g": self.g_proj} if self.output_gate != "none" else {})}

    def log_decay(self, p):
        """g = -exp(A_log) · softplus(W_a x + dt_bias), [B, T, HV], in at least float32."""
        f32 = torch.promote_types(p["a"].dtype, torch.float32)
        return -self.A_log.to(f32).exp() * F.softplus(p["a"].to(f32) + self.dt_bias.to(f32))

    def gate_input(self, p):
        """The gate's pre-activation W_a x, [B, T, HV] (for ops that make g themselves)."""
        return p["a"]

    def output_gate_input(self, p):
        return p["g"] if self.output_gate != "none" else None

    def pick_op(self, step, use_kernel, device):
        if not use_kernel:
            if step:
                return gdn_reference.gdn_recurrent, "torch.recurrent", {}
            return gdn_reference.gdn_chunked, "torch.chunked", {"chunk_size": self.chunk_size}
        if step and not torch.is_grad_enabled():  # the decode kernel has no backward
            return gdn_kernel.gdn_recurrent, "fla.fused_recurrent_gated_delta_rule", {}
        path = KERNEL_PATHS[self.kernel_path] or gdn_kernel.chunk_path(device)[0]
        if self.fuse_inputs:
            return gdn_kernel.CHUNKED_RAW[path], f"{path}+fused_inputs", {
                "chunk_size": self.chunk_size, "raw_inputs": True, "A_log": self.A_log, "dt_bias": self.dt_bias}
        return gdn_kernel.CHUNKED[path], path, {"chunk_size": self.chunk_size}
