"""Gated delta rule (GDN): torch reference (recurrent + chunked, reference.py), fla kernels (kernel.py)."""
from .reference import gdn_chunked, gdn_recurrent

__all__ = ["gdn_chunked", "gdn_recurrent"]
