"""The Triton MLA decode kernel (ops/mla/decode_triton.py) against the explicit softmax over the latent.

Run on the CPU by Triton's interpreter (TRITON_INTERPRET=1, set before Triton is imported, so in
a subprocess). float32 only: the interpreter's bf16 tl.dot returns garbage (Triton 3.9, checked
2026-12-02); bf16 on a GPU is the parity script's row 'mla/triton.absorbed'.
"""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = r"""
import json, sys
import torch
from attnbench.ops.mla import decode_triton

def reference(q, q_r, c, k_r, scale):  # float64: softmax_j(scale (q c_j + q_r k_r_j)) c_j
    s = torch.einsum("bhc,bsc->bhs", q.double(), c.double())
    if q_r is not None:
        s = s + torch.einsum("bhr,bsr->bhs", q_r.double(), k_r.double())
    return torch.einsum("bhs,bsc->bhc", (s * scale).softmax(-1), c.double())

torch.manual_seed(0)
errors = {}
for b, h, c, r, s, slices in json.loads(sys.argv[1]):
    q, q_r = torch.randn(b, h, c), (torch.randn(b, h, r) if r else None)
    cache, k_cache = torch.randn(b, s + 9, c), torch.randn(b, s + 9, max(r, 1))  # the cache: a longer buffer
    c_kv, k_r = cache[:, :s], (k_cache[:, :s, :r] if r else None)
    got = decode_triton.latent_decode(q, q_r, c_kv, k_r, 0.3, slices=slices)
    want = reference(q, q_r, c_kv, k_r, 0.3)
    errors[f"{b},{h},{c},{r},{s},{slices}"] = ((got.double() - want).norm() / want.norm()).item()
print(json.dumps(errors))
"""

CASES = [  # (B, H, C, R, S, slices): NoPE and rope, heads and latent below a power of two, one
    (2, 16, 64, 0, 200, None),  # position, slices that end mid-block, a merge of many slices
    (3, 5, 48, 16, 130, 3),
    (1, 16, 64, 8, 1, None),
    (2, 4, 32, 0, 257, 5),
]


def interpreted(script: str, *args: str) -> dict:
    """Run ``script`` in a fresh Python under Triton's interpreter; its last line of output, as JSON."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_latent_decode_matches_the_explicit_softmax():
    errors = interpreted(SCRIPT, json.dumps(CASES))
    assert len(errors) == len(CASES)
    assert all(err < 1e-5 for err in errors.values()), errors


WRAPPER_SCRIPT = r"""
import json
import torch
from attnbench.ops.mla import kernel
from attnbench.ops.mla.reference import mla_absorbed

kernel.triton_decode_fits = lambda q_nope, c_kv: (True, "")  # the CPU stands in for CUDA here
torch.manual_seed(0)
errors = {}
for r in (0, 8):  # NoPE (Kimi Linear) and decoupled RoPE (DeepSeek)
    b, h, kn, c, v, s = 2, 4, 16, 32, 16, 37
    q_nope, q_rope = torch.randn(b, 1, h, kn), (torch.randn(b, 1, h, r) if r else None)
    cache, k_cache = torch.randn(b, s + 5, c), torch.randn(b, s + 5, max(r, 1))  # the mixer's cache: a prefix
    c_kv, k_rope = cache[:, :s], (k_cache[:, :s, :r] if r else None)
    w_uk, w_uv = torch.randn(h, kn, c) / c**0.5, torch.randn(h, v, c) / c**0.5
    got = kernel.mla_absorbed_triton(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv)
    want = mla_absorbed(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv)
    errors[f"rope{r}"] = ((got - want).norm() / want.norm()).item()
print(json.dumps(errors))
"""


def test_the_mixers_op_around_the_kernel_matches_the_absorbed_reference():
    """kernel.mla_absorbed_triton (fold W^UK into q, the kernel, unfold W^UV) == reference.mla_absorbed."""
    errors = interpreted(WRAPPER_SCRIPT)
    assert set(errors) == {"rope0", "rope8"} and all(err < 1e-5 for err in errors.values()), errors


def test_slice_plan_covers_every_position_once():
    from attnbench.ops.mla.decode_triton import BLOCK_N, slice_plan

    for batch, S, n_sm in [(1, 131072, 132), (16, 131072, 132), (1, 1, 132), (4, 65, 8), (64, 4096, 132)]:
        n, slice_len = slice_plan(batch, S, n_sm)
        assert slice_len % BLOCK_N == 0 and (n - 1) * slice_len < S <= n * slice_len
        assert n <= -(-2 * n_sm // batch)  # about two programs per SM over the batch, at least one per row
