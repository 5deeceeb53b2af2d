"""bin/scpermut and tools/get-nextflow, without running Nextflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_scpermut_from_source_reports_the_checkout_version(tmp_path):
    """-profile conda runs the checkout's src/: --version must not read 0.0.0+unknown."""
    (tmp_path / "bin").mkdir()
    shutil.copy(REPO / "bin" / "scpermut", tmp_path / "bin" / "scpermut")
    (tmp_path / "src").symlink_to(REPO / "src")
    pyproject = (REPO / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(
        "\n".join('version = "9.8.7"' if line.startswith("version =") else line for line in pyproject.splitlines())
    )
    env = dict(os.environ, SCPERMUT_USE_SOURCE="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run(
        [str(tmp_path / "bin" / "scpermut"), "--version"], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "scpermut, version 9.8.7"
    # The temporary metadata folder is removed on exit.
    assert "9.8.7" not in " ".join(p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("tmp.*/*"))


def test_get_nextflow_documents_itself_and_pins_versions():
    result = subprocess.run(
        [str(REPO / "tools" / "get-nextflow"), "--help"], capture_output=True, text=True, check=True
    )
    assert "Maven Central" in result.stdout and "--install-plugin" in result.stdout
    text = (REPO / "tools" / "get-nextflow").read_text()
    config = (REPO / "nextflow.config").read_text()
    # The runtime is the oldest Nextflow the manifest accepts, and the plugin is the one declared.
    version = next(line.split("=")[1] for line in text.splitlines() if line.startswith("NEXTFLOW_VERSION="))
    assert f"nextflowVersion = '!>={version}'" in config
    plugin = next(line.split("=")[1] for line in text.splitlines() if line.startswith("NF_SCHEMA_VERSION="))
    assert f"id 'nf-schema@{plugin}'" in config


def test_bin_holds_only_what_tasks_call():
    """Nextflow puts bin/ on every task's PATH: developer tools live in tools/."""
    assert sorted(path.name for path in (REPO / "bin").iterdir()) == ["scpermut"]
    assert {"get-nextflow", "build-images", "check-release"} <= {path.name for path in (REPO / "tools").iterdir()}


def test_build_images_names_the_images_the_modules_pull():
    result = subprocess.run([str(REPO / "tools" / "build-images"), "--print"], capture_output=True, text=True, check=True)
    base, scpermut, multiqc = result.stdout.split()
    assert (REPO / "containers" / "Dockerfile").read_text().count(f"\nFROM {base}\n") == 1
    modules = " ".join(path.read_text() for path in (REPO / "modules" / "local").glob("*/main.nf"))
    assert f"'{scpermut}'" in modules and f"'{multiqc}'" in modules
