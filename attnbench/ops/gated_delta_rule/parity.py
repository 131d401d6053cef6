"""GPU parity: fla's GDN kernels (native, and through KDA's kernel) against our torch reference.

Same protocol as ops/kda/parity.py (B=2, T=1000, 4 heads of 128, inputs rounded to ``dtype``,
reference in float32 on the same values, rows for output, final state and every gradient).
Paths, named as the GDN mixer's ``impl_ran`` reports them:

- ``fla.chunk_gated_delta_rule``: fla's own kernel. On Hopper with Triton < 3.7.1 fla refuses its
  backward; that shows as a failed "error" row, and the path is then disabled, as it should be.
- ``fla.chunk_kda(gdn)``: GDN through chunk_kda with the gate broadcast over K, what ``auto``
  picks where the native kernel is refused (``kernel.chunk_path``).
- ``fla.fused_recurrent_gated_delta_rule``: the decode kernel, forward only.
- ``<either chunked path>+fused_inputs``: the same kernels on raw projections, normalising q, k
  and sigmoiding beta in-kernel (and, through KDA's kernel, making the gate), as
  ``GatedDeltaNet(fuse_inputs=True)`` runs them; rows include dA_log and ddt_bias.
"""
from __future__ import annotations

import torch

from ..kda.parity import SHAPE, disabled_row, make_inputs, make_raw_inputs, run_paths
from . import kernel, reference


def cases(device: str, dtype=torch.bfloat16) -> list[dict]:
    usable, why_not = kernel.available()
    if usable and torch.device(device).type != "cuda":
        usable, why_not = False, f"device {device!r} is not CUDA"
    if not usable:
        return disabled_row("gdn", "fla", why_not)
    inputs = make_inputs(device, dtype, **SHAPE, gate="scalar")
    paths = {
        kernel.NATIVE: kernel.gdn_chunked,
        kernel.VIA_KDA: kernel.gdn_via_kda,
        "fla.fused_recurrent_gated_delta_rule": kernel.gdn_recurrent,
    }
    rows = run_paths("gdn", paths, reference.gdn_chunked, inputs, backward_paths=(kernel.NATIVE, kernel.VIA_KDA))
    raw = make_raw_inputs(device, dtype, **SHAPE)  # KDA's, with one gate channel per head
    raw["a"], raw["dt_bias"] = raw.pop("f")[..., 0].contiguous(), raw["dt_bias"][::SHAPE["K"]].contiguous()
    fused = {f"{path}+fused_inputs": fn for path, fn in kernel.CHUNKED_RAW.items()}  # GatedDeltaNet(fuse_inputs=True)
    rows += run_paths("gdn", fused, reference.gdn_chunked_raw, raw, backward_paths=tuple(fused))
    chosen, why = kernel.chunk_path(device)
    for row in rows:
        if row["path"] == chosen:
            row.setdefault("note", f"impl='auto' trains with this path: {why}")
    return rows
