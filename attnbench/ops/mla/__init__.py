"""Multi-head latent attention: un-absorbed and absorbed forms (reference.py), via SDPA (kernel.py)."""
from .kernel import mla_absorbed_matmul, mla_absorbed_sdpa, mla_unabsorbed_sdpa
from .reference import mla_absorbed, mla_scale, mla_unabsorbed

__all__ = ["mla_absorbed", "mla_absorbed_matmul", "mla_absorbed_sdpa", "mla_scale", "mla_unabsorbed", "mla_unabsorbed_sdpa"]
