"""A minimal GPT, the peer baseline for training throughput (the GPT-2 / nanoGPT shape).

    h_0 = E[idx] + P[0..T)                      token + learned position embeddings
    h   = h + W_o SDPA_causal(LN(h) W_qkv)      per block
    h   = h + W_2 GELU(W_1 LN(h))               4·D hidden
    logits = LN(h) Eᵀ                           head tied to the embedding

No biases, no dropout. FLOPs per token follow attnbench.bench.flops's convention (matmuls only,
causal attention averaged over the sequence): per layer 2·12·D² + 4·D·(L + 1)/2, plus 2·D·V.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GPTBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, head_dim: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim
        width = n_heads * head_dim
        self.ln_attn = nn.LayerNorm(d_model, bias=False)
        self.qkv = nn.Linear(d_model, 3 * width, bias=False)
        self.proj = nn.Linear(width, d_model, bias=False)
        self.ln_mlp = nn.LayerNorm(d_model, bias=False)
        self.fc = nn.Linear(d_model, 4 * d_model, bias=False)
        self.fc_out = nn.Linear(4 * d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        qkv = self.qkv(self.ln_attn(x)).view(b, t, 3, self.n_heads, self.head_dim)  # [B, T, 3, H, K]
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, T, K]
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, K]
        x = x + self.proj(o.transpose(1, 2).reshape(b, t, -1))
        return x + self.fc_out(F.gelu(self.fc(self.ln_mlp(x))))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, head_dim: int | None = None,
                 max_len: int = 2048):
        super().__init__()
        head_dim = head_dim or d_model // n_heads
        self.d_model, self.n_layers, self.vocab_size = d_model, n_layers, vocab_size
        self.n_heads, self.head_dim, self.max_len = n_heads, head_dim, max_len
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(GPTBlock(d_model, n_heads, head_dim) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model, bias=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx [B, T] -> logits [B, T, V]."""
        t = idx.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len={self.max_len}")
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))  # [B, T, D]
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln_f(x), self.tok.weight)  # tied head

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.tok.weight.numel() - self.pos.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int) -> float:
        d, width = self.d_model, self.n_heads * self.head_dim
        per_layer = 2 * (d * 3 * width + width * d + 8 * d * d) + 4 * width * (seq_len + 1) / 2
        return float(self.n_layers * per_layer + 2 * d * self.vocab_size)
