"""Times the mixers' fused elementwise chains (``fused_on_cuda``) three ways in one process:
eager, compiled for symbolic shapes (dynamic=True) and compiled for the shape at hand (static),
forward + backward, at the mixer-overhead shape (B=8, T=2048, D=2048, 16 heads of 128).

    python scripts/fusion_check.py [--out table.md]     (CUDA only)

Each row also gives the bytes the chain must move (tensor inputs read and output written, then
about as much again backward) over the static time, so a chain far from the card's copy bandwidth stands out.
"""
from __future__ import annotations

import argparse

import torch
import torch._dynamo

from attnbench.bench.timing import fwd_bwd, median_ms
from attnbench.mixers import layers
from attnbench.mixers.kda import _kda_gate
from attnbench.mixers.layers import _gated_norm, causal_conv, l2norm
from attnbench.mixers.rope import rope_table, rotate
from attnbench.models.mlp import swiglu

B, T, D, H, K = 8, 2048, 2048, 16, 128
BF16, F32 = torch.bfloat16, torch.float32


def cases(device):
    """(name, fused function, its arguments, the leaves whose gradients backward writes)."""
    def leaf(*shape, dtype=BF16):
        return torch.randn(*shape, device=device, dtype=dtype).requires_grad_()

    qkv = leaf(B, T, 3 * D)  # as the attention mixer's: q is a strided view of one projection
    q = qkv[..., :D].unflatten(-1, (H, K))
    cos, sin = rope_table(torch.arange(T, device=device), K, dtype=F32)
    x, w = leaf(B, T, D), leaf(D, 4, dtype=F32)
    heads, gate = leaf(B, T, H, K), leaf(B, T, H, K)
    norm = layers.GatedRMSNorm(K).to(device)
    f, dt_bias, A_log = leaf(B, T, D), leaf(D, dtype=F32), leaf(H, dtype=F32)
    up, hidden = leaf(B, T, 5472), leaf(B, T, 5472)
    return [
        ("rotate (RoPE on q)", rotate, (q, cos, sin), [qkv]),
        ("causal_conv + SiLU", causal_conv, (x, None, w, None, True), [x, w]),
        ("l2norm", l2norm, (heads,), [heads]),
        ("gated RMSNorm", _gated_norm, (norm, heads, gate), [heads, gate, norm.weight]),
        ("KDA gate (eager in the mixer)", layers.fused_on_cuda(_kda_gate), (f, dt_bias, A_log), [f, dt_bias, A_log]),
        ("SwiGLU", swiglu, (up, hidden), [up, hidden]),
    ]


def moved_bytes(out: torch.Tensor, inputs) -> int:
    tensors = [t for t in inputs if isinstance(t, torch.Tensor)] + [out]
    read = sum(t.numel() * t.element_size() for t in tensors)
    return 2 * read  # forward reads inputs and writes the output; backward the reverse, about


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="also write the table here (markdown)")
    args = ap.parse_args()
    device = torch.device("cuda")
    rows = ["| chain | eager ms | dynamic ms | static ms | static GB/s |", "| --- | --- | --- | --- | --- |"]
    for name, fused, inputs, leaves in cases(device):
        times = {}
        modes = (("eager", fused.__wrapped__, False), ("dynamic", fused, True), ("static", fused, False))
        for mode, fn, dynamic in modes:
            torch._dynamo.reset()  # the two compiled modes share the function's code cache
            layers.FUSE_DYNAMIC = dynamic
            times[mode] = median_ms(fwd_bwd(lambda: fn(*inputs), leaves), warmup=3, reps=10, device=device)
        gbps = moved_bytes(fused(*inputs), inputs) / times["static"] / 1e6
        rows.append(f"| {name} | {times['eager']:.3f} | {times['dynamic']:.3f} | {times['static']:.3f} | {gbps:.0f} |")
        print(rows[-1], flush=True)
    layers.FUSE_DYNAMIC = False
    table = "\n".join([f"{torch.cuda.get_device_name()} · torch {torch.__version__}", "", *rows])
    print(table)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
