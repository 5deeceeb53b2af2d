"""nf-core/tools' linters on the pipeline: `nf-core pipelines lint` and `pipelines schema lint`.

nf-core/tools pins its own dependencies, so `.ci/run` installs it in a venv of its own and
names its executable in SCPERMUT_NF_CORE (else `nf-core` on PATH is used); these tests skip
without it. `pipelines lint` also needs `nextflow` (tools/get-nextflow's runtime).

Offline, two things change, both here and nowhere else:
- `pipelines lint` clones nf-core/modules before it starts (for modules.json, which a
  pipeline of local modules has not): it gets an empty local clone of the same layout;
- `files_unchanged` renders the nf-core template, which looks the pipeline up on
  https://nf-co.re/pipelines.json and its author on ORCID: nf-core runs with those two
  answered empty (`OFFLINE_LOOKUPS`), which changes nothing in the files it compares;
- `actions_schema_validation` fetches the GitHub-workflow JSON schema from schemastore.org
  and cannot run. Every other test runs.
Findings are fixed or, where they are nf-core boilerplate, ignored in .nf-core.yml with
the reason next to them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NF_CORE = os.environ.get("SCPERMUT_NF_CORE") or shutil.which("nf-core")
NEEDS_NETWORK = {"actions_schema_validation"}
# nf-core's command line with the template's two web lookups answered empty.
OFFLINE_LOOKUPS = """
import sys
from unittest import mock

import requests

online_get = requests.get


def get(url, *args, **kwargs):
    if str(url).startswith(("https://nf-co.re/pipelines.json", "https://pub.orcid.org/")):
        return mock.Mock(status_code=200, ok=True, json=lambda: {"remote_workflows": [], "result": [], "num-found": 0})
    return online_get(url, *args, **kwargs)


requests.get = get
from nf_core.__main__ import run_nf_core

sys.argv[0] = "nf-core"
run_nf_core()
"""

pytestmark = pytest.mark.skipif(
    not NF_CORE, reason="nf-core/tools not installed (set SCPERMUT_NF_CORE; .ci/run does)"
)


def _nextflow_dir(tmp_path: Path) -> Path | None:
    from test_nextflow_run import LAUNCHER

    if not LAUNCHER.is_file():
        return None
    folder = tmp_path / "nextflow-bin"
    folder.mkdir()
    (folder / "nextflow").symlink_to(LAUNCHER)
    return folder


def _offline_modules_clone(config_home: Path) -> None:
    """An empty nf-core/modules clone whose origin is a local bare repository."""
    source = config_home.parent / "modules-source"
    for folder in ["modules/nf-core", "subworkflows/nf-core"]:
        (source / folder).mkdir(parents=True)
        (source / folder / ".keep").touch()
    (source / ".nf-core.yml").write_text("repository_type: modules\norg_path: nf-core\n")
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "-c", "init.defaultBranch=master"]
    subprocess.run([*git, "init", "-q", str(source)], check=True)
    subprocess.run([*git, "-C", str(source), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(source), "commit", "-qm", "empty"], check=True)
    bare = config_home.parent / "modules.git"
    subprocess.run([*git, "clone", "-q", "--bare", str(source), str(bare)], check=True)
    subprocess.run([*git, "clone", "-q", str(bare), str(config_home / "nfcore" / "nf-core" / "modules")], check=True)


def _lint_tests() -> list[str]:
    """Every lint test of this nf-core/tools version but the one that needs the network."""
    code = (
        "import nf_core.pipelines.lint as lint; "
        "print('\\n'.join(lint.PipelineLint._get_all_lint_tests(False)))"
    )
    python = Path(NF_CORE).parent / "python"
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    tests = result.stdout.split()
    assert "files_exist" in tests and "nextflow_config" in tests, tests
    return [test for test in tests if test not in NEEDS_NETWORK]


def test_nf_core_pipelines_lint_passes(tmp_path):
    nextflow_bin = _nextflow_dir(tmp_path)
    if nextflow_bin is None:
        pytest.skip("no Nextflow runtime: run tools/get-nextflow")
    config_home = tmp_path / "config"
    _offline_modules_clone(config_home)
    env = dict(
        os.environ,
        PATH=f"{nextflow_bin}{os.pathsep}{os.environ['PATH']}",
        XDG_CONFIG_HOME=str(config_home),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        NXF_OFFLINE="true",
        HIDE_PROGRESS="1",
    )
    keys = [arg for test in _lint_tests() for arg in ("-k", test)]
    report = tmp_path / "lint.json"
    result = subprocess.run(
        [str(Path(NF_CORE).parent / "python"), "-c", OFFLINE_LOOKUPS, "pipelines", "lint", "--dir", str(REPO),
         "--plain-text", "--json", str(report), *keys],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert report.is_file(), result.stdout[-5000:] + result.stderr[-5000:]
    results = json.loads(report.read_text())
    failed = [f"{test}: {message}" for test, message in results.get("tests_failed", [])]
    failed += [f"{m[0]} {m[1]}: {m[2]}" for m in results.get("module_tests_failed", [])]
    failed += [f"{m[0]} {m[1]}: {m[2]}" for m in results.get("subworkflow_tests_failed", [])]
    assert failed == [], "\n".join(failed)
    assert result.returncode == 0, result.stdout[-5000:]


def test_nf_core_schema_lint_passes():
    result = subprocess.run(
        [NF_CORE, "pipelines", "schema", "lint", str(REPO / "nextflow_schema.json")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Pipeline schema looks valid" in output
    assert "should be" not in output, output
