"""The worker side of scripts/warm_kernels.py: one process per unit (a family of compiled
kernels), which runs its items (scripts/warm_items.py) in order under a time limit and, after
every item, saves the fla autotune choices so far and a status record, so that a worker cut or
killed mid-compile keeps what it finished. warm_kernels.py starts it as
    python scripts/warm_kernels.py --worker UNIT --out DIR --time-limit S --groups G,...
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path


def _alarm(signum, _frame):
    raise TimeoutError("at the time limit" if signum == signal.SIGALRM else "stopped by warm_kernels.py")


def held(fn):
    """fn() with SIGALRM and SIGTERM held back until it returns (a save is never cut half-way)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGTERM})
    try:
        return fn()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Saver:
    """After every item: the fla choices so far into out/<unit>/ (kernel_configs.dump), and
    out/<unit>.status.json (final=False until the worker ends), so a worker killed mid-compile
    leaves what it finished and where it was."""

    def __init__(self, unit: str, out: Path):
        self.unit, self.out, self.t0 = unit, Path(out), time.time()
        self.kernels, self.error = None, None
        self.out.mkdir(parents=True, exist_ok=True)

    def status(self, done: list, at: str | None = None, status: str = "running", final: bool = False) -> None:
        record = {"seconds": round(time.time() - self.t0, 1), "status": status, "kernels": self.kernels,
                  "at": at, "final": final, "items": done}
        path = self.out / f"{self.unit}.status.json"
        tmp = path.with_name(f".{path.name}.tmp")
        held(lambda: (tmp.write_text(json.dumps(record, indent=1)), os.replace(tmp, path)))

    def save(self) -> str:
        """Dump; the progress note for the item's line."""
        try:
            from attnbench.bench import kernel_configs

            self.kernels = len(held(lambda: kernel_configs.dump(self.out / self.unit)))
            tuners, keys = kernel_configs.tuned("fla")
            return f"fla autotuners with a choice: {tuners} ({keys} keys); {self.kernels} kernels saved"
        except TimeoutError:  # the limit, arriving once the save is done: the item loop stops
            raise
        except Exception as exc:  # noqa: BLE001  e.g. no fla: the worker goes on
            first = self.error is None
            self.error = f"{type(exc).__name__}: {str(exc)[:200]}"
            return f"configs not saved ({self.error})" if first else ""


def run_items(unit: str, items, saver: Saver | None = None) -> list[tuple[str, float, str]]:
    """Run (label, fn, may_refuse) items in order, printing each one's time (and, with a saver,
    saving and printing the progress) as it ends."""
    import torch

    done = []
    try:
        for label, fn, may_refuse in items:
            if saver:
                saver.status(done, at=label)
            t0 = time.time()
            try:
                fn()
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                status = "ok"
            except TimeoutError as exc:
                done.append((label, round(time.time() - t0, 1), f"cut {exc}"))
                raise
            except Exception as exc:  # noqa: BLE001  one failed path must not hide the others
                refused = may_refuse and isinstance(exc, RuntimeError)  # fla refusing a kernel it knows is wrong here
                status = f"{'refused (expected here)' if refused else 'FAILED'} {type(exc).__name__}: {str(exc)[:240]}"
            done.append((label, round(time.time() - t0, 1), status))
            note = ""
            try:
                note = saver.save() if saver else ""
            finally:  # the line even when the limit arrives during the save
                parts = [f"{done[-1][1]:.1f} s", "" if status == "ok" else status, note]
                print(f"[{unit}] {label}: {'; '.join(p for p in parts if p)}", flush=True)
            if label.startswith("import") and status != "ok":
                break  # nothing after it can run
    except TimeoutError as exc:
        if not done or not done[-1][2].startswith("cut "):  # cut between items
            done.append(("(between items)", 0.0, f"cut {exc}"))
        print(f"[{unit}] cut {exc}, at {done[-1][0]}", flush=True)
    except Exception as exc:  # noqa: BLE001  an import or setup error of the whole group
        done.append(("(setup)", 0.0, f"FAILED {type(exc).__name__}: {str(exc)[:240]}"))
        print(f"[{unit}] FAILED {type(exc).__name__}: {exc}", flush=True)
    return done


def work(unit: str, items, out: Path) -> dict:
    """Run a worker's items, saving after each; the final status record (also written to disk)."""
    saver = Saver(unit, out)
    done = run_items(unit, items, saver)
    return held(lambda: finish(saver, done))


def finish(saver: Saver, done: list) -> dict:
    """Save once more (after a cut: what the cut item finished before it) and write the final
    record. Runs with the signals held; a limit or a stop arriving now is ignored."""
    if signal.getsignal(signal.SIGALRM) is _alarm:  # worker()'s handlers, not a test's
        signal.alarm(0)
    for signum in (signal.SIGALRM, signal.SIGTERM):
        if signal.getsignal(signum) is _alarm:
            signal.signal(signum, signal.SIG_IGN)  # one already pending is dropped, not raised
    failed = [d for d in done if d[2] != "ok" and not d[2].startswith("refused")]
    status = f"{len(failed)} of {len(done)} failed, first: {failed[0][0]}: {failed[0][2]}"[:200] if failed else "ok"
    saver.save()
    if saver.error:
        status += f"; configs not saved ({saver.error})"
    saver.status(done, status=status, final=True)
    return json.loads((saver.out / f"{saver.unit}.status.json").read_text())


def worker(unit: str, out: Path, time_limit: float, make_items) -> None:
    """The worker process: the time limit (SIGALRM) and SIGTERM cut it via _alarm, then work()."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGTERM, _alarm)  # the parent stopping early: save what was tuned, as at the limit
    signal.alarm(max(1, int(time_limit)))
    work(unit, make_items(), Path(out))
