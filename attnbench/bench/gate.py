"""The parity gate: which kernel path each layer ran, and whether the GPU parity run
(``bench.parity``'s kernel_status.json) passed it. A benchmark refuses, never times, a layer
whose path failed; ``--strict-parity`` also refuses a path that no row checked.
"""
from __future__ import annotations

import json
from pathlib import Path

from attnbench.ops.short_conv import kernel as conv_kernel

# mixer -> the op names its parity rows use (the driver's crash row uses the package name)
MIXER_OPS = {"attn": ("attention",), "mla": ("mla",), "gdn": ("gdn", "gated_delta_rule"), "mamba2": ("ssd",),
             "kda": ("kda",)}
# kernels that run around a mixer's main op, each with its own parity op: impl_ran ends in
# "+<path>" when one ran ("fla.chunk_kda+fla.causal_conv1d_gluon": ops/short_conv's Gluon kernel did)
COMPONENT_OPS = {path: "short_conv" for path in conv_kernel.PATHS}


def layer_impls(model) -> list[tuple[str, str | None]]:
    """[(mixer name, impl_ran)] per layer of an attnbench LM."""
    return list(zip(model.layer_names, model.impls_ran()))


def impls_text(impls: list[tuple[str, str | None]]) -> str:
    """'0:kda=fla.chunk_kda 1:kda=... 3:mla=sdpa.unabsorbed' (one entry per layer)."""
    return " ".join(f"{i}:{name}={impl}" for i, (name, impl) in enumerate(impls))


class ParityGate:
    """Reads kernel_status.json ({"paths": {"<op>/<path>": {"passed": bool, ...}}}).

    A layer's path is "<op>/<impl_ran>" with op from MIXER_OPS. A status entry covers it when its
    path equals impl_ran, prefixes it ("ssd/mamba_ssm" covers "ssd/mamba_ssm.chunk_scan"), or is
    "(all)" (the driver's row when an op's parity crashed). torch.* impls are the references
    themselves and need no check. A component suffix (COMPONENT_OPS) is checked under its own
    op: "fla.chunk_kda+fla.causal_conv1d" needs both "kda/fla.chunk_kda" and
    "short_conv/fla.causal_conv1d"; either one failed refuses the layer.
    """

    def __init__(self, path: str | None = None, strict: bool = False):
        self.path, self.strict = path, strict
        self.paths: dict[str, dict] = {}
        if path is not None:
            data = json.loads(Path(path).read_text())
            if "paths" not in data:
                raise ValueError(f"--parity {path}: not a kernel_status.json (no 'paths' key)")
            self.paths = data["paths"]

    def covering(self, ops: tuple[str, ...], impl: str) -> list[tuple[str, bool]]:
        found = []
        for key, status in self.paths.items():
            key_op, _, key_path = key.partition("/")
            if key_op in ops and (key_path in (impl, "(all)") or impl.startswith(key_path + ".")):
                found.append((key, bool(status.get("passed", False))))
        return found

    def verdict(self, impls: list[tuple[str, str | None]]) -> tuple[bool, str]:
        """(allowed, text): text is 'no gate', 'reference', 'passed', 'unchecked: ...' or 'failed: ...'."""
        if self.path is None:
            return True, "no gate"
        failed, unchecked, checked = set(), set(), False
        for name, impl in impls:
            if impl is None or impl.startswith("torch") or impl == "none":
                continue
            for ops, path in split_impl(MIXER_OPS.get(name, (name,)), impl):
                found = self.covering(ops, path)
                checked = checked or bool(found)
                failed.update(key for key, ok in found if not ok)
                if not found:
                    unchecked.add(f"{ops[0]}/{path}")
        if failed:
            return False, "failed: " + ",".join(sorted(failed))
        if unchecked:
            return not self.strict, "unchecked: " + ",".join(sorted(unchecked))
        return True, "passed" if checked else "reference"


def split_impl(ops: tuple[str, ...], impl: str) -> list[tuple[tuple[str, ...], str]]:
    """[(ops, path)] to check for one layer: its main op's path, then each component that ran.
    'fla.chunk_kda+fla.causal_conv1d' -> [(ops, 'fla.chunk_kda'), (('short_conv',), 'fla.causal_conv1d')]."""
    parts = []
    for path, op in COMPONENT_OPS.items():
        if impl.endswith(f"+{path}"):
            impl = impl[:-len(path) - 1]
            parts.append(((op,), path))
    return [(ops, impl), *parts]


def refused_note(verdict: str) -> str:
    print(f"refused: parity failed ({verdict})" if verdict.startswith("failed")
          else f"refused: parity not checked ({verdict})")
    return verdict
