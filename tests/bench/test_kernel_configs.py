"""kernel_configs writes files that fla's own reader finds: a real CachedAutotuner (built on CPU,
never launched) with a hand-filled cache is dumped, then fla's KernelConfigFile and a fresh
autotuner's maybe_load_cached_config must return the same config. warm_kernels.py on a CPU
reports every worker as 'no CUDA' and exits 0; its workers (one per kernel family: chunk_kda one
per shape, running kda then kda_raw) save after every item, so a worker cut mid-way keeps what it
finished."""
from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")
cache_mod = pytest.importorskip("fla.ops.utils.cache")

from attnbench.bench import kernel_configs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [triton.Config({"BK": 32}, num_warps=4, num_stages=2), triton.Config({"BK": 64}, num_warps=8, num_stages=3)]


@triton.jit
def fake_kernel_for_test(x, y, H: tl.constexpr, K, BK: tl.constexpr):
    pass  # never launched: only its autotuner's cache is read


def make_tuner():
    """@heuristics(@fla_cache_autotune(@jit)), as fla stacks its decorators."""
    tuner = cache_mod.fla_cache_autotune(configs=CONFIGS, key=["H", "K"])(fake_kernel_for_test)
    return tuner, triton.heuristics({"EXTRA": lambda args: 1})(tuner)


@pytest.fixture
def fake_fla_module(monkeypatch):
    tuner, wrapped = make_tuner()
    module = types.ModuleType("fla.ops.fake_for_test")
    module.fake_kernel_for_test = wrapped
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(cache_mod, "FLA_CACHE_MODE", cache_mod.FlaCacheMode.DISABLED)  # as fla reads it at import
    cache_mod.load_config_file.cache_clear()
    yield tuner
    cache_mod.load_config_file.cache_clear()


def test_dump_is_read_back_by_fla(fake_fla_module, tmp_path, monkeypatch):
    tuner = fake_fla_module
    small, large = (4, 128, "torch.bfloat16", "torch.float32"), (16, 128, "torch.bfloat16", "torch.float32")
    tuner.cache[small], tuner.cache[large] = CONFIGS[0], CONFIGS[1]
    summary = kernel_configs.dump(tmp_path)
    assert summary["fake_kernel_for_test"] == 2
    data = json.loads((tmp_path / "fake_kernel_for_test.json").read_text())
    assert [e["autotune_key"] for e in data["autotune_entries"].values()][0] == list(large)  # largest first
    assert data["default_config"]["kwargs"] == {"BK": 64}
    index = json.loads((tmp_path / kernel_configs.INDEX).read_text())
    assert index["kernels"]["fake_kernel_for_test"] == 2 and "triton" in index

    file = cache_mod.KernelConfigFile.from_file(tmp_path / "fake_kernel_for_test.json")
    for key, cfg in ((small, CONFIGS[0]), (large, CONFIGS[1])):
        found = file.lookup_exact(cache_mod.AutotuneKey(key))["config"]
        assert (found["kwargs"], found["num_warps"], found["num_stages"]) == (cfg.kwargs, cfg.num_warps, cfg.num_stages)
    fuzzy = file.lookup_fuzzy(cache_mod.AutotuneKey((8, 64, "torch.bfloat16", "torch.float32")))
    assert fuzzy["config"]["kwargs"] == {"BK": 64}  # an unseen shape takes the largest key's config
    assert file.lookup_fuzzy(cache_mod.AutotuneKey((8, 64, "torch.float16", "torch.float32"))) is None

    # The path a kernel call takes: a fresh autotuner loads the config into its own cache.
    monkeypatch.setattr(cache_mod, "FLA_CACHE_MODE", cache_mod.FlaCacheMode.FUZZY)
    monkeypatch.setenv("FLA_CONFIG_DIR", str(tmp_path))
    cache_mod.load_config_file.cache_clear()
    fresh, _ = make_tuner()
    fresh.maybe_load_cached_config(cache_mod.AutotuneKey(small), nargs={}, runtime_kwargs={})
    loaded = fresh.cache[small]
    assert (loaded.kwargs, loaded.num_warps, loaded.num_stages) == ({"BK": 32}, 4, 2)

    # A dump under FLA_CACHE_MODE=fuzzy keeps only what was measured: keys fla resolved from the
    # folder (exactly, or by structure) are left out; a key of another structure is new.
    fresh.cache[(8, 64, "torch.bfloat16", "torch.float32")] = CONFIGS[0]  # fuzzy-loaded
    fresh.cache[(8, 64, "torch.float16", "torch.float32")] = CONFIGS[0]  # tuned here
    monkeypatch.setitem(sys.modules, "fla.ops.fake_for_test", types.SimpleNamespace(k=fresh))
    assert kernel_configs.dump(tmp_path / "new") == {"fake_kernel_for_test": 1}


def test_merge_keeps_both_workers_entries(fake_fla_module, tmp_path):
    tuner = fake_fla_module
    tuner.cache[(4, 128, "torch.bfloat16")] = CONFIGS[0]
    kernel_configs.dump(tmp_path / "a")
    tuner.cache.clear()
    tuner.cache[(16, 128, "torch.bfloat16")] = CONFIGS[1]
    kernel_configs.dump(tmp_path / "b")
    assert kernel_configs.merge(tmp_path / "all", [tmp_path / "a", tmp_path / "b"])["fake_kernel_for_test"] == 2


