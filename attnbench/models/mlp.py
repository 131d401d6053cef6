"""The dense channel mixers (``model.mlp``).

SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer", Eq. FFN_SwiGLU), the default:

    MLP(x) = W_down (SiLU(W_gate x) ⊙ (W_up x))

three bias-free matrices, 3·D·F parameters, 6·D·F forward FLOPs per token. On CUDA the gate
product is one compiled kernel each way (``fused_on_cuda``): eager SiLU then ⊙ is five passes
over the [B, T, F] activations forward and about nine backward.

GELU (GPT-2, Radford et al. 2019; exact erf GELU as nanoGPT's): MLP(x) = W_down GELU(W_up x),
2·D·F parameters, 4·D·F FLOPs per token; at F = 4·D it has SwiGLU's size at F = 8/3·D.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..mixers.layers import MergedStepProjections, fused_on_cuda


class DenseMLP(nn.Module):
    """Bias-free input projections named ``inputs`` (D -> F each, made in that order, which fixes
    the order of their init draws) and ``down`` (F -> D); 2 FLOPs per weight per token."""

    def __init__(self, d_model: int, d_ff: int, inputs: tuple[str, ...]):
        super().__init__()
        if d_model <= 0 or d_ff <= 0:
            raise ValueError(f"{type(self).__name__}: d_model and d_ff must be positive; got {d_model}, {d_ff}")
        self.d_model, self.d_ff = d_model, d_ff
        for name in inputs:
            setattr(self, name, nn.Linear(d_model, d_ff, bias=False))
        self.down = nn.Linear(d_ff, d_model, bias=False)
        self.down.is_residual_out = True  # LM init scales it by 1/sqrt(2·n_layers)
        self.n_matrices = len(inputs) + 1

    def active_params(self) -> int:
        return self.n_matrices * self.d_model * self.d_ff

    def flops_per_token(self) -> float:
        return 2.0 * self.active_params()


class SwiGLU(MergedStepProjections, DenseMLP):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__(d_model, d_ff, inputs=("gate", "up"))
        self.init_merged_projections()  # decoding: gate and up as one GEMV once merged

    def x_linears(self) -> dict[str, nn.Linear]:
        return {"gate": self.gate, "up": self.up}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.project_x(x)
        return self.down(swiglu(p["gate"], p["up"]))


@fused_on_cuda
def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) ⊙ up, gate and up [B, T, F]."""
    return F.silu(gate) * up


class GeluMLP(DenseMLP):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__(d_model, d_ff, inputs=("up",))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


MLP_CLASSES = {"swiglu": SwiGLU, "gelu": GeluMLP}  # by model.mlp, whose legal values config.MLPS lists


def build_mlp(kind: str, d_model: int, d_ff: int) -> nn.Module:
    """The dense MLP named by ``model.mlp`` (checked by config.validate)."""
    return MLP_CLASSES[kind](d_model, d_ff)
