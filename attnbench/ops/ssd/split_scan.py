"""Mamba2's block between its two projections as one autograd function, for training on a GPU.

    z, xBC, dt = split(zxbcdt)                          views of in_proj's output, no copies
    x, B, C    = SiLU(conv(xBC))                        fla's Gluon conv kernel (ops/short_conv)
    y          = SSD(x, softplus(dt + dt_bias), A, B, C) + D x    mamba_ssm's chunk scan, dt in-kernel
    out        = RMSNorm_group(y * SiLU(z)) * w         mamba_ssm's gated-norm kernel

Why: split into separate kernels, the glue around the scan cost more device time than the 10%
allowance of issue 2 (Mamba2 layer 7.66 ms against scan 3.14 + projections 3.22 ms, replayed
from CUDA graphs, H200 2026-12-03): softplus and dt_bias as torch ops, an Inductor norm, and two
gradient concatenations, autograd's backward of each split. Here the backward writes dz and
d(dt) straight into their slices of one d(zxbcdt) buffer and the scan writes dx, dB, dC into one
d(xBC) buffer; only the conv's gradient is copied into place (fla's kernel allocates its own).
mamba_ssm's own fused block (``mamba_split_conv1d_scan_combined``) has the same plan but needs
the causal_conv1d package.

Training and stateless forwards only: no state in, none out (decoding runs the mixer's chain).
``split_scan_reference`` is the same block in plain PyTorch (the parity row's reference).
mamba_ssm's ``_mamba_chunk_scan_combined_{fwd,bwd}`` and ``_layer_norm_{fwd,bwd}`` are private:
``available()`` says so when an installed version lacks them, and the mixer keeps its chain.
"""
from __future__ import annotations

import functools
import inspect
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ...mixers.layers import causal_conv  # the short conv's reference, as ops/short_conv/parity uses it
from ..availability import kernel_availability
from ..short_conv import kernel as conv_kernel
from . import kernel, reference

PATH = "mamba_ssm.split_scan"


