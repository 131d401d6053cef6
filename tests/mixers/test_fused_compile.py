"""fused_on_cuda compiles its chains for static shapes, with room for many shapes per chain
(CUDA only: on a CPU the chains run eagerly, which the mixers' tests cover)."""
import torch

from attnbench.mixers import layers


def test_chains_compile_static_with_room_for_many_shapes(monkeypatch):
    seen = {}

    def fake_compile(fn, dynamic=None):
        seen.update(fn=fn, dynamic=dynamic)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)

    def chain(x):
        return x * 2

    with torch._dynamo.config.patch(recompile_limit=8):  # restored after (monkeypatch would delete it)
        assert layers._compile(chain, layers.FUSE_DYNAMIC) is chain
        assert torch._dynamo.config.recompile_limit == layers.SHAPES_PER_FUNCTION
    assert seen == {"fn": chain, "dynamic": False}  # static by default: symbolic sizes index slowly


def test_chains_run_eagerly_on_cpu(monkeypatch):
    monkeypatch.setattr(layers, "_compile", lambda fn, dynamic: (_ for _ in ()).throw(AssertionError("compiled")))
    x = torch.randn(2, 5, 3)
    assert torch.equal(layers.l2norm(x), layers.l2norm.__wrapped__(x))