def test_gpu_env_names_the_folder_as_fla_does():
    """gpu_env.sh names the committed folder in bash; it must agree with fla's sanitize_gpu_name."""
    for name in ("NVIDIA H200", "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "  "):
        bash = subprocess.run(["bash", "-c", f'source <(grep -A2 "^sanitize_gpu_name()" scripts/gpu_env.sh); '
                               f'sanitize_gpu_name "{name}"'], cwd=REPO, capture_output=True, text=True)
        assert bash.stdout.strip() == cache_mod.sanitize_gpu_name(name), bash.stderr


def test_warm_kernels_without_cuda(tmp_path):
    done = subprocess.run([sys.executable, "scripts/warm_kernels.py", "--out", str(tmp_path / "cfg"),
                           "--groups", "kda,ssd", "--shapes", "train"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "chunk_kda@train" in done.stdout and "ssd" in done.stdout and "no CUDA" in done.stdout
    bad = subprocess.run([sys.executable, "scripts/warm_kernels.py", "--groups", "nope"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "nope" in bad.stderr


@pytest.fixture
def warm(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import warm_kernels

    return warm_kernels


@pytest.fixture
def warm_worker(warm):
    import warm_worker

    return warm_worker


def test_workers_are_kernel_families(warm):
    """kda and kda_raw share chunk_kda's core kernels at a shape (H is a constexpr: another shape is
    another compile): one worker a shape runs both, the benchmarks' shapes first."""
    assert warm.units(list(warm.GROUPS), ["parity", "wide", "train"]) == [
        "chunk_kda@train", "chunk_kda@wide", "chunk_kda@parity", "recurrent", "gdn", "ssd", "short_conv", "fla_model"]
    assert warm.units(["ssd", "kda_raw"], ["parity"]) == ["chunk_kda@parity", "ssd"]
    assert warm.units(["fla_model", "recurrent"], list(warm.SHAPES)) == ["recurrent", "fla_model"]
    labels = [label for label, _, _ in warm.items_of("chunk_kda@wide", ["kda", "kda_raw"])]  # built, not run
    assert labels == ["import fla.ops.kda", "kda fwd B=8 T=2048 H=16", "kda fwd+bwd B=8 T=2048 H=16",
                      "kda_raw fwd B=8 T=2048 H=16", "kda_raw fwd+bwd B=8 T=2048 H=16",
                      "kda prefill fwd B=1 T=4096 H=16, state in and out",
                      "kda_raw prefill fwd B=1 T=4096 H=16, state in and out"]
    labels = [label for label, _, _ in warm.items_of("chunk_kda@parity", ["kda_raw"])]
    assert labels[1:] == ["kda_raw fwd B=2 T=1000 H=8", "kda_raw fwd+bwd B=2 T=1000 H=8",
                          "kda_raw fwd+bwd B=2 T=1000 H=8, state in and out (parity)"]
    ssd = [label for label, _, _ in warm.items_of("ssd", [])]
    assert ssd.index("chunk scan fwd+bwd B=8 T=2048 H=32") < min(i for i, x in enumerate(ssd) if "parity" in x)


def test_worker_saves_after_every_item(warm, warm_worker, fake_fla_module, tmp_path, capsys):
    """The second item finds the first one's choice already on disk, and the status file says
    where the worker is; a cut item ends the run, and what came before it stays saved."""
    tuner, unit, seen = fake_fla_module, "chunk_kda@train", {}

    def tune():
        tuner.cache[(8, 128, "torch.bfloat16", "torch.float32")] = CONFIGS[1]

    def look():
        seen["file"] = (tmp_path / unit / "fake_kernel_for_test.json").exists()
        seen["status"] = json.loads((tmp_path / f"{unit}.status.json").read_text())

    def cut():
        raise TimeoutError("at the time limit")

    items = [("tune", tune, False), ("look", look, False), ("compile", cut, False), ("never", look, False)]
    record = warm_worker.work(unit, iter(items), tmp_path)
    assert seen["file"] and seen["status"]["at"] == "look" and seen["status"]["kernels"] == 1
    assert not seen["status"]["final"] and [d[0] for d in seen["status"]["items"]] == ["tune"]
    assert record["final"] and record["kernels"] == 1 and "compile: cut at the time limit" in record["status"]
    assert [d[0] for d in record["items"]] == ["tune", "look", "compile"]
    assert "fla autotuners with a choice: 1 (1 keys); 1 kernels saved" in capsys.readouterr().out

    # A worker killed inside an item: the parent's row says where, from the last status written.
    seen["status"]["at"] = "compile"
    (tmp_path / f"{unit}.status.json").write_text(json.dumps(seen["status"]))
    row, = warm.summarise([unit], {unit: "killed past its time limit"}, tmp_path)
    assert row["status"] == "killed past its time limit in 'compile'; 1 items ok before, last 'tune'"
    assert row["kernels"] == 1
    merged = kernel_configs.merge(tmp_path / "out", [tmp_path / unit])
    assert merged == {"fake_kernel_for_test": 1}


def test_plain_autotuners_are_counted_not_written(fake_fla_module, tmp_path, monkeypatch):
    """fla never reads files for plain triton.autotune kernels: index.json lists them instead."""
    plain = triton.autotune(configs=CONFIGS, key=["H"])(fake_kernel_for_test)
    plain.cache[(4, "torch.bfloat16")] = CONFIGS[0]
    monkeypatch.setitem(sys.modules, "fla.ops.fake_plain_for_test", types.SimpleNamespace(k=plain))
    assert kernel_configs.dump(tmp_path) == {}
    assert json.loads((tmp_path / kernel_configs.INDEX).read_text())["plain_autotuned"] == {"fake_kernel_for_test": 1}
