"""torch.compile of a whole all-attention LM: one graph (fullgraph), no recompiles across steps,
the eager numbers. The throughput benchmark's --compile wraps the model exactly so.

The aot_eager backend runs Dynamo (graph capture: any graph break raises under fullgraph) and
AOTAutograd (the joint forward/backward graph, custom ops' fake kernels) without Inductor's code
generation, which would take minutes on a CPU and tests nothing of ours.
"""
import pytest
import torch
import torch._dynamo as dynamo

from attnbench.models import LM, ModelConfig
from attnbench.ops.compare import rel_rms


def attention_lm(impl: str, **attn) -> LM:
    mixers = {"attn": {"n_heads": 2, "head_dim": 8, **attn}}
    return LM(ModelConfig(n_layers=2, d_model=16, vocab_size=37, pattern="A", d_ff=32, mixers=mixers, impl=impl))


def loss_and_grads(module, model, idx, autocast: bool):
    for p in model.parameters():
        p.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits, _ = module(idx)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), idx[:, 1:].flatten())
    loss.backward()
    return [logits.detach().float()] + [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("impl,autocast,attn", [
    ("kernel", True, {}),  # SDPA under bf16 autocast: the benchmark's path
    ("torch", False, {"n_kv_heads": 1}),  # the explicit reference, grouped kv heads
])
def test_compiled_model_is_one_graph_without_recompiles(impl, autocast, attn):
    dynamo.reset()
    model = attention_lm(impl, **attn)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    idx = torch.randint(0, 37, (2, 24))
    got = loss_and_grads(compiled, model, idx, autocast)
    with dynamo.config.patch(error_on_recompile=True):  # later steps must reuse the graph
        for _ in range(2):
            loss_and_grads(compiled, model, idx, autocast)
    want = loss_and_grads(model, model, idx, autocast)
    for g, w in zip(got, want):
        assert rel_rms(g, w) < (1e-2 if autocast else 1e-6)
    assert model.impls_ran() == ["sdpa" if impl == "kernel" else "torch.softmax"] * 2


def test_explain_finds_no_graph_break():
    dynamo.reset()
    model = attention_lm("auto")
    explanation = dynamo.explain(model)(torch.randint(0, 37, (1, 9)))
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons


@pytest.mark.parametrize("prefix", ["fits", "too_short"])
def test_rope_table_is_read_from_the_prefix_or_one_opaque_op(prefix):
    """A training sequence within RotaryTable's prefix reads a slice of it: no table op, no cos/sin
    in the graph. Beyond it the table is attnbench::rope_table, once per layer: inlined, the float64
    cos/sin were recomputed per element of every rotation kernel (30% of an H200 step)."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    dynamo.reset()
    forward_ops = []

    def keep(graph, inputs):
        forward_ops.extend(str(n.target) for n in graph.graph.nodes if n.op == "call_function")
        return make_boxed_func(graph.forward)

    model = attention_lm("kernel")
    if prefix == "too_short":
        for block in model.blocks:
            block.mixer._rotary_prefix = tuple(t[:4] for t in block.mixer._rotary_prefix)
    compiled = torch.compile(model, backend=aot_autograd(fw_compiler=keep, bw_compiler=lambda g, i: make_boxed_func(g.forward)))
    compiled(torch.randint(0, 37, (2, 9)))[0].sum().backward()
    assert sum("attnbench.rope_table" in op for op in forward_ops) == (0 if prefix == "fits" else 2)  # per layer
    assert not any(op.startswith(("aten.cos", "aten.sin")) for op in forward_ops)


def test_compiled_decoding_is_two_graphs_and_matches_eager():
    """Compiled as bench.decode --fuse step does (dynamic shapes) over the KV cache: one graph for
    the prefill and one for every later step. SDPA's is_causal was symbolic there: a graph break
    per layer. (Dynamo only: the breaks are found in tracing.)"""
    from torch._dynamo.utils import counters

    dynamo.reset()
    counters.clear()
    model = attention_lm("kernel").double()
    compiled = torch.compile(model, backend="eager", dynamic=True)
    idx = torch.randint(0, 37, (2, 8))
    with torch.no_grad():
        want, _ = model(idx)
        state = model.init_state(2, 8, dtype=torch.float64)
        logits, state = compiled(idx[:, :5], state)
        parts = [logits]
        for i in range(5, 8):
            logits, state = compiled(idx[:, i:i + 1], state)
            parts.append(logits)
    assert rel_rms(torch.cat(parts, 1), want) < 1e-12
    assert not counters["graph_break"] and counters["frames"]["ok"] == 2


def test_forward_does_not_ask_for_flash_attn(monkeypatch):
    """flash_attn's availability is settled at construction: in a compiled CUDA forward its import
    attempt was a graph break per layer (torch 2.11, without flash_attn)."""
    from attnbench.ops.attention import kernel

    model = attention_lm("kernel")

    def asked():
        raise AssertionError("kernel.available() called in forward")

    monkeypatch.setattr(kernel, "available", asked)
    model(torch.randint(0, 37, (1, 5)))
    assert model.impls_ran() == ["sdpa", "sdpa"]
