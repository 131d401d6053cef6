"""Tiny constructor kwargs for the five real mixers (model.mixers), so model tests stay fast.
Chunk sizes of 8 make the 13-token decode tests cross chunk boundaries."""
TINY_MIXERS = {
    "attn": {"n_heads": 2, "head_dim": 8},
    "mla": {"n_heads": 2, "kv_lora_rank": 8, "qk_nope_head_dim": 8, "v_head_dim": 8},
    "gdn": {"n_heads": 2, "head_dim": 8, "chunk_size": 8},
    "mamba2": {"d_state": 8, "headdim": 8, "expand": 2, "chunk_size": 8},
    "kda": {"n_heads": 2, "head_dim": 8, "chunk_size": 8},
}
# kwargs of the stand-in mixers in standins.py (used where a test needs a mixer the registry lacks)
STANDIN_KWARGS = {"n_heads": 2, "head_dim": 8}
