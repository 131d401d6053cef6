"""A decoder-only language model over any per-layer list of mixers.

    h_0 = Embed(idx);  h_l = Block_l(h_{l-1});  logits = Head(RMSNorm(h_L))

Blocks are pre-norm (block.py). The head shares the embedding matrix when ``tie_embeddings``.
No positional embedding: attention mixers carry their own (RoPE or NoPE, a mixer option).

Initialisation (GPT-2 / nanoGPT): every nn.Linear weight and the embedding ~ N(0, init_std²);
residual output projections (mixers' ``o_proj`` / ``out_proj``, the MLP's ``down``, MoE
experts' ``w_down``) ~ N(0, (init_std / sqrt(2·n_layers))²), since 2·n_layers of them add into
the residual stream. Biases, norms, convolutions and the mixers' own parameters (A_log, dt_bias,
...) keep the values their constructors gave them; a Linear with ``skip_init = True`` is left
alone too.

Counting conventions:
  - ``num_params(non_embedding=True)`` leaves out the token embedding and, if untied, the head:
    the count that does not depend on the vocabulary (Kaplan et al. 2020's N).
  - ``flops_per_token(seq_len)`` is the forward pass: Σ mixers' flops_per_token(seq_len)
    + 2·(active channel parameters) + 2·D·V for the head. Training costs 3× that (forward plus
    a backward of twice the forward). A mixer without flops_per_token is counted as 2·params and
    named in ``flops_fallbacks``.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from attnbench.mixers import State

from .block import Block
from .config import ModelConfig, as_model_config, resolved_d_ff, resolved_moe
from .moe import MoE
from .pattern import expand_layers

RESIDUAL_OUT_NAMES = ("o_proj", "out_proj")


class LM(nn.Module):
    def __init__(self, cfg: ModelConfig | Any):
        super().__init__()
        cfg = as_model_config(cfg)
        self.layer_names = expand_layers(cfg)  # also validates cfg
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(name, cfg, i) for i, name in enumerate(self.layer_names))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.init_weights()
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        self.flops_fallbacks: list[str] = []

    # ---- init -------------------------------------------------------------------------------
    def init_weights(self) -> None:
        std = self.cfg.init_std
        residual_std = std / math.sqrt(2 * self.cfg.n_layers)
        residual = set(self.residual_projections())
        nn.init.normal_(self.embed.weight, 0.0, std)
        nn.init.normal_(self.head.weight, 0.0, std)
        for name, module in self.blocks.named_modules():
            if isinstance(module, MoE):
                module.reset_parameters(std, residual_std)
            elif isinstance(module, nn.Linear) and not getattr(module, "skip_init", False):
                nn.init.normal_(module.weight, 0.0, residual_std if f"blocks.{name}" in residual else std)

    def residual_projections(self) -> list[str]:
        """Names of the nn.Linear layers that write into the residual stream (scaled at init):
        mixers' o_proj / out_proj and anything marked ``is_residual_out`` (the MLP's down)."""
        names = []
        for name, module in self.blocks.named_modules():
            if isinstance(module, nn.Linear) and (getattr(module, "is_residual_out", False) or (
                    ".mixer." in f".{name}" and name.rsplit(".", 1)[-1] in RESIDUAL_OUT_NAMES)):
                names.append(f"blocks.{name}")
        return names

    # ---- forward ----------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor, state: list[State] | None = None):
        """idx: [B, T] token ids -> (logits [B, T, V], state). state: one mixer state per layer
        (from init_state) to prefill / decode; None for training, and then None comes back."""
        if idx.dim() != 2:
            raise ValueError(f"idx must be [B, T] token ids; got shape {tuple(idx.shape)}")
        if state is not None and len(state) != len(self.blocks):
            raise ValueError(f"state must hold one entry per layer ({len(self.blocks)}); got {len(state)}")
        x = self.embed(idx)  # [B, T, D]
        new_state = [] if state is not None else None
        for i, block in enumerate(self.blocks):
            x, layer_state = block(x, None if state is None else state[i])
            if new_state is not None:
                new_state.append(layer_state)
        return self.head(self.norm(x)), new_state

    def aux_loss(self) -> torch.Tensor:
        """Σ over MoE layers of aux_loss_coef · E·Σ_i f_i·P_i from the last forward (0-dim).
        At perfectly balanced routing it is aux_loss_coef · (number of MoE layers). 0 without MoE."""
        coef = resolved_moe(self.cfg)["aux_loss_coef"]
        total = torch.zeros((), device=self.embed.weight.device)
        for block in self.blocks:
            if isinstance(block.channel, MoE) and block.channel.aux_loss is not None:
                total = total + coef * block.channel.aux_loss
        return total

    # ---- decoding ---------------------------------------------------------------------------
    def init_state(self, batch: int, max_len: int | None = None, device=None, dtype=None) -> list[State]:
        """Empty per-layer states for ``max_len`` (default cfg.max_seq_len) tokens on the model's
        device, in the model's dtype unless ``dtype`` is given."""
        device = device if device is not None else self.embed.weight.device
        dtype = dtype if dtype is not None else self.embed.weight.dtype
        max_len = max_len if max_len is not None else self.cfg.max_seq_len
        return [b.mixer.init_state(batch, max_len, device=device, dtype=dtype) for b in self.blocks]

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Prefill ``idx`` [B, T] through the caches, then one token per step -> [B, T + max_new_tokens].
        temperature 0 (or top_k=1) is greedy."""
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0; got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy); got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be None or >= 1; got {top_k}")
        if max_new_tokens == 0:
            return idx
        state = self.init_state(idx.shape[0], idx.shape[1] + max_new_tokens)
        logits, state = self(idx, state)
        tokens = [idx]
        for step in range(max_new_tokens):
            next_token = sample(logits[:, -1], temperature, top_k, generator)  # [B, 1]
            tokens.append(next_token)
            if step + 1 < max_new_tokens:
                logits, state = self(next_token, state)
        return torch.cat(tokens, dim=1)

    # ---- bookkeeping ------------------------------------------------------------------------
    def impls_ran(self) -> list[str | None]:
        return [b.mixer.impl_ran for b in self.blocks]

    def num_params(self, non_embedding: bool = True, active: bool = False) -> int:
        """Parameters (tied weights once). active=True counts only the top-k + shared experts."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed.weight.numel()
            if self.head.weight is not self.embed.weight:
                n -= self.head.weight.numel()
        if active:
            for block in self.blocks:
                if isinstance(block.channel, MoE):
                    moe = block.channel
                    n -= sum(p.numel() for p in moe.parameters()) - moe.active_params()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs per token at this sequence length (see the module docstring)."""
        total, self.flops_fallbacks = 0.0, []
        for i, block in enumerate(self.blocks):
            try:
                total += float(block.mixer.flops_per_token(seq_len))
            except NotImplementedError:
                self.flops_fallbacks.append(f"{i}:{block.name}")
                total += 2.0 * sum(p.numel() for p in block.mixer.parameters())
            total += block.channel.flops_per_token()
        if self.flops_fallbacks:
            warnings.warn(f"flops_per_token: counted as 2·params (mixer lacks flops_per_token): {self.flops_fallbacks}")
        return total + 2.0 * self.cfg.d_model * self.cfg.vocab_size

    def summary(self, seq_len: int) -> dict[str, Any]:
        """What a run records about its model: layers, parameter counts, FLOPs per token, widths."""
        moe = resolved_moe(self.cfg) if self.cfg.channel == "moe" else None
        forward = self.flops_per_token(seq_len)
        return {
            "layers": list(self.layer_names),
            "params_non_embedding": self.num_params(),
            "params_active_non_embedding": self.num_params(active=True),
            "params_total": self.num_params(non_embedding=False),
            "flops_per_token_forward": forward,
            "flops_per_token_train": 3 * forward,
            "d_ff": resolved_d_ff(self.cfg),
            "d_expert": None if moe is None else moe["d_expert"],
            "flops_fallbacks": list(self.flops_fallbacks),
        }

    def state_bytes(self, context_len: int, batch: int = 1, dtype: torch.dtype = torch.bfloat16) -> int:
        """Bytes the decoding state holds at ``context_len`` (Σ over layers' mixers)."""
        return sum(int(b.mixer.state_bytes(context_len, batch, dtype)) for b in self.blocks)


def sample(logits: torch.Tensor, temperature: float, top_k: int | None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """logits [B, V] -> next token ids [B, 1]."""
    if temperature == 0 or top_k == 1:
        return logits.argmax(-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
