"""SSD, Mamba2's state space dual layer: torch reference (recurrent + chunked), mamba_ssm kernel wrapper."""
from .reference import ssd_chunked, ssd_recurrent

__all__ = ["ssd_chunked", "ssd_recurrent"]
