"""Small layers shared by the mixers: causal short convolution, gated RMSNorm, L2 norm, and
``fused_on_cuda``, which turns a chain of elementwise ops into one compiled kernel on a GPU."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.short_conv import kernel as conv_kernel


FUSE_STEPS = False  # also compile single-token steps (bench.decode --fuse mixers measures it)
FUSE_DYNAMIC = False  # compile with symbolic shapes (scripts/fusion_check.py times both)
SHAPES_PER_FUNCTION = 64  # static compiles kept per fused function before Dynamo gives up on it
CONV_KERNEL = True  # False: ShortConv always runs the chain below (to time one against the other)
MERGE_PROJECTIONS = True  # sequences: x's projections as one matmul over their concatenated weights


def fused_on_cuda(fn):
    """Run ``fn`` eagerly on CPU and for single-token steps; on CUDA sequences, compiled.

    Why: on an H200 at B=8, T=2048, D=2048 the eager short convs, norms and gates around the
    kernels cost more than the kernels (KDA mixer 19.9 ms vs chunk_kda 5.6 ms + projections 2.6
    ms, 2026-11-26): each elementwise op is a pass over memory, forward and backward. Compiled,
    each chain is one pass. The function is the same, so the CPU tests check its numbers. The
    first tensor argument is [B, T, ...]; decode steps (T = 1) stay eager, where CUDA graphs
    capture them, unless FUSE_STEPS is set: under a graph, launches cost nothing but every small
    kernel still costs its few microseconds of GPU time, and a KDA layer's step is ~80 of them.

    Compiled for static shapes, one kernel set per shape seen (a training run sees one): kernels
    compiled for symbolic sizes index with run-time divisions and unvectorised loads.

    Inside a compiled model (torch.compile of the whole LM) ``fn`` itself is traced into the
    caller's graph: one graph, fused by its compiler, instead of a nested compile.
    """
    compiled = {}

    @functools.wraps(fn)
    def run(*args, **kwargs):
        if torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        x = next(a for a in args if isinstance(a, torch.Tensor))
        if not (x.is_cuda and (x.shape[1] > 1 or FUSE_STEPS)):
            return fn(*args, **kwargs)
        if FUSE_DYNAMIC not in compiled:
            compiled[FUSE_DYNAMIC] = _compile(fn, FUSE_DYNAMIC)
        return compiled[FUSE_DYNAMIC](*args, **kwargs)

    return run


def _compile(fn, dynamic: bool):
    config = torch._dynamo.config  # the limit is per code object: a sweep of shapes needs more than 8
    config.recompile_limit = max(config.recompile_limit, SHAPES_PER_FUNCTION)
    return torch.compile(fn, dynamic=dynamic)


@fused_on_cuda
def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim, in at least float32 (as fla does in-kernel)."""
    x32 = x.to(torch.promote_types(x.dtype, torch.float32))
    return (x32 * torch.rsqrt(x32.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)


@fused_on_cuda
def causal_conv(x: torch.Tensor, window: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor | None,
                silu: bool) -> torch.Tensor:
    """Depthwise causal conv as W shifted multiply-adds: y_t = Σ_j w_j · x_{t-W+1+j} (+ b), then SiLU.

    x [B, T, C]; window [B, W-1, C], the inputs before x (zeros at the start); weight [C, W].
    The same cross-correlation as F.conv1d over the left-padded input, kept time-major so no
    transpose is needed and the whole chain fuses into one kernel. Sums run in the wider of x's
    and the weight's dtypes; y comes back in x's, as F.conv1d's under autocast: with float32
    weights and bf16 activations, a float32 y would send the delta-rule and SSD kernels float32
    q, k, v (twice the bytes, slower kernels).
    """
    padded = torch.cat([window.to(x.dtype), x], dim=1) if window is not None else F.pad(x, (0, 0, weight.shape[1] - 1, 0))
    T = x.shape[1]
    y = sum(padded[:, j:j + T] * weight[:, j] for j in range(weight.shape[1]))  # [B, T, C]
    if bias is not None:
        y = y + bias
    return (F.silu(y) if silu else y).to(x.dtype)


def conv_kernel_ready(x: torch.Tensor, conv_state: torch.Tensor | None) -> tuple[bool, str]:
    """Can fla's conv kernel (ops/short_conv) run this call? (usable, why not).

    Only for a whole sequence from scratch (training, a stateless forward): decode steps and
    prefills carry a conv state and stay on the chain (fla keeps its state as [N, C, W], ours is
    [B, C, W-1]; that path is not wired)."""
    if not CONV_KERNEL:
        return False, "layers.CONV_KERNEL is off"
    if conv_state is not None:
        return False, "a conv state is given (decode or prefill): the kernel path is for whole sequences"
    usable, why_not = conv_kernel.available()
    if usable and x.dtype not in conv_kernel.DTYPES:
        return False, f"{x.dtype} input: fla's kernel sums in float32"
    if usable and not x.is_cuda:
        return False, f"the input is on {x.device.type}, not CUDA"
    return usable, why_not


class ShortConv(nn.Module):
    """Depthwise causal conv over time, x: [B, T, C] -> [B, T, C], optionally followed by SiLU.

    Decoding keeps the last ``kernel_size - 1`` inputs as state: [B, C, kernel_size - 1].
    ``use_kernel=True`` (the mixer is on its kernel path) runs fla's kernel where
    ``conv_kernel_ready`` allows (its Gluon one where that takes the call, ops/short_conv), else
    the chain; ``impl_ran`` records which ("fla.causal_conv1d_gluon", "fla.causal_conv1d" or
    "torch") and ``why_chain`` why not a kernel.
    """

    def __init__(self, channels: int, kernel_size: int = 4, bias: bool = False, activation: str | None = "silu"):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"conv kernel_size must be >= 1; got {kernel_size}")
        if activation not in (None, "silu"):
            raise ValueError(f"conv activation must be one of None, 'silu'; got {activation!r}")
        self.channels, self.kernel_size, self.activation = channels, kernel_size, activation
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=bias)
        self.impl_ran: str | None = None
        self.why_chain = ""

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> torch.Tensor:
        return torch.zeros(batch, self.channels, self.kernel_size - 1, device=device, dtype=dtype)

    @property
    def ran_kernel(self) -> bool:
        return self.impl_ran in conv_kernel.PATHS

    def forward(self, x: torch.Tensor, conv_state: torch.Tensor | None = None, use_kernel: bool = False):
        """x [B, T, C] -> (y [B, T, C], the next window [B, C, W-1] when a state was given)."""
        weight = self.conv.weight[:, 0, :]  # [C, W]
        silu = self.activation == "silu"
        ready, self.why_chain = conv_kernel_ready(x, conv_state) if use_kernel else (False, "the mixer's torch path")
        self.impl_ran = conv_kernel.path_for(x, weight) if ready else "torch"
        if ready:
            return conv_kernel.causal_conv_kernel(x, weight, self.conv.bias, silu, self.impl_ran), None
        window = None if conv_state is None else conv_state.transpose(1, 2)  # [B, W-1, C]
        y = causal_conv(x, window, weight, self.conv.bias, silu)
        if conv_state is None:
            return y, None
        if self.kernel_size == 1:
            return y, conv_state
        recent = torch.cat([window.to(x.dtype), x], dim=1)[:, -(self.kernel_size - 1):]  # [B, W-1, C]
        return y, recent.transpose(1, 2).to(conv_state.dtype)