class Dims(NamedTuple):
    nheads: int
    headdim: int
    ngroups: int
    d_state: int
    chunk_size: int
    eps: float

    @property
    def d_inner(self) -> int:
        return self.nheads * self.headdim

    def split(self, zxbcdt: torch.Tensor):
        """z [B, T, d_inner], xBC [B, T, d_inner + 2 G N], dt [B, T, H]: views of zxbcdt."""
        conv_dim = self.d_inner + 2 * self.ngroups * self.d_state
        if zxbcdt.shape[-1] != self.d_inner + conv_dim + self.nheads:
            raise ValueError(f"zxbcdt must have d_inner + conv_dim + nheads = {self.d_inner + conv_dim + self.nheads} "
                             f"channels; got {zxbcdt.shape[-1]}")
        return zxbcdt.split([self.d_inner, conv_dim, self.nheads], dim=-1)

    def heads(self, xBC: torch.Tensor):
        """x [B, T, H, P], B and C [B, T, G, N]: views of the conv's output."""
        x, B, C = xBC.split([self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        groups = (self.ngroups, self.d_state)
        return x.unflatten(-1, (self.nheads, self.headdim)), B.unflatten(-1, groups), C.unflatten(-1, groups)


@functools.lru_cache(maxsize=None)
def _import_kernels():
    kernel._import_kernels()  # registers mamba_ssm's namespace where its package __init__ cannot run
    from mamba_ssm.ops.triton.layernorm_gated import _layer_norm_bwd, _layer_norm_fwd
    from mamba_ssm.ops.triton.ssd_combined import _mamba_chunk_scan_combined_bwd, _mamba_chunk_scan_combined_fwd

    conv_forward, conv_backward = conv_kernel._import_gluon()
    private = {"scan_fwd": _mamba_chunk_scan_combined_fwd, "scan_bwd": _mamba_chunk_scan_combined_bwd,
               "norm_fwd": _layer_norm_fwd, "norm_bwd": _layer_norm_bwd}
    for key, fn in private.items():
        require_parameters(fn, PRIVATE_PARAMETERS[key])
    return _mamba_chunk_scan_combined_fwd, _mamba_chunk_scan_combined_bwd, _layer_norm_fwd, _layer_norm_bwd, \
        conv_forward, conv_backward


# The keyword arguments we pass to mamba_ssm's private functions (2.3.2): a version without them
# is refused at import, so the mixer keeps its chain instead of failing inside a training step.
PRIVATE_PARAMETERS = {
    "scan_fwd": ("D", "dt_bias", "dt_softplus"),
    "scan_bwd": ("D", "dt_bias", "dt_softplus", "dx", "ddt", "dB", "dC"),
    "norm_fwd": ("z", "group_size", "norm_before_gate", "is_rms_norm"),
    "norm_bwd": ("z", "group_size", "norm_before_gate", "is_rms_norm", "dz"),
}


def require_parameters(fn, names: tuple[str, ...]) -> None:
    """ImportError naming ``fn`` and what it lacks, unless it takes every keyword in ``names``."""
    missing = [name for name in names if name not in inspect.signature(fn).parameters]
    if missing:
        raise ImportError(f"{fn.__module__}.{fn.__name__} takes no {', '.join(missing)} (this installed "
                          "version differs from the mamba_ssm 2.3.2 the fused block was written against)")


@functools.lru_cache(maxsize=None)
def available() -> tuple[bool, str]:
    """(True, "") when CUDA is there and every kernel the block calls imports, else (False, why not)."""
    return kernel_availability(_import_kernels, "mamba_ssm's chunk scan and gated norm with fla's Gluon conv")


def ready(zxbcdt: torch.Tensor, conv_weight: torch.Tensor) -> tuple[bool, str]:
    """Can this call take the fused block? (usable, why not). The conv must be one that fla's
    Gluon kernel takes (``short_conv.kernel.path_for``: width, contiguous channels, no
    torch.distributed), in a dtype it sums in float32."""
    usable, why_not = available()
    if not usable:
        return usable, why_not
    if not zxbcdt.is_cuda:
        return False, f"the input is on {zxbcdt.device.type}, not CUDA"
    if zxbcdt.dtype not in conv_kernel.DTYPES:
        return False, f"{zxbcdt.dtype} input: fla's Gluon conv takes {conv_kernel.DTYPES}"
    if conv_kernel.path_for(zxbcdt, conv_weight) != conv_kernel.GLUON_PATH:
        return False, f"fla's Gluon conv does not take this call (width {conv_weight.shape[-1]}, or torch.distributed)"
    return True, ""


@torch.compiler.disable  # Triton launches from our own autograd function: not for Dynamo to trace
def split_scan(zxbcdt, conv_weight, conv_bias, dt_bias, A, D, norm_weight, dims: Dims) -> torch.Tensor:
    """zxbcdt [B, T, d_inner + conv_dim + H] -> [B, T, d_inner] in zxbcdt's dtype; conv_weight [conv_dim, W]."""
    return SplitScan.apply(zxbcdt, conv_weight, conv_bias, dt_bias, A, D, norm_weight, dims)


class SplitScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, zxbcdt, conv_weight, conv_bias, dt_bias, A, D, norm_weight, dims: Dims):
        scan_fwd, _, norm_fwd, _, conv_fwd, _ = _import_kernels()
        z, xBC, dt = dims.split(zxbcdt)
        xBC_conv, _ = conv_fwd(xBC, conv_weight.contiguous(), conv_bias, activation="silu")  # [B, T, conv_dim]
        x, B, C = dims.heads(xBC_conv)
        y = scan_fwd(x, dt, A, B, C, dims.chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True)[0]  # [B, T, H, P]
        rows = y.shape[0] * y.shape[1]
        out, _, rstd = norm_fwd(y.reshape(rows, dims.d_inner), norm_weight.contiguous(), None, dims.eps,
                                z=z.reshape(rows, dims.d_inner), group_size=dims.d_inner // dims.ngroups,
                                norm_before_gate=False, is_rms_norm=True)
        ctx.save_for_backward(zxbcdt, xBC_conv, y, rstd, conv_weight, conv_bias, dt_bias, A, D, norm_weight)
        ctx.dims = dims
        return out.view(*z.shape)

    @staticmethod
    def backward(ctx, dout):
        _, scan_bwd, _, norm_bwd, _, conv_bwd = _import_kernels()
        zxbcdt, xBC_conv, y, rstd, conv_weight, conv_bias, dt_bias, A, D, norm_weight = ctx.saved_tensors
        dims, rows = ctx.dims, y.shape[0] * y.shape[1]
        z, xBC, dt = dims.split(zxbcdt)
        d_zxbcdt = torch.empty_like(zxbcdt)  # every slice is written below: dz, the conv's dx, d(dt)
        dz, dxBC_in, ddt = dims.split(d_zxbcdt)
        dy, dnorm_weight, _, _ = norm_bwd(dout.reshape(rows, dims.d_inner).contiguous(), y.reshape(rows, dims.d_inner),
                                          norm_weight.contiguous(), None, dims.eps, None, rstd,
                                          z=z.reshape(rows, dims.d_inner), group_size=dims.d_inner // dims.ngroups,
                                          norm_before_gate=False, is_rms_norm=True, dz=dz.view(rows, dims.d_inner))
        dxBC_conv = torch.empty_like(xBC_conv)
        dx, dB, dC = dims.heads(dxBC_conv)
        x, B, C = dims.heads(xBC_conv)
        grads = scan_bwd(dy.view(y.shape), x, dt, A, B, C, y, dims.chunk_size, D=D, dt_bias=dt_bias,
                         dt_softplus=True, dx=dx, ddt=ddt, dB=dB, dC=dC)
        dA, dD, ddt_bias = grads[2], grads[5], grads[7]
        dxBC, dconv_weight, dconv_bias, _, _ = conv_bwd(xBC, dxBC_conv, None, weight=conv_weight.contiguous(),
                                                        bias=conv_bias, activation="silu")
        dxBC_in.copy_(dxBC)
        return (d_zxbcdt, dconv_weight, dconv_bias, ddt_bias.to(dt_bias.dtype), dA.to(A.dtype), dD.to(D.dtype),
                dnorm_weight, None)


def split_scan_reference(zxbcdt, conv_weight, conv_bias, dt_bias, A, D, norm_weight, dims: Dims) -> torch.Tensor:
    """The same block in plain PyTorch (the short conv's reference, reference.ssd_chunked, the
    gated norm), computing in at least float32 and returning zxbcdt's dtype."""
    f32 = torch.promote_types(zxbcdt.dtype, torch.float32)
    z, xBC, dt = (t.to(f32) for t in dims.split(zxbcdt))
    x, B, C = dims.heads(causal_conv(xBC, None, conv_weight.to(f32), conv_bias.to(f32), silu=True))
    y, _ = reference.ssd_chunked(x, F.softplus(dt + dt_bias.to(f32)), A.to(f32), B, C, D=D.to(f32))
    gated = (y.flatten(-2) * F.silu(z)).unflatten(-1, (dims.ngroups, -1))  # [B, T, G, d_inner / G]
    normed = gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + dims.eps)
    return (normed.flatten(-2) * norm_weight.to(f32)).to(zxbcdt.dtype)
