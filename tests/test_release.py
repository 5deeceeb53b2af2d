"""A release works on the first try: the tag release.yml triggers on, the files it checks, the help text."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / "tools" / "check-release"
VERSION = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M).group(1)


def check(tag: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([str(cwd / "tools" / "check-release"), tag], capture_output=True, text=True, check=False)


def test_this_version_can_be_released():
    result = check(VERSION)
    assert result.returncode == 0, result.stderr


def test_release_workflow_triggers_on_the_tag_users_pass_to_r():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())
    triggers = workflow[True]["push"]["tags"]  # YAML 1.1 reads the key `on` as True
    # GitHub's tag filters: + repeats the character class before it; . is literal.
    patterns = [re.compile(re.escape(t).replace(r"\[0\-9\]\+", "[0-9]+") + "$") for t in triggers]
    assert any(p.match(VERSION) for p in patterns), triggers
    assert not any(p.match(f"v{VERSION}") for p in patterns), triggers
    help_command = re.search(r"command\s*=\s*'(.+)'", (REPO / "nextflow.config").read_text()).group(1)
    assert f" -r {VERSION} " in help_command
    version_job = "\n".join(step.get("run", "") for step in workflow["jobs"]["version"]["steps"])
    assert "tools/check-release" in version_job


def test_anonymous_pull_runs_logged_out_before_anything_is_published():
    jobs = yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())["jobs"]
    pull = jobs["anonymous-pull"]
    steps = "\n".join(str(step) for step in pull["steps"])
    assert "login" not in steps.replace("docker logout", "")
    assert "docker pull" in steps
    assert "anonymous-pull" in jobs["pypi"]["needs"]


@pytest.mark.parametrize(
    ("tag", "edit", "message"),
    [
        ("v{v}", None, "no v prefix"),
        ("{v}", ("CHANGELOG.md", r"^## \[{v}\].*$", "## [9.9.9]"), "CHANGELOG.md has no"),
        ("{v}", ("modules/local/qc/main.nf", r"scpermut:{v}", "scpermut:0.0.1"), "modules/local pull other images"),
        ("{v}", ("nextflow.config", r"-r {v} ", "-r v{v} "), "--help command"),
    ],
)
def test_check_release_names_what_disagrees(tmp_path, tag, edit, message):
    copy = tmp_path / "repo"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".git", ".venv", "work", "benchmarks", "assets", "tests"))
    if edit:
        name, pattern, replacement = edit
        path = copy / name
        text, count = re.subn(pattern.format(v=re.escape(VERSION)), replacement.format(v=VERSION), path.read_text(), flags=re.M)
        assert count, (name, pattern)
        path.write_text(text)
    result = check(tag.format(v=VERSION), copy)
    assert result.returncode == 1 and message in result.stderr, result.stderr
