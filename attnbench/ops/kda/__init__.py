"""Kimi Delta Attention: torch reference (recurrent + chunked WY/UT, reference.py), fla kernels (kernel.py)."""
from .reference import kda_chunked, kda_recurrent

__all__ = ["kda_chunked", "kda_recurrent"]
