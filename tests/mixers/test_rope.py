"""RoPE: complex-number oracle, relative-position property, partial rotation, explicit positions."""
import pytest
import torch

from attnbench.mixers.rope import apply_rope
from attnbench.ops.compare import rel_rms

F64 = torch.float64


def complex_oracle(x, positions, theta):
    """RoFormer Eq. 34 as a complex product: channel pair (i, i + d/2) is z_i, rotated by e^{i m θ_i}."""
    half = x.shape[-1] // 2
    z = torch.complex(x[..., :half], x[..., half:])  # [B, T, H, d/2]
    freqs = theta ** (-torch.arange(half, dtype=F64) * 2 / x.shape[-1])
    rotor = torch.polar(torch.ones(len(positions), half, dtype=F64), positions.to(F64)[:, None] * freqs)
    z = z * rotor[:, None, :]
    return torch.cat([z.real, z.imag], dim=-1)


def test_matches_complex_oracle():
    x = torch.randn(2, 7, 3, 16, dtype=F64)
    positions = torch.arange(5, 12)
    assert rel_rms(apply_rope(x, positions, 500.0), complex_oracle(x, positions, 500.0)) < 1e-13


def test_scores_depend_on_relative_position_only():
    q, k = torch.randn(1, 1, 1, 8, dtype=F64), torch.randn(1, 1, 1, 8, dtype=F64)

    def score(m, n):
        return (apply_rope(q, torch.tensor([m])) * apply_rope(k, torch.tensor([n]))).sum()

    assert torch.allclose(score(3, 1), score(103, 101))
    assert not torch.allclose(score(3, 1), score(3, 2))


def test_partial_rotation_and_position_zero():
    x = torch.randn(2, 4, 3, 12, dtype=F64)
    positions = torch.arange(4)
    y = apply_rope(x, positions, rope_dim=8)
    assert torch.equal(y[..., 8:], x[..., 8:])
    assert rel_rms(y[..., :8], apply_rope(x[..., :8].contiguous(), positions)) < 1e-15
    assert torch.allclose(y[:, 0], x[:, 0])  # position 0 is the identity


def test_low_precision_is_rotated_in_float32():
    x = torch.randn(1, 3, 2, 8)
    positions = torch.tensor([0, 1000, 100000])
    got = apply_rope(x.bfloat16(), positions)
    assert got.dtype == torch.bfloat16
    assert rel_rms(got, apply_rope(x.bfloat16().double(), positions)) < 1e-2


@pytest.mark.parametrize(
    "shape,positions,rope_dim,match",
    [
        ((2, 3, 8), torch.arange(3), None, r"\[B, T, H, K\]"),
        ((2, 3, 1, 8), torch.arange(4), None, r"positions must be \[T=3\]"),
        ((2, 3, 1, 8), torch.arange(3), 10, "exceeds"),
        ((2, 3, 1, 8), torch.arange(3), 5, "positive even"),
    ],
)
def test_bad_inputs_raise(shape, positions, rope_dim, match):
    with pytest.raises(ValueError, match=match):
        apply_rope(torch.zeros(shape), positions, rope_dim=rope_dim)


def test_table_is_remembered_per_offset_and_length_but_not_for_steps():
    from attnbench.mixers.rope import clear_rope_tables, rope_table, rope_table_at

    clear_rope_tables()
    first = rope_table_at(0, 6, 8, 500.0, torch.float32, "cpu")
    assert rope_table_at(0, 6, 8, 500.0, torch.float32, "cpu") is first  # training: every layer, every step
    assert rope_table_at(2, 6, 8, 500.0, torch.float32, "cpu") is not first
    assert rope_table_at(7, 1, 8, 500.0, torch.float32, "cpu") is not rope_table_at(7, 1, 8, 500.0, torch.float32, "cpu")
    want = rope_table(torch.arange(6), 8, 500.0, torch.float32)
    assert all(torch.equal(g, w) for g, w in zip(first, want))
    with torch.inference_mode():
        assert rope_table_at(0, 6, 8, 500.0, torch.float32, "cpu")[0].is_inference()
    # an inference tensor could not be saved for a later backward: training gets its own
    assert not rope_table_at(0, 6, 8, 500.0, torch.float32, "cpu")[0].is_inference()


def test_table_is_float64_angles_rounded_once():
    from attnbench.mixers.rope import rope_angles, rope_table

    positions = torch.tensor([0, 3, 1_000_000])
    cos, sin = rope_table(positions, 8, 10000.0, torch.float32)
    angles = rope_angles(positions, 8)[:, None, :]
    assert cos.shape == (3, 1, 4) and cos.dtype == torch.float32
    assert torch.equal(cos, angles.cos().float()) and torch.equal(sin, angles.sin().float())


@pytest.mark.parametrize("name", ["attn", "mla"])
def test_rotary_table_prefix_gives_the_same_rotation(name):
    """RotaryTable: a sequence within the shared prefix reads a slice of it; the mixer's output is
    exactly that of the table made for its positions (decode steps, longer sequences, float64)."""
    from attnbench.mixers import build_mixer
    from attnbench.mixers.rope import TABLE_POSITIONS

    torch.manual_seed(0)
    dims = dict(kv_lora_rank=8, qk_nope_head_dim=8, v_head_dim=8, rope_dim=4) if name == "mla" else dict(head_dim=8)
    m = build_mixer(name, 32, n_heads=2, impl="torch", **dims)
    x = torch.randn(2, 9, 32)
    cos, sin = m._rotary_prefix
    assert cos.shape[0] == TABLE_POSITIONS and cos.dtype == torch.float32
    assert m.rotary_table(3, 9, torch.float32, "cpu")[0].data_ptr() == cos[3:].data_ptr()  # a view
    sliced = m(x)[0]
    m._rotary_prefix = (cos[:4], sin[:4])  # too short for 9 positions: the table is made for them
    assert m.rotary_table(0, 9, torch.float32, "cpu")[0].data_ptr() != cos.data_ptr()
    assert torch.equal(m(x)[0], sliced)
    m.to(torch.bfloat16)  # a cast keeps the float32 prefix (moves re-fetch it)
    assert m._rotary_prefix[0].dtype == torch.float32 and m._rotary_prefix[0].shape[0] == TABLE_POSITIONS


def test_compiled_attention_reads_the_prefix_not_a_new_table(monkeypatch):
    """Compiled, a training forward makes no table: the slice is an input of the graph (the opaque
    table op per layer cost a compiled H200 step 5-15 ms of idle GPU)."""
    from attnbench.mixers import build_mixer, rope

    torch.manual_seed(0)
    m = build_mixer("attn", 32, n_heads=2, head_dim=8, impl="torch")
    x = torch.randn(2, 16, 32)
    want = m(x)[0]
    made = []
    monkeypatch.setattr(rope, "_table", lambda *a: made.append(a) or (_ for _ in ()).throw(AssertionError))
    torch._dynamo.reset()
    got = torch.compile(m, backend="eager", fullgraph=True)(x)[0]
    assert made == []
    torch.testing.assert_close(got, want)


def test_prefix_is_not_an_inference_tensor():
    """A model built under inference_mode shares its prefix with models that train later."""
    from attnbench.mixers.rope import clear_rope_tables, prefix_table

    clear_rope_tables()
    with torch.inference_mode():
        cos, _ = prefix_table(6, 777.0, "cpu")
    assert not cos.is_inference()
    clear_rope_tables()
