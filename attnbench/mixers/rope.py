"""Rotary position embedding (RoFormer, Su et al. 2021, arXiv 2104.09864).

RoFormer Eq. 34: a vector at position m has its channel pairs rotated by angles m·θ_i,
θ_i = theta^(-2i/d) for i = 0 .. d/2 - 1, so that <R_m q, R_n k> depends on m - n only.

We pair channel i with channel i + d/2 ("rotate half", as GPT-NeoX and Llama do) instead of
RoFormer's adjacent pairs (2i, 2i+1). The two differ by a fixed permutation of the projection's
output channels, so they describe the same model family.

Positions are passed explicitly ([T] integers), so a decode step at offset t rotates by t, and
only the first ``rope_dim`` channels of the last axis are rotated: MLA's decoupled rope key
uses this on its own slice, partial-rotary attention on a prefix of the head.

Cost, and why it is split in two: the cos/sin *table* ([T, rope_dim/2], float64 angles, rounded
once to the dtype the rotation computes in) and the *rotation* (one fused kernel each way on
CUDA). Eager, ``rope_table_at`` remembers the table for the last few (offset, T): a training run
asks every layer for positions 0..T-1 on every step. Under torch.compile the table of T > 1
positions is an opaque op (``attnbench::rope_table``): inlined, Inductor recomputed the float64
cos/sin per element of [B, T, H, K] in every rotation kernel, 30% of an H200 training step at
D=1024, T=2048. Even opaque, the table cost a compiled step a dozen small kernels and a trip
through Python per layer: the compiled all-attention model left its H200 idle 5-15 ms of a 59-69
ms step that NoPE attention ran in 56 (2026-12-02). So a mixer that rotates keeps
``RotaryTable``: the table of the first TABLE_POSITIONS positions, made once per (rope_dim,
theta, device) and shared by every layer; a sequence that fits reads a slice of it, which a
compiled graph loads inside the rotation kernel: the same model then ran 304.0k tokens/s
against 231.8k, with no idle time, 2.7% behind the compiled minimal GPT (learned positions)
and 1.6% behind itself without RoPE (H200, 2026-12-02).
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from .layers import fused_on_cuda

MEMO_SLOTS = 4  # tables kept (a hybrid asks for a few rope dims; decode steps never hit)
MEMO_MAX_ELEMENTS = 1 << 22  # T · rope_dim/2 above this is not kept (16 MiB a float32 table)
_memo: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
TABLE_POSITIONS = 8192  # RotaryTable's shared prefix: 4 MiB at rope_dim 128
_prefixes: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def rope_angles(positions: torch.Tensor, rope_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Angles m·θ_i, [T, rope_dim / 2], in float64 (float32 angles lose ~0.06 rad at m = 1e6)."""
    if rope_dim <= 0 or rope_dim % 2:
        raise ValueError(f"rope_dim must be a positive even number; got {rope_dim}")
    exponents = torch.arange(0, rope_dim, 2, dtype=torch.float64, device=positions.device) / rope_dim
    inv_freq = theta ** (-exponents)  # [rope_dim / 2]
    return positions.to(torch.float64)[:, None] * inv_freq[None, :]  # [T, rope_dim / 2]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a rotation computes in: float32 for 16-bit inputs, else the input's."""
    return torch.promote_types(dtype, torch.float32)


def _table(positions: torch.Tensor, rope_dim: int, theta: float, dtype: torch.dtype):
    angles = rope_angles(positions, rope_dim, theta)[:, None, :]  # [T, 1, rope_dim / 2]
    return angles.cos().to(dtype), angles.sin().to(dtype)


