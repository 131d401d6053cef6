"""The environment record names the code that ran, also in a `git archive` export (no .git)."""
import subprocess
import sys

import pytest

from attnbench import env


def _git(*args):
    return subprocess.run(["git", *args], cwd=env.ROOT, capture_output=True, text=True, check=True).stdout.strip()


def test_checkout_reports_its_own_head():
    commit, dirty = env.source_commit()
    assert commit == _git("rev-parse", "HEAD") and isinstance(dirty, bool)


def test_export_inside_another_repo_reports_the_archived_commit(tmp_path):
    """An export placed inside a repository (as on the GPU machine) must not take that
    repository's HEAD: it reads the commit `git archive` stamped into git_archival.txt."""
    head = _git("rev-parse", "HEAD")
    if "git_archival.txt" not in _git("ls-tree", "--name-only", "HEAD", "attnbench/"):
        pytest.skip("git_archival.txt is not committed yet")
    outer = tmp_path / "outer"
    subprocess.run(["git", "init", "-q", str(outer)], check=True)
    export = outer / "export"
    export.mkdir()
    archive = subprocess.run(["git", "archive", "HEAD", "attnbench"], cwd=env.ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(export)], input=archive.stdout, check=True)
    code = "from attnbench.env import source_commit; print(*source_commit())"
    out = subprocess.run([sys.executable, "-c", code], cwd=export, capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(export)})
    assert out.stdout.split() == [head, "None"]


def test_unstamped_copy_reports_no_commit(tmp_path, monkeypatch):
    monkeypatch.setattr(env, "_git", lambda *args: None)  # no git at all
    stamp = tmp_path / "git_archival.txt"
    stamp.write_text("$Format:%H$\n")
    monkeypatch.setattr(env, "ARCHIVAL", stamp)
    assert env.source_commit() == (None, None)
