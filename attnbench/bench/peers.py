"""The models a throughput run trains: attnbench's LM for each architecture, and two peers sized
from the same model config: ``gpt`` (bench/gpt.py, heads from model.mixers.attn) and ``fla_kda``
(fla's own KDAForCausalLM, heads from model.mixers.kda, MLP width = our d_ff; CUDA only).

Each is a ``Trainee``: the module, a loss on a token batch, FLOPs per token and what ran.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .common import arch_config
from .gate import layer_impls

PEERS = ("gpt", "fla_kda")
KDA_CHUNK = 64  # fla's chunk size, for KL Eq. 13-14


@dataclass
class Trainee:
    name: str
    model: nn.Module  # what the optimizer updates (and torch.compile wraps)
    loss: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (module to call, idx [B, T]) -> scalar
    flops_per_token: Callable[[int], float]  # forward, at a sequence length
    impls: Callable[[], list[tuple[str, str | None]]]  # (mixer name, impl) per layer, after a step
    params: int
    vocab_size: int


def next_token_loss(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of predicting idx[:, 1:] from logits[:, :-1] (fp32 logits)."""
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), idx[:, 1:].flatten())


def lm_trainee(base, arch: str, device: torch.device) -> Trainee:
    from attnbench.models import build_model

    with torch.device(device):
        model = build_model(arch_config(base, arch))
    return Trainee(arch, model, lambda m, idx: next_token_loss(m(idx)[0], idx), model.flops_per_token,
                   lambda: layer_impls(model), model.num_params(non_embedding=False), base.vocab_size)


def gpt_trainee(base, device: torch.device, max_len: int) -> Trainee:
    from .gpt import GPT

    attn = dict(base.mixers.get("attn", {}) or {})
    heads = attn.get("n_heads", 16)
    with torch.device(device):
        model = GPT(base.vocab_size, base.d_model, base.n_layers, heads, attn.get("head_dim"), max_len=max_len)
    return Trainee("gpt", model, lambda m, idx: next_token_loss(m(idx), idx), model.flops_per_token,
                   lambda: [("attn", "sdpa")] * base.n_layers, model.num_params(non_embedding=False),
                   base.vocab_size)


def fla_available(device: torch.device, module: str = "fla.models", name: str = "KDAForCausalLM") -> tuple[bool, str]:
    """(True, "") when fla's ``module.name`` can run on ``device``, else (False, why not)."""
    if device.type != "cuda":
        return False, f"fla's {name} runs Triton kernels only: needs CUDA"
    try:
        getattr(importlib.import_module(module), name)
    except Exception as exc:  # noqa: BLE001  ImportError, or transformers/triton version errors
        return False, f"{module}.{name} not importable ({type(exc).__name__}: {exc})"
    return True, ""


def kda_options(base) -> dict:
    """model.mixers.kda as configured (empty where unset): what fla's peers are built from."""
    return dict(base.mixers.get("kda", {}) or {})


def kda_heads(base) -> tuple[int, int]:
    """(heads, head_dim) of model.mixers.kda, with the KDA mixer's defaults: what fla's peers are sized by."""
    kda = kda_options(base)
    return kda.get("n_heads", 16), kda.get("head_dim", 128)


def linear_flops_per_token(model: nn.Module) -> float:
    """2 × the weights of every nn.Linear (tied weights once): each is applied once per token."""
    seen, total = set(), 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            total += module.weight.numel()
    return 2.0 * total


def fla_kda_trainee(base, device: torch.device) -> Trainee:
    from fla.models import KDAConfig, KDAForCausalLM

    from attnbench.models import resolved_d_ff

    heads, head_dim = kda_heads(base)
    config = KDAConfig(hidden_size=base.d_model, num_hidden_layers=base.n_layers, num_heads=heads, head_dim=head_dim,
                       vocab_size=base.vocab_size, intermediate_size=resolved_d_ff(base),
                       tie_word_embeddings=base.tie_embeddings, use_cache=False)
    model = KDAForCausalLM(config).to(device)
    # KL Eq. 13-14 per head and token: 6 d_h² + 3 C d_h + C² for the chunked KDA, plus the projections.
    mixing = base.n_layers * heads * (6 * head_dim**2 + 3 * KDA_CHUNK * head_dim + KDA_CHUNK**2)
    linear = linear_flops_per_token(model)
    return Trainee("fla_kda", model, lambda m, idx: m(input_ids=idx, labels=idx).loss,
                   lambda seq_len: linear + mixing, lambda: [("kda", "fla.chunk_kda")] * base.n_layers,
                   sum(p.numel() for p in model.parameters()), base.vocab_size)


def build_trainee(name: str, base, device: torch.device, max_len: int) -> Trainee:
    if name == "gpt":
        return gpt_trainee(base, device, max_len)
    if name == "fla_kda":
        return fla_kda_trainee(base, device)
    return lm_trainee(base, name, device)
