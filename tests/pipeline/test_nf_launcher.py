"""``bin/scpermut`` runs the installed package, or the checkout's source only when asked."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from nextflow_text import (
    block_after,
    strip_comments,
)
from nf_contract import (
    BIN,
    CONFIG_FILES,
    REPO,
    task_environment,
)

# --------------------------------------------------------------------------------------
# The launcher in bin/
# --------------------------------------------------------------------------------------


def pipeline_with_marked_source(root: Path) -> Path:
    """A copy of bin/scpermut next to a src/ whose `scpermut.cli.main` only says who it is."""
    (root / "bin").mkdir(parents=True)
    shutil.copy(BIN / "scpermut", root / "bin" / "scpermut")
    package = root / "src" / "scpermut"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text(
        "import sys\n\n\ndef main(prog_name):\n    print('pipeline src', prog_name, sys.argv[1:])\n"
    )
    return root / "bin" / "scpermut"


def run_launcher(launcher: Path, *args: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(launcher), *args],
        capture_output=True,
        text=True,
        env={**task_environment(), **environment},
    )


def test_launcher_runs_the_installed_package_even_where_src_is_visible(tmp_path):
    """Docker, Singularity and conda tasks all run the same code: the installed package."""
    run = run_launcher(pipeline_with_marked_source(tmp_path), "--version")
    from scpermut import __version__

    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"scpermut, version {__version__}"


def test_launcher_runs_the_checkouts_source_only_when_asked(tmp_path):
    launcher = pipeline_with_marked_source(tmp_path)
    run = run_launcher(launcher, "qc", "--help", SCPERMUT_USE_SOURCE="1")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "pipeline src scpermut ['qc', '--help']"
    ignored = run_launcher(launcher, "--version", SCPERMUT_USE_SOURCE="0")
    assert ignored.stdout.startswith("scpermut, version"), ignored.stderr


def test_launcher_stops_when_the_asked_for_source_is_not_visible(tmp_path):
    """A container that does not mount the checkout fails loudly, not with other code."""
    shutil.copy(BIN / "scpermut", tmp_path / "scpermut")
    run = run_launcher(tmp_path / "scpermut", "--version", SCPERMUT_USE_SOURCE="1")
    assert run.returncode == 1 and run.stdout == ""
    assert "SCPERMUT_USE_SOURCE=1" in run.stderr and "not visible" in run.stderr, run.stderr


def test_no_profile_runs_the_checkouts_source():
    """Every profile runs the scpermut its environment installs: the conda ones get it from PyPI."""
    config = strip_comments((REPO / "nextflow.config").read_text())
    assert "SCPERMUT_USE_SOURCE" not in config
    for path in CONFIG_FILES[1:]:
        assert "SCPERMUT_USE_SOURCE" not in path.read_text(), path.name
    version = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    environment = (REPO / "containers" / "environment.yml").read_text()
    assert re.search(rf"(?m)^\s+- scpermut=={re.escape(version)}$", environment)