"""The short causal depthwise conv of KDA, GDN and Mamba2: fla's Triton kernel (kernel.py), its
parity against our plain-PyTorch chain ``attnbench.mixers.layers.causal_conv`` (parity.py)."""
