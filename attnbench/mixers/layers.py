"""Small layers shared by the recurrent mixers: causal short convolution, gated RMSNorm."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim (the form fla's kernels use in-kernel)."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


class ShortConv(nn.Module):
    """Depthwise causal conv over time, x: [B, T, C] -> [B, T, C], optionally followed by SiLU.

    Decoding keeps the last ``kernel_size - 1`` inputs as state: [B, C, kernel_size - 1].
    """

    def __init__(self, channels: int, kernel_size: int = 4, bias: bool = False, activation: str | None = "silu"):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"conv kernel_size must be >= 1; got {kernel_size}")
        if activation not in (None, "silu"):
            raise ValueError(f"conv activation must be one of None, 'silu'; got {activation!r}")
        self.channels, self.kernel_size, self.activation = channels, kernel_size, activation
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=bias)

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> torch.Tensor:
        return torch.zeros(batch, self.channels, self.kernel_size - 1, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, conv_state: torch.Tensor | None = None):
        xt = x.transpose(1, 2)  # [B, C, T]
        if conv_state is None:
            padded = F.pad(xt, (self.kernel_size - 1, 0))
        else:
            padded = torch.cat([conv_state.to(xt.dtype), xt], dim=-1)  # [B, C, W-1+T]
        y = self.conv(padded).transpose(1, 2)  # [B, T, C]
        if self.activation == "silu":
            y = F.silu(y)
        new_state = None
        if conv_state is not None and self.kernel_size > 1:
            new_state = padded[..., padded.shape[-1] - (self.kernel_size - 1):].to(conv_state.dtype)
        elif conv_state is not None:
            new_state = conv_state
        return y, new_state


class GatedRMSNorm(nn.Module):
    """RMSNorm over the last dim (a head's channels) combined with a gate.

    norm_before_gate=True:  w * rms(x) * act(g)     (KDA / GDN output: per-head norm, then gate)
    norm_before_gate=False: w * rms(x * act(g))     (Mamba2: gate first, then the norm)
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
        gate = None if (g is None or self.act is None) else self.act(g)
        if self.norm_before_gate or gate is None:
            y = self._rms(x) * self.weight
            return y if gate is None else y * gate
        return self._rms(x * gate) * self.weight