class GatedRMSNorm(nn.Module):
    """RMSNorm over the last dim (a head's channels) combined with a gate.

    norm_before_gate=True:  w * rms(x) * act(g)     (KDA / GDN output: per-head norm, then gate)
    norm_before_gate=False: w * rms(x * act(g))     (Mamba2: gate first, then the norm)

    The output is in x's dtype (the statistics in at least float32): under autocast a float32
    weight would otherwise turn bf16 activations into float32 ones for every op that follows.
    """

    def __init__(self, dim: int, activation: str = "sigmoid", norm_before_gate: bool = True, eps: float = 1e-5):
        super().__init__()
        acts = {"sigmoid": torch.sigmoid, "silu": F.silu, "none": None}
        if activation not in acts:
            raise ValueError(f"gate activation must be one of {', '.join(acts)}; got {activation!r}")
        self.act, self.norm_before_gate, self.eps = acts[activation], norm_before_gate, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def _rms(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))  # float64 stays float64
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def forward(self, x: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        return _gated_norm(self, x, g)

    def _forward(self, x: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        gate = None if (g is None or self.act is None) else self.act(g)
        if self.norm_before_gate or gate is None:
            y = self._rms(x) * self.weight
            return (y if gate is None else y * gate).to(x.dtype)
        return (self._rms(x * gate) * self.weight).to(x.dtype)


@fused_on_cuda
def _gated_norm(norm: GatedRMSNorm, x: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    return norm._forward(x, g)


class MergedStepProjections:
    """The projections that read a layer's input x as one matmul: a host mixin (an nn.Module)
    names them in ``x_linears()`` and calls ``init_merged_projections()`` in ``__init__``;
    ``project_x(x)`` then returns every projection by name.

    Why: one GEMM over the concatenated weights instead of one per projection. Training, the
    backward's gradient of x is then one GEMM too, not one per projection plus the adds that sum
    them; the cost is a copy of the weights per call (cast and concatenated in one pass, compiled),
    so single-token steps keep separate projections unless merged once for all steps.
    Decoding at batch 1 a step is mostly small kernels, each costing its few microseconds whatever
    its size: a KDA layer's six projections of x (q, k, v, beta, the gates' first factors) become
    one GEMV, an MLA layer's two (query, latent) one, an MLP's gate and up one; for steps the
    concatenated weight is kept (``merge_step_projections``) instead of rebuilt per call.
    Parameters stay one matrix each (Muon orthogonalises each whole). ``MERGE_PROJECTIONS =
    False`` runs the projections one by one (to time one way against the other).
    """

    def init_merged_projections(self) -> None:
        self._merged = None  # (names, widths, concatenated weight) after merge_step_projections()
        self.register_load_state_dict_post_hook(lambda module, keys: module.drop_merged())

    def project_x(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every projection of x by name (x_linears' names), as views of one matmul's output."""
        if self._merged is not None and x.shape[1] == 1 and not torch.is_grad_enabled():
            return _split_matmul(x, *self._merged)
        linears = self.x_linears()
        # Sequences [B, T > 1, D] only: a single-token step would copy every weight to save a few
        # GEMVs (it merges once, above), and token lists (an MoE expert's [N, D]) keep theirs.
        one_pass = MERGE_PROJECTIONS and x.dim() == 3 and x.shape[1] > 1 and len(linears) > 1
        if not one_pass or any(lin.bias is not None for lin in linears.values()):
            return {name: linear(x) for name, linear in linears.items()}
        return _split_matmul(x, *_concatenated(linears, lambda w: _as_matmul_dtype(w, x)))

    def merge_step_projections(self) -> None:
        """For decoding: concatenate the weights of every projection of x. Taken now: call it once
        the weights are final and in their dtype; train(), .to() and load_state_dict drop it."""
        linears = self.x_linears()
        if any(linear.bias is not None for linear in linears.values()):
            raise ValueError("merge_step_projections: the projections of x are bias-free")
        self._merged = _concatenated(linears, torch.Tensor.detach)

    def drop_merged(self) -> None:
        self._merged = None

    def train(self, mode: bool = True):
        if mode:
            self.drop_merged()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self.drop_merged()  # a cast or a move makes new weights
        return super()._apply(fn, *args, **kwargs)


def _concatenated(linears: dict[str, nn.Linear], weight_of) -> tuple[list[str], list[int], torch.Tensor]:
    """(names, output widths, the weights as one matrix), each weight taken through ``weight_of``."""
    weight = torch.cat([weight_of(linear.weight) for linear in linears.values()])
    return list(linears), [linear.out_features for linear in linears.values()], weight


def _split_matmul(x: torch.Tensor, names: list[str], widths: list[int],
                  weight: torch.Tensor) -> dict[str, torch.Tensor]:
    return dict(zip(names, F.linear(x, weight).split(widths, dim=-1)))


def _as_matmul_dtype(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The weight in the dtype its matmul with x runs in: autocast's, where it is on, so that the
    concatenation copies 16-bit weights, not float32 ones (the cast is a copy anyway)."""
    if torch.is_autocast_enabled(x.device.type):
        return weight.to(torch.get_autocast_dtype(x.device.type))
    return weight
