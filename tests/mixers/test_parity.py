import torch

from attnbench.mixers import parity


def test_mixer_parity_rows_on_cpu():
    """SDPA paths run on CPU: their rows must pass; fla/mamba paths must give an error row, not crash."""
    rows = parity.cases("cpu", torch.float32, batch=1, seq_len=24, d_model=256)
    by_op = {}
    for r in rows:
        by_op.setdefault(r["op"], []).append(r)
    assert set(by_op) == set(parity.SETTINGS)
    assert {r["path"] for r in by_op["attn"]} == {"mixer.sdpa"}
    assert {r["path"] for r in by_op["mla"]} == {"mixer.sdpa.unabsorbed"}
    for op in ("attn", "mla"):
        assert [r["quantity"] for r in by_op[op]][:2] == ["output", "dx"]
        params = {f"d{n}" for n, _ in parity.build_mixer(op, 256, **parity.SETTINGS[op]).named_parameters()}
        assert {r["quantity"] for r in by_op[op][2:]} == params
        assert all(r["passed"] and r["rel_rms"] < 1e-5 for r in by_op[op]), by_op[op]
    for op in ("gdn", "kda", "mamba2"):
        assert by_op[op] == [dict(by_op[op][0], quantity="error", passed=False)]
        assert "impl='kernel'" in by_op[op][0]["note"]