@torch.library.custom_op("attnbench::rope_table", mutates_args=())
def _table_op(positions: torch.Tensor, rope_dim: int, theta: float,
              dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The table as one opaque step of a compiled graph, so Inductor cannot fuse its float64
    cos/sin into every element of the rotation. Its outputs are fresh tensors, as an op's must be."""
    return _table(positions, rope_dim, theta, dtype)


@_table_op.register_fake
def _(positions, rope_dim, theta, dtype):
    shape = (positions.shape[0], 1, rope_dim // 2)
    return positions.new_empty(shape, dtype=dtype), positions.new_empty(shape, dtype=dtype)


def rope_table(positions: torch.Tensor, rope_dim: int, theta: float = 10000.0,
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each [T, 1, rope_dim / 2] in ``dtype``: float64 angles rounded once.

    Compiled, a single position (a decode step) stays inline: recomputed per element it is B·H·R/2
    values, less than the dozen small kernels of the opaque op."""
    if torch.compiler.is_compiling() and positions.shape[0] > 1:
        return _table_op(positions, rope_dim, theta, dtype)
    return _table(positions, rope_dim, theta, dtype)


def rope_table_at(offset: int, t: int, rope_dim: int, theta: float, dtype: torch.dtype,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """rope_table for positions offset .. offset + t - 1, remembered between eager calls.

    Not remembered: under torch.compile (the table is part of the graph), single-token steps
    (their offset moves every call), during CUDA-graph capture (the memory belongs to the graph)
    and tables over MEMO_MAX_ELEMENTS. The key holds inference mode: an inference tensor cannot be
    saved for a later backward.
    """
    device = torch.device(device)
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    if torch.compiler.is_compiling() or t == 1 or capturing or t * rope_dim // 2 > MEMO_MAX_ELEMENTS:
        return rope_table(torch.arange(offset, offset + t, device=device), rope_dim, theta, dtype)
    key = (offset, t, rope_dim, float(theta), dtype, device, torch.is_inference_mode_enabled())
    if key in _memo:
        _memo.move_to_end(key)
        return _memo[key]
    _memo[key] = table = _table(torch.arange(offset, offset + t, device=device), rope_dim, theta, dtype)
    while len(_memo) > MEMO_SLOTS:
        _memo.popitem(last=False)
    return table


def clear_rope_tables() -> None:
    """Forget the remembered tables (they hold a little device memory; RotaryTable mixers keep
    the prefixes they hold)."""
    _memo.clear()
    _prefixes.clear()


def prefix_table(rope_dim: int, theta: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 (cos, sin) of positions 0 .. TABLE_POSITIONS - 1, one per (rope_dim, theta, device)."""
    key = (rope_dim, float(theta), torch.device(device))
    if key not in _prefixes:
        with torch.inference_mode(False):  # shared with models that train: no inference tensors
            _prefixes[key] = _table(torch.arange(TABLE_POSITIONS, device=device), rope_dim, theta, torch.float32)
    return _prefixes[key]


class RotaryTable:
    """Mixin for an nn.Module that rotates by RoPE: it calls ``init_rotary_table(rope_dim, theta)``
    once its parameters exist, and ``rotary_table(offset, t, dtype, device)`` for each forward.

    A sequence of t > 1 positions within the shared prefix, computed in float32, gets a slice of
    the prefix (a view: no kernel eager, a load inside the rotation compiled); anything else
    (decode steps, longer sequences, float64) gets ``rope_table_at``'s table, with the same values.
    ``.to()`` and ``.cuda()`` move the reference to the prefix on the new device; a cast to bf16
    leaves it float32."""

    _rotary_spec: tuple[int, float] | None = None

    def init_rotary_table(self, rope_dim: int, theta: float) -> None:
        self._rotary_spec = (rope_dim, theta)
        self._rotary_prefix = prefix_table(rope_dim, theta, next(self.parameters()).device)

    def rotary_table(self, offset: int, t: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self._rotary_prefix
        if t > 1 and dtype == cos.dtype and cos.device == torch.device(device) and offset + t <= cos.shape[0]:
            return cos[offset:offset + t], sin[offset:offset + t]
        return rope_table_at(offset, t, *self._rotary_spec, dtype, device)

    def _apply(self, fn, *args, **kwargs):
        module = super()._apply(fn, *args, **kwargs)
        if self._rotary_spec is not None:  # None: the mixer does not rotate (NoPE)
            self._rotary_prefix = prefix_table(*self._rotary_spec, next(self.parameters()).device)
        return module


def apply_rope(
    x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0, rope_dim: int | None = None
) -> torch.Tensor:
    """Rotate x [B, T, H, K] at ``positions`` [T]; channels rope_dim.. of K pass through unchanged."""
    if x.dim() != 4:
        raise ValueError(f"x must be [B, T, H, K]; got shape {tuple(x.shape)}")
    rope_dim = x.shape[-1] if rope_dim is None else rope_dim
    if rope_dim > x.shape[-1]:
        raise ValueError(f"rope_dim={rope_dim} exceeds the head dim K={x.shape[-1]}")
    if positions.shape != (x.shape[1],):
        raise ValueError(f"positions must be [T={x.shape[1]}]; got shape {tuple(positions.shape)}")
    cos, sin = rope_table(positions, rope_dim, theta, compute_dtype(x.dtype))
    return rotate(x, cos, sin)


# On a GPU the elementwise kernels below (and their backward) cost more than the attention they
# feed at T = 2048 (the attention mixer ran 83% over SDPA + projections on an H200); fused, they
# are one kernel each way.
@fused_on_cuda
def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, K] rotated by a table (cos, sin) [T, 1, R/2] over its first R channels.

    Computes in the table's dtype (float32 for 16-bit x: rotated, then rounded once)."""
    rope_dim = 2 * cos.shape[-1]
    first, second = x[..., :rope_dim].to(cos.dtype).chunk(2, dim=-1)  # each [B, T, H, R/2]
    rotated = torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1).to(x.dtype)
    if rope_dim == x.shape[-1]:
        return rotated
    return torch.cat([rotated, x[..., rope_dim:]], dim=-1)  # [B, T, H, K]
