import torch

from attnbench.mixers import parity


def test_mixer_parity_rows_on_cpu():
    """SDPA paths run on CPU: their rows must pass; fla/mamba paths must give an error row, not crash."""
    rows = parity.cases("cpu", torch.float32, batch=1, seq_len=24, d_model=256)
    by_op = {}
    for r in rows:
        by_op.setdefault(r["op"], []).append(r)
    assert set(by_op) == {name for name, _ in parity.SETTINGS}
    options = dict(parity.SETTINGS[:2])  # attn and mla
    assert {r["path"] for r in by_op["attn"]} == {"mixer.sdpa"}
    assert {r["path"] for r in by_op["mla"]} == {"mixer.sdpa.unabsorbed"}
    for op in ("attn", "mla"):
        assert [r["quantity"] for r in by_op[op]][:2] == ["output", "dx"]
        params = {f"d{n}" for n, _ in parity.build_mixer(op, 256, **options[op]).named_parameters()}
        assert {r["quantity"] for r in by_op[op][2:]} == params
        assert all(r["passed"] and r["rel_rms"] < 1e-5 for r in by_op[op]), by_op[op]
    for op, n_settings in (("gdn", 2), ("kda", 2), ("mamba2", 1)):  # gdn, kda: plain and fuse_inputs=True
        assert len(by_op[op]) == n_settings, by_op[op]  # one error row per setting
        for row in by_op[op]:
            assert row["quantity"] == "error" and not row["passed"] and "impl='kernel'" in row["note"]
