"""A tiny stand-in mixer for tests that need a mixer the registry lacks (e.g. one without
flops_per_token). Exact in float64 and decodes with a state."""
from __future__ import annotations

import torch
from torch import nn

from attnbench.mixers.base import Mixer, dtype_bytes


class StandInRecurrent(Mixer):
    """h_t = a ⊙ h_{t-1} + W_in x_t,  y_t = W_o h_t  (a = sigmoid(decay) per channel)."""

    def __init__(self, d_model: int, n_heads: int = 2, head_dim: int | None = None, impl: str = "auto"):
        super().__init__(d_model, impl)
        width = n_heads * (head_dim or d_model // n_heads)
        self.in_proj = nn.Linear(d_model, width, bias=False)
        self.decay = nn.Parameter(torch.linspace(-1.0, 2.0, width))
        self.o_proj = nn.Linear(width, d_model, bias=False)
        self.width = width

    def init_state(self, batch, max_len, device=None, dtype=torch.float32):
        return {"h": torch.zeros(batch, self.width, device=device, dtype=dtype)}

    def forward(self, x, state=None):
        b, t = self.check_input(x)
        u = self.in_proj(x)  # [B, T, W]
        a = torch.sigmoid(self.decay)
        h = u.new_zeros(b, self.width) if state is None else state["h"].to(u.dtype)
        outs = []
        for i in range(t):
            h = a * h + u[:, i]
            outs.append(h)
        self.impl_ran = "standin.loop"
        y = self.o_proj(torch.stack(outs, dim=1))
        return y, (None if state is None else {"h": h})

    def state_bytes(self, context_len, batch=1, dtype=torch.bfloat16):
        return batch * self.width * dtype_bytes(dtype)

    def flops_per_token(self, context_len):
        return 4.0 * self.d_model * self.width + 2 * self.width


class NoFlops(StandInRecurrent):
    def flops_per_token(self, context_len):
        raise NotImplementedError
