"""Mamba2 block (Dao & Gu, arXiv 2405.21060, §7 and Fig. 6; defaults of mamba_ssm's Mamba2).

    z, x, B, C, dt = in_proj(u)                    one projection, D -> 2 d_inner + 2 G N + H
    x, B, C = SiLU(causal depthwise conv4([x, B, C]))
    dt = softplus(dt + dt_bias);  A = -exp(A_log)  per head
    y = SSD(x, dt, A, B, C) + D x                  ops/ssd, the skip too: h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T
    out = out_proj(RMSNorm_group(y * SiLU(z)))     gate first, then the norm (norm_before_gate=False)

ngroups G: B and C have G groups shared by H / G heads each; the gated RMSNorm normalises each
group's d_inner / G channels separately, with one weight per channel (mamba_ssm's
RMSNormGated(group_size=d_inner // ngroups)). With G = 1 it is a norm over all of d_inner.

Decoding state: {"conv": [B, d_inner + 2 G N, d_conv - 1] in the model dtype,
"ssm": [B, H, P, N] in at least ``state_dtype`` (float32 by default: h sums many small terms;
state_dtype=None keeps it in the model dtype)}.
The kernel decode step updates state["ssm"] in place, as mamba_ssm does: always continue from
the state that forward returns, and clone one you want to keep.
On the kernel path a whole sequence without a state (training) runs conv, scan and gated norm
as one autograd function, ops/ssd/split_scan ("mamba_ssm.split_scan+fla.causal_conv1d_gluon");
where that cannot run, or FUSED_BLOCK is off, the steps run one by one and the conv on fla's
kernel (ops/short_conv): "mamba_ssm.chunk_scan+fla.causal_conv1d_gluon" (or "+fla.causal_conv1d").
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.short_conv import kernel as conv_kernel
from ..ops.ssd import kernel, reference, split_scan
from . import layers
from .base import Mixer, State, choose_impl, dtype_bytes
from .layers import GatedRMSNorm, ShortConv

FUSED_BLOCK = True  # False: the kernel path runs conv, scan and norm one by one (to time one against the other)


def kernel_ready(x: torch.Tensor) -> tuple[bool, str]:
    """Can mamba_ssm's kernels run on x? (usable, why not)."""
    usable, why_not = kernel.available()
    if usable and not x.is_cuda:
        return False, f"the input is on {x.device.type}, not CUDA"
    return usable, why_not


class GroupedGatedRMSNorm(GatedRMSNorm):
    """Gate first, then RMSNorm over each of ``groups`` equal slices of the last dim."""

    def __init__(self, dim: int, groups: int, eps: float = 1e-5):
        super().__init__(dim, activation="silu", norm_before_gate=False, eps=eps)
        self.groups = groups

    def _forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:  # the parent's forward fuses this
        gated = (x * self.act(g)).unflatten(-1, (self.groups, -1))  # [..., G, dim / G]
        return self._rms(gated).flatten(-2) * self.weight


