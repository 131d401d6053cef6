"""FLOPs per token, device peaks, a measured matmul ceiling, and MFU.

    python -m attnbench.bench.flops --archs attn,kda_mla_3to1 --seq-len 2048 +bench=train_ref

The count (what ``LM.flops_per_token`` and the mixers' ``flops_per_token`` return):
  - matmul FLOPs only, 2 per multiply-add; norms, activations, convolutions, softmax, the
    embedding lookup and the loss are left out (they are a few % and not tensor-core work);
  - per token, forward: Σ_layers [mixer(L) + channel mixer] + 2·D·V for the head;
  - causal attention averages over the sequence: a token attends (L + 1) / 2 keys, so the score
    and value matmuls cost 4·H·K·(L + 1)/2 per token (the work a causal kernel does; nanoGPT's
    12·n_layer·D·L counts the masked half too);
  - linear mixers count their chunked algorithm (KDA: KL Eq. 13-14, Mamba2: the SSD chunk terms);
  - training = 3 × forward (the backward is two matmuls per forward matmul).

MFU = achieved FLOP/s / peak, with achieved = tokens/s × 3 × forward FLOPs per token. The peak is
the vendor's dense (no sparsity) bf16 tensor-core figure below; the measured matmul ceiling (one
large bf16 matmul, timed) is printed beside it as the practically reachable bound.
"""
from __future__ import annotations

import torch

from .common import Recorder, add_archs, arch_config, base_model_config, parse_archs, parser, pick_device, print_table
from .timing import median_ms

# (substrings that must all appear in torch.cuda.get_device_name, dense bf16 TFLOP/s, source).
# Order matters: the first match wins (PCIe/NVL before the plain SXM name, L40S before L4).
# Sources: vendor datasheets, which print the sparse figure; dense = half of it.
PEAK_BF16_TFLOPS = [
    (("H100", "PCIe"), 756.0, "NVIDIA H100 datasheet: BF16 1,513 TFLOPS with sparsity (PCIe)"),
    (("H100", "NVL"), 835.0, "NVIDIA H100 datasheet: BF16 1,671 TFLOPS with sparsity (NVL)"),
    (("H100",), 989.4, "NVIDIA H100 datasheet: BF16 1,979 TFLOPS with sparsity (SXM)"),
    (("H200", "NVL"), 835.0, "NVIDIA H200 datasheet: BF16 1,671 TFLOPS with sparsity (NVL)"),
    (("H200",), 989.4, "NVIDIA H200 datasheet: BF16 1,979 TFLOPS with sparsity (SXM)"),
    (("GH200",), 989.4, "NVIDIA GH200 datasheet: BF16 1,979 TFLOPS with sparsity"),
    (("B200",), 2250.0, "NVIDIA HGX B200 datasheet: FP16/BF16 4.5 PFLOPS per GPU with sparsity"),
    (("A100",), 312.0, "NVIDIA A100 datasheet: BF16 312 TFLOPS dense (624 with sparsity)"),
    (("L40S",), 362.05, "NVIDIA L40S datasheet: BF16 733 TFLOPS with sparsity"),
    (("L4",), 121.0, "NVIDIA L4 datasheet: BF16 242 TFLOPS with sparsity"),
    (("RTX 4090",), 165.2, "NVIDIA Ada (AD102) whitepaper: RTX 4090 BF16, FP32 accumulate, dense"),
    (("MI300X",), 1307.4, "AMD Instinct MI300X datasheet: BF16 1,307.4 TFLOPS dense"),
]


def device_peak(name: str | None = None) -> tuple[float | None, str]:
    """(dense bf16 TFLOP/s, source) for a device name (default: CUDA device 0); (None, why) if unknown."""
    if name is None:
        if not torch.cuda.is_available():
            return None, "no datasheet peak for a CPU"
        name = torch.cuda.get_device_name(0)
    for needles, peak, source in PEAK_BF16_TFLOPS:
        if all(n in name for n in needles):
            return peak, source
    return None, f"device {name!r} is not in PEAK_BF16_TFLOPS: pass --peak-tflops"


def matmul_ceiling(device: torch.device, n: int | None = None, dtype: torch.dtype | None = None,
                   reps: int = 10) -> float:
    """TFLOP/s of one n×n×n matmul (bf16 on CUDA, n=8192 by default; float32 n=512 on CPU)."""
    cuda = device.type == "cuda"
    n = n or (8192 if cuda else 512)
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    ms = median_ms(lambda: torch.mm(a, b, out=out), warmup=3, reps=reps, device=device)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def forward_flops_per_token(model, seq_len: int) -> float:
    """Forward FLOPs per token at this sequence length (any model with flops_per_token)."""
    return float(model.flops_per_token(seq_len))


def train_flops_per_token(model, seq_len: int) -> float:
    return 3.0 * forward_flops_per_token(model, seq_len)


def mfu(tokens_per_s: float, flops_per_token_train: float, peak_tflops: float | None) -> float | None:
    """Achieved training FLOP/s over the peak (None when the peak is unknown)."""
    if peak_tflops is None or not peak_tflops > 0:
        return None
    return tokens_per_s * flops_per_token_train / (peak_tflops * 1e12)


def peaks(device: torch.device, peak_override: float | None, ceiling_n: int | None) -> dict:
    """{peak_tflops, peak_source, matmul_ceiling_tflops} for the run's meta and table header."""
    if peak_override:
        peak, source = peak_override, "--peak-tflops"
    elif device.type == "cuda":
        peak, source = device_peak()
    else:
        peak, source = None, "no datasheet peak for a CPU"
    ceiling = matmul_ceiling(device, ceiling_n)
    print(f"peak bf16 dense: {peak if peak is not None else 'unknown'} TFLOP/s ({source}); "
          f"measured matmul ceiling: {ceiling:.1f} TFLOP/s")
    return {"peak_tflops": peak, "peak_source": source, "matmul_ceiling_tflops": ceiling}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = parser("flops", __doc__)
    add_archs(ap, "attn,mla,gdn,mamba2,kda,kda_mla_3to1")
    ap.add_argument("--seq-len", type=int, nargs="+", default=[2048])
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--ceiling-n", type=int, default=None, help="matmul size for the ceiling")
    args = ap.parse_intermixed_args(argv)
    from attnbench.models import build_model

    device, base = pick_device(args.device), base_model_config(args.overrides)
    hardware = peaks(device, args.peak_tflops, args.ceiling_n)
    rows = []
    for arch in parse_archs(args.archs):
        with torch.device("meta"):  # counts need no weights
            model = build_model(arch_config(base, arch))
        for seq_len in args.seq_len:
            fwd = forward_flops_per_token(model, seq_len)
            rows.append(dict(bench="flops", arch=arch, layers=",".join(model.layer_names),
                             seq_len=seq_len, params=model.num_params(non_embedding=False),
                             params_non_embedding=model.num_params(), fwd_flops_per_token=fwd,
                             train_flops_per_token=3 * fwd, status="ok"))
    print_table(rows, ["arch", "seq_len", "params", "params_non_embedding", "fwd_flops_per_token",
                       "train_flops_per_token"])
    record = Recorder("flops", args.out, {**vars(args), **hardware, "device": str(device)})
    record.add(rows)
    print(f"wrote {record.path}")
    return rows


if __name__ == "__main__":
    main()
