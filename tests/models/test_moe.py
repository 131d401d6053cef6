"""MoE: routing against a per-token dense computation, gradients, the load-balance loss."""
import pytest
import torch
import torch.nn.functional as F

from attnbench.models import MoE, SwiGLU

from attnbench.ops.compare import rel_rms


def dense_oracle(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Token by token: softmax over experts, sort, keep the k largest, run every chosen expert."""
    outs = []
    for token in x.reshape(-1, moe.d_model):
        probs = torch.softmax(token @ moe.router.weight.T, dim=-1)
        chosen = torch.argsort(probs, descending=True)[: moe.top_k]
        norm = probs[chosen].sum() if moe.renormalize else 1.0
        y = torch.zeros_like(token)
        for e in chosen.tolist():
            hidden = F.silu(token @ moe.w_gate[e]) * (token @ moe.w_up[e])
            y = y + probs[e] / norm * (hidden @ moe.w_down[e])
        if moe.shared is not None:
            y = y + moe.shared(token)
        outs.append(y)
    return torch.stack(outs).reshape(x.shape)


@pytest.mark.parametrize("top_k, shared, renormalize",
                         [(1, False, True), (2, False, True), (2, True, False), (4, True, True)])
def test_moe_matches_dense_per_token(top_k, shared, renormalize):
    moe = MoE(16, 24, n_experts=4, top_k=top_k, shared_expert=shared, renormalize=renormalize).double()
    moe.reset_parameters(0.3, 0.3)  # large enough that routing differs between tokens
    x = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    y, y_ref = moe(x), dense_oracle(moe, x)
    assert y.shape == x.shape
    assert rel_rms(y.detach(), y_ref.detach()) < 1e-12
    probe = torch.randn_like(y)
    inputs = [x, moe.router.weight, moe.w_gate, moe.w_up, moe.w_down]
    inputs += list(moe.shared.parameters()) if shared else []
    grads = torch.autograd.grad((y * probe).sum(), inputs)
    grads_ref = torch.autograd.grad((y_ref * probe).sum(), inputs)
    for g, g_ref in zip(grads, grads_ref):  # (top-1 renormalised: the router's gradient is exactly 0)
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-13)
        assert g_ref.abs().max() > 1e-6 or (top_k == 1 and renormalize)
    assert int(moe.expert_counts.sum()) == 21 * top_k


def test_moe_routes_to_top_k_experts_only():
    """Zero an expert that no token picked: the output must not change."""
    moe = MoE(8, 8, n_experts=6, top_k=2).double()
    moe.reset_parameters(0.5, 0.5)
    x = torch.randn(40, 8, dtype=torch.float64)
    y = moe(x)
    unused = [e for e in range(6) if moe.expert_counts[e] == 0]
    used = [e for e in range(6) if moe.expert_counts[e] > 0]
    with torch.no_grad():
        for e in unused:
            moe.w_down[e].zero_()
        assert torch.equal(moe(x), y)
        moe.w_down[used[0]].zero_()
        assert not torch.equal(moe(x), y)


def test_aux_loss_is_one_for_uniform_routing():
    moe = MoE(8, 8, n_experts=4, top_k=2).double()
    with torch.no_grad():
        moe.router.weight.zero_()  # every token: p = 1/E for every expert
    moe(torch.randn(2, 5, 8, dtype=torch.float64))
    assert moe.aux_loss.item() == pytest.approx(1.0, abs=1e-12)


def test_aux_loss_hand_count_and_collapse():
    moe = MoE(4, 8, n_experts=4, top_k=1).double()
    moe.reset_parameters(0.5, 0.5)
    x = torch.randn(50, 4, dtype=torch.float64)
    moe(x)
    probs = torch.softmax(x @ moe.router.weight.T, -1)
    f = torch.bincount(probs.argmax(-1), minlength=4).double() / 50
    assert moe.aux_loss.item() == pytest.approx(4 * (f * probs.mean(0)).sum().item(), rel=1e-12)
    with torch.no_grad():  # everything to expert 0 with probability ~1: aux -> E
        moe.router.weight.zero_()
        moe.router.weight[0] = 100.0
    moe(torch.rand(20, 4, dtype=torch.float64) + 1.0)
    assert moe.aux_loss.item() == pytest.approx(4.0, rel=1e-6)


def test_aux_loss_gradient_reaches_router():
    moe = MoE(8, 8, n_experts=4, top_k=2)
    moe(torch.randn(10, 8))
    (grad,) = torch.autograd.grad(moe.aux_loss, moe.router.weight)
    assert grad.abs().sum() > 0


def test_active_params():
    moe = MoE(16, 32, n_experts=8, top_k=2, shared_expert=True)
    assert moe.active_params() == 16 * 8 + 2 * 3 * 16 * 32 + 3 * 16 * 32
    assert sum(p.numel() for p in moe.parameters()) == 16 * 8 + 9 * 3 * 16 * 32
    assert SwiGLU(16, 32).active_params() == sum(p.numel() for p in SwiGLU(16, 32).parameters())


def test_bad_top_k():
    with pytest.raises(ValueError, match="top_k"):
        MoE(8, 8, n_experts=2, top_k=3)


def test_swiglu_is_the_papers_formula():
    """MLP(x) = W_down (SiLU(W_gate x) ⊙ W_up x), written out here apart from models/mlp.py."""
    mlp = SwiGLU(16, 32).double()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    want = (F.silu(x @ mlp.gate.weight.T) * (x @ mlp.up.weight.T)) @ mlp.down.weight.T
    torch.testing.assert_close(mlp(x), want, rtol=1e-12, atol=1e-12)
