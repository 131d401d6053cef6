"""fla's autotune choices in fla's own config-file format, so that a fresh GPU machine compiles
one config per kernel instead of compiling and timing every candidate (chunk_kda's first
forward+backward autotuned for ~2 minutes on a fresh H200).

fla 0.6's kernels are ``CachedAutotuner``s (fla/ops/utils/cache.py): with FLA_CACHE_MODE=fuzzy
in the environment when fla is imported (read once, then) and FLA_CONFIG_DIR set (scripts/
gpu_env.sh exports both), a kernel looks in ``$FLA_CONFIG_DIR/<kernel>.json`` for its key: the
exact key, else the FIRST entry whose key has the same structure (numbers may differ; dtypes and
flags may not). fla ships no files for our cards: ``dump`` writes them from the choices a warmed
process holds (each Autotuner's ``cache``: {key tuple: triton.Config}); scripts/warm_kernels.py
calls it after every item it runs (files are replaced whole, never half-written). Plain
``triton.autotune`` kernels (some of fla's, all of mamba_ssm's) never read them: warm_kernels.py
keeps Triton's own ``*.autotune.json`` choices for those (same Triton build only).

    python -m attnbench.bench.kernel_configs show DIR          # kernels and entries in a folder
    python -m attnbench.bench.kernel_configs merge OUT SRC...  # add SRC folders' entries to OUT
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import sys
from pathlib import Path

INDEX = "index.json"  # card, versions, date, counts; fla only ever opens <kernel_name>.json


def autotuners(prefix: str = "fla") -> list:
    """Each triton Autotuner in loaded ``prefix`` modules' globals, once; @heuristics(@autotune(f))'s is its .fn."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import KernelInterface

    found = {}
    for name, module in list(sys.modules.items()):
        if module is not None and (name == prefix or name.startswith(prefix + ".")):
            for obj in list(vars(module).values()):
                for _ in range(4):
                    if not isinstance(obj, KernelInterface):
                        break
                    if isinstance(obj, Autotuner):
                        found[id(obj)] = obj
                    obj = getattr(obj, "fn", None)
    return list(found.values())


def tuned(prefix: str = "fla") -> tuple[int, int]:
    """(autotuners holding at least one choice, choices in all): a warm-up's progress so far
    (choices fla loaded from FLA_CONFIG_DIR count too)."""
    sizes = [len(getattr(t, "cache", None) or {}) for t in autotuners(prefix)]
    return sum(1 for n in sizes if n), sum(sizes)


