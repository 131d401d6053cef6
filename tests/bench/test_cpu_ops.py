"""bench.cpu_ops: the table runs end to end (tiny shape, one repeat) and names its baselines."""
import math

from attnbench.bench import cpu_ops


def test_cpu_ops_table_on_a_tiny_shape(monkeypatch, capsys):
    # fla's naive_chunk_kda needs T % 64 == 0
    monkeypatch.setattr(cpu_ops, "SHAPE", dict(B=1, T=64, H=2, K=8, V=8))
    cpu_ops.main(["--repeats", "1"])
    out = capsys.readouterr().out
    for case in cpu_ops.CASES:
        assert f"| {case.op} | {case.impl} |" in out
    rows = cpu_ops.run(cpu_ops.CASES[:4], repeats=1)
    assert rows[0]["speedup"] is None and all(math.isfinite(r["ms"]) for r in rows)
    assert all(r["speedup"] > 0 and r["baseline"] == "fla naive_chunk_kda" for r in rows[1:])


def test_missing_library_gives_a_row_not_a_crash():
    case = cpu_ops.delta_rule_case("kda", "nowhere", "no_such_module:fn", "vector", "")
    [row] = cpu_ops.run([case], repeats=1)
    assert math.isnan(row["ms"]) and "not run" in row["note"]
