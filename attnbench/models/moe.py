"""Mixture-of-Experts channel mixer: token-choice top-k softmax routing, SwiGLU experts,
optional always-on shared expert, Switch-style load-balance loss. No capacity, no dropping.

Routing (Shazeer et al. 2017; Mixtral's top-k renormalisation when ``renormalize``):
    p = softmax(W_r x) ∈ R^E,   S = top-k indices of p,
    w_e = p_e / Σ_{j∈S} p_j   (renormalize) or p_e (not),   y = Σ_{e∈S} w_e · Expert_e(x) [+ Shared(x)]

Load balance (Switch Transformer, Fedus et al. 2021, Eq. 4, generalised to top-k):
    f_i = (# of the N·k routing slots that went to expert i) / (N·k),   P_i = mean_n p_{n,i},
    aux = E · Σ_i f_i · P_i
It equals 1 when routing is uniform (f_i = P_i = 1/E), and reaches E when everything goes to one
expert. ``aux_loss`` holds the unscaled value of the last forward; the LM applies the coefficient.

The implementation loops over experts (index_select the tokens routed to expert e, run it,
index_add the weighted result back): simple and exact, not fast.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .mlp import SwiGLU


class MoE(nn.Module):
    def __init__(self, d_model: int, d_expert: int, n_experts: int, top_k: int,
                 shared_expert: bool = False, renormalize: bool = True):
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"MoE: top_k must be in [1, n_experts={n_experts}]; got {top_k}")
        self.d_model, self.d_expert, self.n_experts, self.top_k = d_model, d_expert, n_experts, top_k
        self.renormalize = renormalize
        self.router = nn.Linear(d_model, n_experts, bias=False)
        # experts stacked: gate/up [E, D, F], down [E, F, D]
        self.w_gate = nn.Parameter(torch.empty(n_experts, d_model, d_expert))
        self.w_up = nn.Parameter(torch.empty(n_experts, d_model, d_expert))
        self.w_down = nn.Parameter(torch.empty(n_experts, d_expert, d_model))
        self.shared = SwiGLU(d_model, d_expert) if shared_expert else None
        self.aux_loss: torch.Tensor | None = None  # unscaled E·Σ f·P of the last forward
        self.expert_counts: torch.Tensor | None = None  # [E] routing slots per expert, last forward
        self.reset_parameters(0.02, 0.02)

    def reset_parameters(self, std: float, residual_std: float) -> None:
        for w in (self.router.weight, self.w_gate, self.w_up):
            nn.init.normal_(w, 0.0, std)
        nn.init.normal_(self.w_down, 0.0, residual_std)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: [N, D] -> probs [N, E] (fp32 or wider), top-k weights [N, k], top-k expert ids [N, k]."""
        logits = self.router(x)  # [N, E]
        probs = F.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)  # >= fp32
        top_w, top_i = probs.topk(self.top_k, dim=-1)  # [N, k]
        if self.renormalize:
            top_w = top_w / top_w.sum(-1, keepdim=True)
        return probs, top_w, top_i

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """SwiGLU expert e on x: [n, D] -> [n, D]."""
        return (F.silu(x @ self.w_gate[e]) * (x @ self.w_up[e])) @ self.w_down[e]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, self.d_model)  # [N, D], N = B·T
        probs, top_w, top_i = self.route(x)
        out = torch.zeros_like(x)
        for e in range(self.n_experts):
            token, slot = torch.where(top_i == e)  # tokens whose k-th choice (slot) is e
            if token.numel() == 0:
                continue
            y = self.expert(e, x.index_select(0, token)) * top_w[token, slot].unsqueeze(-1)
            out.index_add_(0, token, y.to(out.dtype))
        if self.shared is not None:
            out = out + self.shared(x)
        counts = torch.bincount(top_i.flatten(), minlength=self.n_experts)  # [E]
        fraction = counts.to(probs.dtype) / top_i.numel()
        self.aux_loss = self.n_experts * (fraction * probs.mean(0)).sum()
        self.expert_counts = counts.detach()
        return out.reshape(shape)

    def active_params(self) -> int:
        """Parameters touched per token: router, k experts, the shared expert."""
        per_expert = 3 * self.d_model * self.d_expert
        shared = self.shared.active_params() if self.shared is not None else 0
        return self.d_model * self.n_experts + self.top_k * per_expert + shared

    def flops_per_token(self) -> float:
        return 2.0 * self.active_params()