def _write(path: Path, data) -> None:
    """Replace ``path`` whole: a writer killed mid-way leaves the old file, never half a new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def kernel_name(tuner) -> str:
    """The file stem fla looks up, computed as CachedAutotuner computes it."""
    fn = tuner.fn
    return getattr(tuner, "kernel_name", None) or (fn.fn.__name__ if hasattr(fn, "fn") else fn.__name__)


def config_dict(cfg) -> dict:
    """A triton.Config as maybe_load_cached_config reads it (getattr: Triton 3.6 and 3.9 differ)."""
    ir = getattr(cfg, "ir_override", None)
    return {"kwargs": dict(getattr(cfg, "kwargs", {}) or {}), "num_warps": getattr(cfg, "num_warps", 4),
            "num_stages": getattr(cfg, "num_stages", 3), "num_ctas": getattr(cfg, "num_ctas", 1) or 1,
            "maxnreg": getattr(cfg, "maxnreg", None), "ir_override": ir if isinstance(ir, str) else None}


def entries(tuner) -> dict[str, dict]:
    """{fla's hash of the key: {"autotune_key", "config"}} per key this process tuned. Left out:
    keys fla resolved from FLA_CONFIG_DIR (loaded, not measured: with FLA_CACHE_MODE=fuzzy a
    dump holds only new measurements), keys JSON cannot hold, configs with a pre_hook (fla drops
    hooks when it loads a config)."""
    from fla.ops.utils.cache import AutotuneKey, load_cached_config

    out = {}
    for key, cfg in list(getattr(tuner, "cache", {}).items()):
        entry = {"autotune_key": list(key), "config": config_dict(cfg)}
        try:
            json.dumps(entry)
        except (TypeError, ValueError):
            continue
        if getattr(cfg, "pre_hook", None) is None and load_cached_config(kernel_name(tuner), AutotuneKey(key)) is None:
            out[AutotuneKey.key_hash(key)] = entry
    return out


def _size(entry: dict) -> float:
    """Product of the key's numbers (bools aside): the benchmarks' shapes are the largest keys."""
    numbers = [v for v in entry["autotune_key"] if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return math.prod(abs(v) or 1 for v in numbers)


def write_kernel(out: Path, name: str, new: dict[str, dict], triton_version: str | None) -> None:
    """Add ``new`` to ``out/<name>.json`` (entries already there win), largest key first, since
    fla's fuzzy lookup takes the first entry that matches; default_config is that first entry's."""
    path = out / f"{name}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    both = {**new, **(old.get("autotune_entries") or {})}
    ordered = dict(sorted(both.items(), key=lambda kv: (-_size(kv[1]), kv[0])))
    first = next(iter(ordered.values()), None)
    _write(path, {"kernel_name": name, "triton_version": old.get("triton_version") or triton_version,
                  "autotune_entries": ordered, "default_config": first and first["config"]})


def counts(folder) -> dict[str, int]:
    """{kernel: entries} of the config files in a folder."""
    return {p.stem: len(json.loads(p.read_text()).get("autotune_entries") or {})
            for p in sorted(Path(folder).glob("*.json")) if p.name != INDEX}


def write_index(out: Path, fields: dict) -> dict[str, int]:
    """index.json: what is there already, ``fields``, and {kernel: entries} of the files in ``out``."""
    path = out / INDEX
    index = {**(json.loads(path.read_text()) if path.exists() else {}), **fields, "kernels": counts(out)}
    _write(path, index)
    return index["kernels"]


@functools.lru_cache(maxsize=1)
def _environment() -> dict:  # once a process: a warm-up dumps after every item
    from attnbench.env import environment

    return {k: environment().get(k) for k in ("device", "date", "torch", "triton", "fla", "mamba_ssm", "git_commit")}


def dump(out_dir) -> dict[str, int]:
    """Write this process's tuned choices of fla's CachedAutotuners to ``out_dir`` (adding to what
    an earlier dump of the same process wrote there). index.json also counts the keys tuned by
    plain autotuners (fla's others, mamba_ssm's), which these miss."""
    import triton
    from fla.ops.utils.cache import CachedAutotuner

    (out := Path(out_dir)).mkdir(parents=True, exist_ok=True)
    cached, plain = {}, {}
    for tuner in autotuners("fla") + autotuners("mamba_ssm"):
        if isinstance(tuner, CachedAutotuner) and tuner.cache:
            cached.setdefault(kernel_name(tuner), {}).update(entries(tuner))
        elif getattr(tuner, "cache", None):
            plain[kernel_name(tuner)] = plain.get(kernel_name(tuner), 0) + len(tuner.cache)
    cached = {name: found for name, found in sorted(cached.items()) if found}
    for name, found in cached.items():
        write_kernel(out, name, found, triton.__version__)
    write_index(out, {**_environment(), "fla_cache_mode": os.environ.get("FLA_CACHE_MODE", "disabled"),
                      "plain_autotuned": plain})
    return {name: len(found) for name, found in cached.items()}


def merge(out_dir, sources) -> dict[str, int]:
    """Union of config folders (and their triton_autotune/) into ``out_dir``: entries already
    there win, then the first source's."""
    (out := Path(out_dir)).mkdir(parents=True, exist_ok=True)
    fields: dict = {"plain_autotuned": {}}
    for triton_files in (Path(src) / "triton_autotune" for src in sources):
        if triton_files.is_dir():
            shutil.copytree(triton_files, out / "triton_autotune", dirs_exist_ok=True)
    for path in (p for src in sources for p in sorted(Path(src).glob("*.json"))):
        data = json.loads(path.read_text())
        if path.name == INDEX:
            fields["plain_autotuned"].update(data.pop("plain_autotuned", {}))
            fields = {**data, **fields}
        else:
            write_kernel(out, path.stem, data.get("autotune_entries") or {}, data.get("triton_version"))
    return write_index(out, fields)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m attnbench.bench.kernel_configs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["show", "merge"], help="show DIR, or merge OUT SRC...")
    ap.add_argument("dirs", nargs="+", metavar="DIR")
    args = ap.parse_args(argv)
    found = merge(args.dirs[0], args.dirs[1:]) if args.cmd == "merge" else counts(args.dirs[0])
    for name, n in found.items():
        print(f"{n:4d}  {name}")
    print(f"{len(found)} kernels, {sum(found.values())} entries")


if __name__ == "__main__":
    main()
