"""MergedStepProjections: a mixer's projections of x as one matmul for decode steps (KDA, GDN, MLA)."""
import pytest
import torch


@pytest.mark.parametrize("name", ["kda", "gdn", "mla"])
def test_merged_step_projections_decode_the_same(name):
    """merge_step_projections: one matmul over the concatenated weights of every projection of x
    for single-token steps without gradients; the same outputs and states, dropped on train(),
    .to() and load_state_dict, unused with gradients or for sequences."""
    from attnbench.mixers import build_mixer

    torch.manual_seed(0)
    dims = dict(kv_lora_rank=8, qk_nope_head_dim=8, v_head_dim=8, rope_dim=4) if name == "mla" else dict(head_dim=8)
    m = build_mixer(name, 32, n_heads=2, impl="torch", **dims).eval()
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        want, state = [], m.init_state(2, 5)
        for t in range(5):
            y, state = m(x[:, t:t + 1], state)
            want.append(y)
        m.merge_step_projections()
        got, merged_state = [], m.init_state(2, 5)
        for t in range(5):
            y, merged_state = m(x[:, t:t + 1], merged_state)
            got.append(y)
    torch.testing.assert_close(torch.cat(got, 1), torch.cat(want, 1), rtol=1e-5, atol=1e-6)
    key = "c_kv" if name == "mla" else "S"
    torch.testing.assert_close(merged_state[key], state[key], rtol=1e-5, atol=1e-6)
    assert set(m._merged[0]) == set(m.x_linears()) and m._merged[2].shape[0] == sum(m._merged[1])

    next(iter(m.x_linears().values())).weight.data.mul_(2)  # weights changed: only a sequence or a gradient step sees it
    with torch.no_grad():
        stale = m(x[:, :1], m.init_state(2, 5))[0]
    fresh = m(x[:, :1], m.init_state(2, 5))[0]  # gradients on: the separate projections
    assert not torch.allclose(stale, fresh)
    for drop in (lambda: m.train(), lambda: m.to(torch.float64), lambda: m.load_state_dict(m.state_dict())):
        m.eval().merge_step_projections()
        drop()
        assert m._merged is None


def test_merged_mlp_gate_and_up():
    from attnbench.models.mlp import SwiGLU

    mlp = SwiGLU(16, 24).eval()
    x = torch.randn(3, 1, 16)
    with torch.no_grad():
        want = mlp(x)
        mlp.merge_step_projections()
        got = mlp(x)
    assert mlp._merged[1] == [24, 24]
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["kda", "gdn", "mla", "mlp"])
def test_merged_projections_train_the_same(name, monkeypatch):
    """MERGE_PROJECTIONS: a sequence's projections of x as one matmul over the concatenated
    weights give the outputs and gradients (of x and of every weight) of the separate ones."""
    from attnbench.mixers import build_mixer, layers
    from attnbench.models.mlp import SwiGLU

    torch.manual_seed(0)
    dims = dict(kv_lora_rank=8, qk_nope_head_dim=8, v_head_dim=8, rope_dim=4) if name == "mla" else dict(head_dim=8)
    m = SwiGLU(32, 24) if name == "mlp" else build_mixer(name, 32, n_heads=2, impl="torch", **dims)
    m = m.double()
    x = torch.randn(2, 7, 32, dtype=torch.float64, requires_grad=True)
    calls = []
    real_linear = torch.nn.functional.linear
    monkeypatch.setattr(layers.F, "linear", lambda *a: calls.append(a[1].shape[0]) or real_linear(*a))

    def run(merge: bool):
        monkeypatch.setattr(layers, "MERGE_PROJECTIONS", merge)
        m.zero_grad()
        x.grad = None
        out = m(x)
        y = out[0] if isinstance(out, tuple) else out
        y.pow(2).sum().backward()
        weights = {n: p.grad.clone() for n, p in m.named_parameters()}
        return y.detach(), x.grad.clone(), weights

    merged_width = sum(lin.out_features for lin in m.x_linears().values())
    y0, dx0, dw0 = run(False)
    assert merged_width not in calls  # one matmul per projection
    calls.clear()
    y1, dx1, dw1 = run(True)
    assert calls.count(merged_width) == 1  # one matmul over them all
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx1, dx0, rtol=1e-12, atol=1e-12)
    for n in dw0:
        torch.testing.assert_close(dw1[n], dw0[n], rtol=1e-12, atol=1e-12, msg=n)


def test_merged_projections_under_autocast(monkeypatch):
    """Under autocast the weights are cast before they are concatenated: the merged matmul runs in
    autocast's dtype like the separate ones, with the same result up to that dtype's rounding."""
    from attnbench.mixers import layers
    from attnbench.models.mlp import SwiGLU

    torch.manual_seed(0)
    mlp, x = SwiGLU(32, 64), torch.randn(2, 5, 32)
    outs = {}
    for merge in (False, True):
        monkeypatch.setattr(layers, "MERGE_PROJECTIONS", merge)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            p = mlp.project_x(x)
        outs[merge] = p
    assert all(v.dtype == torch.bfloat16 for v in outs[True].values())
    for name in ("gate", "up"):
        torch.testing.assert_close(outs[True][name], outs[False][name])


def test_single_token_steps_do_not_concatenate_weights(monkeypatch):
    """A T = 1 step not merged beforehand runs the projections one by one: concatenating every
    weight per step would cost more than the GEMVs it saves."""
    from attnbench.mixers import layers
    from attnbench.models.mlp import SwiGLU

    mlp = SwiGLU(16, 24)
    cats = []
    real_cat = torch.cat
    monkeypatch.setattr(layers.torch, "cat", lambda *a, **k: cats.append(1) or real_cat(*a, **k))
    with torch.no_grad():
        mlp(torch.randn(2, 1, 16))
        assert cats == []
        mlp(torch.randn(2, 3, 16))
    assert cats == [1]
