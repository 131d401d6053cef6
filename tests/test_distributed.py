"""Data-parallel training on CPU with gloo: DDP and FSDP2 over 2 processes (torchrun, the real
entry point) give the single-process losses with the same global batch, to 1e-5 in float32;
a run checkpointed on 1 process resumes on 2, in both checkpoint formats."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnbench.config import compose
from attnbench.distributed import World, check_batch, eval_rows, step_pieces
from attnbench.train import train
from harness import tiny_overrides

TOL = 1e-5


def overrides(out: Path, cache: Path, *extra: str) -> list[str]:
    """The harness's tiny model as a KDA + MLA hybrid (recurrent state, latent attention, convs)."""
    return [*tiny_overrides(out, cache, steps=6, pattern="KM"), "trainer.eval_every=3",
            "trainer.checkpoint_every=3", *extra]


def torchrun(args: list[str], nproc: int = 2) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "attnbench.cli", "train", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def curve(run: Path) -> dict[int, tuple[float, float | None]]:
    records = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: (r["loss"], r.get("val_loss")) for r in records}


def assert_same_curve(a: Path, b: Path, from_step: int = 1) -> None:
    ca, cb = curve(a), curve(b)
    steps = [s for s in ca if s >= from_step]
    assert steps and steps == [s for s in cb if s >= from_step]
    for s in steps:
        assert ca[s][0] == pytest.approx(cb[s][0], abs=TOL), (s, ca[s], cb[s])
        if ca[s][1] is not None:
            assert ca[s][1] == pytest.approx(cb[s][1], abs=TOL), (s, ca[s], cb[s])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(scope="module")
def single(tmp_path_factory, cache):
    """The single-process reference run (batch 4, 6 steps)."""
    out = tmp_path_factory.mktemp("single") / "run"
    assert train(compose(overrides(out, cache)))["status"] == "finished"
    return out


# ---- how a step's rows are shared -------------------------------------------------------------
@pytest.mark.parametrize("batch,accum,world", [(4, 1, 2), (2, 2, 2), (4, 3, 2), (6, 2, 4), (3, 4, 3), (8, 1, 1)])
def test_ranks_take_disjoint_rows_that_make_the_whole_step(batch, accum, world):
    taken = []
    for rank in range(world):
        for micro, rows in step_pieces(World("ddp", rank, world), batch, accum):
            taken += [(micro, r) for r in range(batch)[rows]]
    assert sorted(taken) == [(m, r) for m in range(accum) for r in range(batch)]
    shares = {len(sum(([0] * (s.stop - s.start) for _, s in step_pieces(World("ddp", r, world), batch, accum)), []))
              for r in range(world)}
    assert shares == {batch * accum // world}
    evaluated = [r for rank in range(world) for r in range(batch)[eval_rows(World("ddp", rank, world), batch)]]
    assert evaluated == list(range(batch))


def test_a_batch_that_does_not_split_is_refused_naming_the_fields():
    with pytest.raises(ValueError, match=r"trainer.batch_size × trainer.grad_accum \(= 6\).*processes \(4\)"):
        check_batch(World("ddp", 0, 4), 3, 2)
    with pytest.raises(ValueError, match="trainer.batch_size"):
        check_batch(World("ddp", 0, 4), 2, 2)


def test_bad_mode_and_fsdp_with_muon_are_refused(tmp_path, cache):
    with pytest.raises(ValueError, match="trainer.distributed must be one of none, ddp, fsdp"):
        compose([*overrides(tmp_path / "a", cache), "trainer.distributed=zero3"])
    with pytest.raises(ValueError, match="optim.name=muon"):
        train(compose([*overrides(tmp_path / "b", cache), "trainer.distributed=fsdp", "optim=muon"]))


# ---- 2 processes == 1 process -----------------------------------------------------------------
def test_ddp_on_2_processes_matches_one_process(tmp_path, cache, single):
    """grad_accum 2 of batch 2 (rank r takes micro-batch r) == one process at batch 4."""
    out = tmp_path / "ddp"
    torchrun([*overrides(out, cache), "trainer.distributed=ddp", "trainer.batch_size=2", "trainer.grad_accum=2",
              "trainer.eval_batches=4"])
    reference = tmp_path / "single_accum"
    train(compose([*overrides(reference, cache), "trainer.batch_size=2", "trainer.grad_accum=2",
                   "trainer.eval_batches=4"]))
    assert_same_curve(reference, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["world_size"] == 2 and summary["distributed"] == "ddp"
    assert summary["tokens_per_s_per_device"] == pytest.approx(summary["tokens_per_s"] / 2)
    assert json.loads((out / "env.json").read_text())["world_size"] == 2


def test_fsdp_on_2_processes_matches_one_process(tmp_path, cache, single):
    """Batch 4 split by rows (2 + 2), parameters sharded: the same curve, a sharded checkpoint."""
    out = tmp_path / "fsdp"
    torchrun([*overrides(out, cache), "trainer.distributed=fsdp"])
    assert_same_curve(single, out)
    shards = sorted(p.name for p in (out / "checkpoints" / "last.dcp").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]  # one shard file per rank
    assert not (out / "checkpoints" / "last.pt").exists()
    # the 2 shards load into one process without FSDP: the finished run re-evaluates to the same loss
    again = train(compose([*overrides(out, cache), "trainer.distributed=none"]))
    assert again["steps_done"] == 6
    assert again["final_val_loss"] == pytest.approx(curve(out)[6][1], abs=TOL)


def test_ddp_on_task_data_weighs_every_scored_position_once(tmp_path, cache):
    """Masked (stack) data: scored positions differ per row (1, 1, 1, 0 in the first batch), so the loss is normalised by
    the count over both ranks, not averaged per rank; the curve equals one process's."""
    task = ["task=stack", "trainer.steps=4"]
    reference, out = tmp_path / "single", tmp_path / "ddp"
    train(compose([*overrides(reference, cache), *task]))
    torchrun([*overrides(out, cache), *task, "trainer.distributed=ddp"])
    assert_same_curve(reference, out)


# ---- resume across world sizes ----------------------------------------------------------------
def interrupt_after(step_limit: int):
    def on_step(step, record):
        if step == step_limit:
            raise KeyboardInterrupt

    return on_step


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_a_run_checkpointed_on_1_process_resumes_on_2(tmp_path, cache, single, mode):
    """1 process to step 4 (checkpoint at 3; full last.pt for ddp, sharded last.dcp for fsdp),
    then torchrun with 2 processes finishes it: steps 4-6 equal the uninterrupted run's."""
    out = tmp_path / mode
    cfg = compose([*overrides(out, cache), f"trainer.distributed={mode}"])
    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_step=interrupt_after(4))
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    assert (out / "checkpoints" / ("last.dcp" if mode == "fsdp" else "last.pt")).exists()
    torchrun([*overrides(out, cache), f"trainer.distributed={mode}"])
    assert json.loads((out / "env.json").read_text())["resumed_from"] == 3
    assert_same_curve(single, out)