class Mamba2(Mixer):
    def __init__(self, d_model: int, d_state: int = 128, headdim: int = 64, expand: int = 2, ngroups: int = 1,
                 d_conv: int = 4, chunk_size: int = 64, kernel_chunk_size: int = 256,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 A_init_range: tuple[float, float] = (1.0, 16.0), norm_eps: float = 1e-5,
                 state_dtype: torch.dtype | None = torch.float32, impl: str = "auto"):
        super().__init__(d_model, impl)
        for name, value in dict(d_state=d_state, headdim=headdim, expand=expand, ngroups=ngroups, d_conv=d_conv,
                                chunk_size=chunk_size, kernel_chunk_size=kernel_chunk_size).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        d_inner = expand * d_model
        if d_inner % headdim:
            raise ValueError(f"headdim={headdim} must divide d_inner = expand * d_model = {d_inner}")
        nheads = d_inner // headdim
        if nheads % ngroups:
            raise ValueError(f"ngroups={ngroups} must divide nheads = d_inner / headdim = {nheads}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"dt_min, dt_max must satisfy 0 < dt_min <= dt_max; got {dt_min}, {dt_max}")
        if not 0 < A_init_range[0] <= A_init_range[1]:
            raise ValueError(f"A_init_range must be (lo, hi) with 0 < lo <= hi; got {A_init_range}")
        self.d_state, self.headdim, self.ngroups, self.d_conv = d_state, headdim, ngroups, d_conv
        self.d_inner, self.nheads = d_inner, nheads
        self.chunk_size, self.kernel_chunk_size, self.state_dtype = chunk_size, kernel_chunk_size, state_dtype
        self.conv_dim = d_inner + 2 * ngroups * d_state  # channels of [x, B, C]

        self.in_proj = nn.Linear(d_model, d_inner + self.conv_dim + nheads, bias=False)  # [z, x, B, C, dt]
        self.conv = ShortConv(self.conv_dim, kernel_size=d_conv, bias=True, activation="silu")
        self.dt_bias = nn.Parameter(self._init_dt_bias(nheads, dt_min, dt_max, dt_init_floor))
        self.A_log = nn.Parameter(torch.empty(nheads).uniform_(*A_init_range).log())
        self.D = nn.Parameter(torch.ones(nheads))
        self.norm = GroupedGatedRMSNorm(d_inner, ngroups, eps=norm_eps)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self.why_unfused = ""  # why the last kernel-path call did not take ops/ssd/split_scan

    @staticmethod
    def _init_dt_bias(nheads, dt_min, dt_max, floor) -> torch.Tensor:
        """dt ~ logU(dt_min, dt_max), floored; the bias is softplus^{-1}(dt) = dt + log(1 - exp(-dt))."""
        log_dt = torch.rand(nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        dt = log_dt.exp().clamp(min=floor)
        return dt + torch.log(-torch.expm1(-dt))

    # ---- decoding state -------------------------------------------------------------------
    def init_state(self, batch: int, max_len: int = 0, device=None, dtype=torch.float32) -> State:
        ssm_dtype = self._ssm_dtype(dtype)
        return {
            "conv": self.conv.init_state(batch, device=device, dtype=dtype),  # [B, conv_dim, d_conv - 1]
            "ssm": torch.zeros(batch, self.nheads, self.headdim, self.d_state, device=device, dtype=ssm_dtype),
        }

    def _ssm_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """h is kept in at least ``state_dtype`` (float32 by default; float64 models stay float64)."""
        return dtype if self.state_dtype is None else torch.promote_types(self.state_dtype, dtype)

    def state_bytes(self, context_len: int, batch: int = 1, dtype: torch.dtype = torch.bfloat16) -> int:
        """Constant in context_len: the conv window plus h."""
        conv = batch * self.conv_dim * (self.d_conv - 1) * dtype_bytes(dtype)
        ssm = batch * self.nheads * self.headdim * self.d_state * dtype_bytes(self._ssm_dtype(dtype))
        return conv + ssm

    # ---- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State | None]:
        batch, T = self.check_call(x, state)
        if T == 0:  # nothing to mix; the state is unchanged
            self.impl_ran = "none"
            return x.new_zeros(batch, 0, self.d_model), state
        # one choice for the call: the conv takes fla's kernel only on the kernel path
        use_kernel = choose_impl(self.impl, kernel_ready(x), "Mamba2") == "kernel"
        zxbcdt = self.in_proj(x)
        f32 = torch.promote_types(x.dtype, torch.float32)  # dt and A in float32 at least, as mamba_ssm
        A = -torch.exp(self.A_log.to(f32))  # [H]
        conv_weight, dims = self.conv.conv.weight[:, 0], self.dims()  # [conv_dim, W]
        if use_kernel and state is None and self._fused_ready(zxbcdt, conv_weight):
            self.impl_ran = f"{split_scan.PATH}+{conv_kernel.GLUON_PATH}"
            y = split_scan.split_scan(zxbcdt, conv_weight, self.conv.conv.bias, self.dt_bias, A, self.D,
                                      self.norm.weight, dims)
            return self.out_proj(y), None
        z, xBC, dt = dims.split(zxbcdt)
        xBC, conv_state = self.conv(xBC, None if state is None else state["conv"], use_kernel)  # [B, T, conv_dim]
        xs, B, C = dims.heads(xBC)  # [B, T, H, P], [B, T, G, N], [B, T, G, N]
        dt = F.softplus(dt.to(f32) + self.dt_bias.to(f32))  # [B, T, H]

        y, h = self._ssd(xs, dt, A, B, C, None if state is None else state["ssm"], use_kernel)  # with the D skip
        if self.conv.ran_kernel:  # the gate checks short_conv's parity too
            self.impl_ran += "+" + self.conv.impl_ran
        out = self.out_proj(self.norm(y.flatten(-2), z))  # [B, T, D]
        if state is None:
            return out, None
        return out, {"conv": conv_state, "ssm": h.to(state["ssm"].dtype)}

    def dims(self) -> split_scan.Dims:
        return split_scan.Dims(self.nheads, self.headdim, self.ngroups, self.d_state, self.kernel_chunk_size,
                               self.norm.eps)

    def _fused_ready(self, zxbcdt: torch.Tensor, conv_weight: torch.Tensor) -> bool:
        """Does this call take ops/ssd/split_scan? why_unfused says why not."""
        if not (FUSED_BLOCK and layers.CONV_KERNEL):
            self.why_unfused = "mamba2.FUSED_BLOCK or layers.CONV_KERNEL is off"
            return False
        usable, self.why_unfused = split_scan.ready(zxbcdt, conv_weight)
        return usable

    def _ssd(self, x, dt, A, B, C, h0, use_kernel: bool):
        """Training (h0 None): chunked. Prefill (T > 1): chunked from h0. One token: the recurrent step.
        Every op adds the D skip itself (mamba_ssm's kernels in-kernel, with its gradient)."""
        want_state, D = h0 is not None, self.D
        if x.shape[1] == 1 and want_state:
            if use_kernel:
                self.impl_ran = "mamba_ssm.state_update"
                return kernel.ssd_recurrent(x, dt, A, B, C, h0, output_final_state=True, inplace=True, D=D)
            self.impl_ran = "torch.recurrent"
            return reference.ssd_recurrent(x, dt, A, B, C, h0, output_final_state=True, D=D)
        if use_kernel:
            self.impl_ran = "mamba_ssm.chunk_scan"
            return kernel.ssd_chunked(x, dt, A, B, C, h0, want_state, chunk_size=self.kernel_chunk_size, D=D)
        self.impl_ran = "torch.chunked"
        return reference.ssd_chunked(x, dt, A, B, C, h0, want_state, chunk_size=self.chunk_size, D=D)

    # ---- accounting -------------------------------------------------------------------------
    def flops_per_token(self, context_len: int) -> float:
        """Forward matmul FLOPs per token (2 per multiply-add), chunked SSD at chunk Q = min(chunk_size, L):

        projections  2 D (2 d_inner + 2 G N + H) + 2 d_inner D
        SSD          G 2 Q N   (C B^T in each chunk, shared by a group's heads)
                   + H 2 Q P   (masked scores times x dt)
                   + H 4 P N   (the chunk state B (x dt)^T, and C reading the entering state)
        The depthwise conv, gate, norm and the state pass across chunks (P N per chunk) are left out.
        """
        L = max(int(context_len), 1)
        Q = min(self.chunk_size, L)
        H, P, N, G = self.nheads, self.headdim, self.d_state, self.ngroups
        proj = 2 * self.d_model * self.in_proj.out_features + 2 * self.d_inner * self.d_model
        ssd = G * 2 * Q * N + H * 2 * Q * P + H * 4 * P * N
        return float(proj + ssd)
