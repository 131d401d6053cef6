"""Diagnose first-call (compile + autotune) cost of each GPU kernel, printing as it goes."""
import os
import time

import torch

print("FLA env:", {k: v for k, v in os.environ.items() if k.startswith("FLA")}, flush=True)
dev, dt = "cuda", torch.bfloat16
B, T, H, K = 2, 1024, 4, 128


def timed(name, fn):
    torch.cuda.synchronize()
    t0 = time.time()
    try:
        fn()
        torch.cuda.synchronize()
        print(f"{name}: {time.time() - t0:.1f} s", flush=True)
    except Exception as e:
        print(f"{name}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)


def inputs():
    q = torch.nn.functional.normalize(torch.randn(B, T, H, K, device=dev), dim=-1).to(dt).requires_grad_()
    k = torch.nn.functional.normalize(torch.randn(B, T, H, K, device=dev), dim=-1).to(dt).requires_grad_()
    v = torch.randn(B, T, H, K, device=dev, dtype=dt, requires_grad=True)
    g = (-torch.rand(B, T, H, K, device=dev) * 0.1).requires_grad_()
    beta = torch.rand(B, T, H, device=dev, dtype=dt).requires_grad_()
    return q, k, v, g, beta


t0 = time.time()
import fla.ops.kda as kda_ops  # noqa: E402
print(f"import fla.ops.kda: {time.time() - t0:.1f} s", flush=True)
q, k, v, g, beta = inputs()
timed("chunk_kda fwd #1 (g fp32)", lambda: kda_ops.chunk_kda(q=q, k=k, v=v, g=g, beta=beta))
timed("chunk_kda fwd #2", lambda: kda_ops.chunk_kda(q=q, k=k, v=v, g=g, beta=beta))
timed("chunk_kda fwd+bwd #1", lambda: kda_ops.chunk_kda(q=q, k=k, v=v, g=g, beta=beta)[0].sum().backward())
timed("chunk_kda fwd+bwd #2", lambda: kda_ops.chunk_kda(q=q, k=k, v=v, g=g, beta=beta)[0].sum().backward())
gb = g.detach().to(dt).requires_grad_()
timed("chunk_kda fwd+bwd g bf16", lambda: kda_ops.chunk_kda(q=q, k=k, v=v, g=gb, beta=beta)[0].sum().backward())
with torch.no_grad():
    timed("fused_recurrent_kda #1", lambda: kda_ops.fused_recurrent_kda(q=q[:, :1], k=k[:, :1], v=v[:, :1], g=g[:, :1], beta=beta[:, :1], output_final_state=True))
import fla.ops.gated_delta_rule as gdr  # noqa: E402
gs = g[..., 0].detach().requires_grad_()
timed("chunk_gated_delta_rule fwd+bwd", lambda: gdr.chunk_gated_delta_rule(q=q, k=k, v=v, g=gs, beta=beta)[0].sum().backward())
from attnbench.ops.ssd import kernel as ssd  # noqa: E402
print("ssd available:", ssd.available(), "init skipped:", ssd.INIT_SKIPPED, flush=True)
x = torch.randn(B, T, 8, 64, device=dev, dtype=dt, requires_grad=True)
dtt = torch.rand(B, T, 8, device=dev, requires_grad=True)
A = -torch.rand(8, device=dev).requires_grad_()
Bm = torch.randn(B, T, 1, 128, device=dev, dtype=dt, requires_grad=True)
Cm = torch.randn(B, T, 1, 128, device=dev, dtype=dt, requires_grad=True)
timed("mamba chunk scan fwd+bwd #1", lambda: ssd.ssd_chunked(x, dtt, A, Bm, Cm)[0].sum().backward())
timed("mamba chunk scan fwd+bwd #2", lambda: ssd.ssd_chunked(x, dtt, A, Bm, Cm)[0].sum().backward())
from attnbench.ops.kda.reference import kda_chunked, kda_recurrent  # noqa: E402
q32, k32, v32, g32, b32 = [t.detach().float().requires_grad_() for t in (q, k, v, g, beta)]
timed("torch kda_chunked fp32 fwd+bwd", lambda: kda_chunked(q32, k32, v32, g32, b32)[0].sum().backward())
timed("torch kda_recurrent fp32 fwd+bwd", lambda: kda_recurrent(q32, k32, v32, g32, b32)[0].sum().backward())
