"""Causal softmax attention: explicit reference (reference.py), SDPA / flash_attn (kernel.py)."""
from .kernel import attention, available, flash_attention, sdpa_attention
from .reference import attention_reference, causal_mask

__all__ = ["attention", "attention_reference", "available", "causal_mask", "flash_attention", "sdpa_attention"]
