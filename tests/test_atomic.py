"""Atomic outputs under fault injection: a failure or a SIGKILL inside a write leaves no half result.

Every case here breaks *during* the write, after the output path was opened, so each one fails
if ``_atomic.atomic_path`` is made to write straight to its target.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scpermut import _atomic

ASSETS = Path(__file__).resolve().parents[1] / "assets"


class InjectedFault(RuntimeError):
    pass


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_a_failure_inside_a_file_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "summary.json"
    _atomic.write_json(target, {"run": 1})
    before = target.read_bytes()

    with pytest.raises(InjectedFault):
        with _atomic.atomic_path(target) as tmp:
            tmp.write_text('{"run": 2, "half')
            raise InjectedFault

    assert target.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_a_failure_inside_a_folder_write_keeps_the_previous_folder(tmp_path):
    target = tmp_path / "model"
    with _atomic.atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "weights").write_text("old")

    with pytest.raises(InjectedFault):
        with _atomic.atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text("new, half written")
            raise InjectedFault

    assert sorted(p.name for p in target.iterdir()) == ["weights"]
    assert (target / "weights").read_text() == "old"
    assert leftovers(tmp_path) == []


def test_a_failure_before_the_first_write_creates_nothing(tmp_path):
    target = tmp_path / "out" / "prepared.h5ad"
    with pytest.raises(InjectedFault):
        with _atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"\x89HDF")
            raise InjectedFault
    assert not target.exists()
    assert leftovers(target.parent) == []


def test_a_failure_inside_a_set_write_keeps_every_previous_file(tmp_path):
    h5ad, summary = tmp_path / "prepared.h5ad", tmp_path / "prepare_summary.json"
    with _atomic.atomic_paths(h5ad, summary) as (h5ad_tmp, summary_tmp):
        h5ad_tmp.write_text("old data")
        summary_tmp.write_text("old summary")

    with pytest.raises(InjectedFault):
        with _atomic.atomic_paths(h5ad, summary) as (h5ad_tmp, summary_tmp):
            summary_tmp.write_text("new summary")
            h5ad_tmp.write_text("new, half")
            raise InjectedFault

    assert (h5ad.read_text(), summary.read_text()) == ("old data", "old summary")
    assert leftovers(tmp_path) == []


def test_a_successful_write_replaces_a_folder_with_a_folder(tmp_path):
    target = tmp_path / "model"
    for content in ("first", "second"):
        with _atomic.atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text(content)
    assert (target / "weights").read_text() == "second"
    assert leftovers(tmp_path) == []


# A child process runs the real CLI and SIGKILLs itself halfway through writing the h5ad:
# the bytes written so far land in whatever path the step opened.
KILL_DURING_H5AD_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import anndata

    def write_half_then_die(self, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\\x89HDF\\r\\n\\x1a\\n half of a file")
        os.kill(os.getpid(), signal.SIGKILL)

    anndata.AnnData.write_h5ad = write_half_then_die
    from scpermut.cli import main
    sys.argv = ["scpermut", *sys.argv[1:]]
    main()
    """
)


def run_cli(*args: str, kill_during_write: bool) -> subprocess.CompletedProcess:
    if kill_during_write:
        command = [sys.executable, "-c", KILL_DURING_H5AD_WRITE, *args]
    else:
        command = [sys.executable, "-m", "scpermut", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def qc_args(outdir: Path, *extra: str) -> list[str]:
    return [
        "qc", str(ASSETS / "test_data" / "kang_ctrl101.h5ad"), "--sample", "ctrl101",
        "--outdir", str(outdir), "--min_genes", "100", *extra,
    ]


def test_qc_killed_while_writing_its_h5ad_leaves_no_h5ad(tmp_path):
    killed = run_cli(*qc_args(tmp_path), kill_during_write=True)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "ctrl101.qc.h5ad").exists()


def test_qc_killed_while_rewriting_keeps_the_previous_h5ad_intact(tmp_path):
    first = run_cli(*qc_args(tmp_path), kill_during_write=False)
    assert first.returncode == 0, first.stderr
    h5ad = tmp_path / "ctrl101.qc.h5ad"
    before = digest(h5ad)

    killed = run_cli(*qc_args(tmp_path, "--min_genes", "150"), kill_during_write=True)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert digest(h5ad) == before
    import anndata as ad

    assert ad.read_h5ad(h5ad).n_obs > 0


def prepare_args(qc_dir: Path, outdir: Path, *extra: str) -> list[str]:
    inputs = [str(path) for path in sorted(qc_dir.glob("*.qc.h5ad"))]
    return ["prepare", *inputs, "--outdir", str(outdir), "--n_top_genes", "300", *extra]


def finished_files(folder: Path) -> dict[str, str]:
    """Digest of every file under its final name (a SIGKILL can leave a hidden ``.*.tmp.*`` file: no result)."""
    return {path.name: digest(path) for path in folder.iterdir() if ".tmp" not in path.name}


def test_prepare_killed_while_writing_its_h5ad_leaves_no_h5ad(tmp_path, qc_dir):
    killed = run_cli(*prepare_args(qc_dir, tmp_path), kill_during_write=True)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "prepared.h5ad").exists()
    assert all(name.startswith(".") for name in leftovers(tmp_path))


def test_prepare_killed_while_rewriting_keeps_the_previous_h5ad_intact(tmp_path, qc_dir):
    first = run_cli(*prepare_args(qc_dir, tmp_path), kill_during_write=False)
    assert first.returncode == 0, first.stderr
    before = digest(tmp_path / "prepared.h5ad")

    killed = run_cli(*prepare_args(qc_dir, tmp_path, "--n_top_genes", "200"), kill_during_write=True)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert digest(tmp_path / "prepared.h5ad") == before
    import anndata as ad

    assert ad.read_h5ad(tmp_path / "prepared.h5ad").n_obs > 0


# A step's outputs are one set (``_atomic.atomic_paths``): killed while writing its h5ad, a step
# leaves neither a new summary beside no h5ad nor a new summary beside the previous h5ad.


def test_prepare_killed_while_writing_leaves_no_summary_of_a_missing_h5ad(tmp_path, qc_dir):
    killed = run_cli(*prepare_args(qc_dir, tmp_path), kill_during_write=True)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert finished_files(tmp_path) == {}


def test_prepare_killed_while_rewriting_keeps_every_previous_output(tmp_path, qc_dir):
    first = run_cli(*prepare_args(qc_dir, tmp_path), kill_during_write=False)
    assert first.returncode == 0, first.stderr
    before = finished_files(tmp_path)

    killed = run_cli(*prepare_args(qc_dir, tmp_path, "--n_top_genes", "200"), kill_during_write=True)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert finished_files(tmp_path) == before


def test_qc_killed_while_rewriting_keeps_every_previous_output(tmp_path):
    first = run_cli(*qc_args(tmp_path), kill_during_write=False)
    assert first.returncode == 0, first.stderr
    before = finished_files(tmp_path)

    killed = run_cli(*qc_args(tmp_path, "--min_genes", "150"), kill_during_write=True)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert finished_files(tmp_path) == before
