"""The qc and prepare commands: help, both flag spellings, one-sentence errors with exit status 1."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from scpermut.cli import main


@pytest.fixture
def runner():
    return CliRunner()


@pytest.mark.parametrize("command", [[], ["qc"], ["prepare"]])
def test_help(runner, command):
    result = runner.invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage: main" in result.output or "Usage: scpermut" in result.output


def test_console_script_help_is_fast_and_lists_steps():
    result = subprocess.run([sys.executable, "-m", "scpermut", "--help"], capture_output=True, text=True, check=True)
    for command in ("qc", "prepare"):
        assert command in result.stdout


def test_both_flag_spellings(runner, assets_dir, tmp_path):
    source = assets_dir / "test_data" / "kang_ctrl107.h5ad"
    snake = runner.invoke(main, ["qc", str(source), "--sample", "s", "--outdir", str(tmp_path / "a"), "--min_genes", "150", "--class_key", "cell_type"])
    kebab = runner.invoke(main, ["qc", str(source), "--sample", "s", "--outdir", str(tmp_path / "b"), "--min-genes", "150", "--class-key", "cell_type"])
    assert snake.exit_code == 0 and kebab.exit_code == 0, snake.output + kebab.output
    assert (tmp_path / "a" / "s.qc_summary.json").read_text() == (tmp_path / "b" / "s.qc_summary.json").read_text().replace(str(tmp_path / "b"), str(tmp_path / "a"))


def test_qc_then_prepare(runner, assets_dir, tmp_path):
    for sample, role in [("ctrl107", "reference"), ("stim107", "query")]:
        result = runner.invoke(main, ["qc", str(assets_dir / "test_data" / f"kang_{sample}.h5ad"), "--sample", sample, "--role", role, "--outdir", str(tmp_path / "qc"), "--min_genes", "100"])
        assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["prepare", str(tmp_path / "qc" / "ctrl107.qc.h5ad"), str(tmp_path / "qc" / "stim107.qc.h5ad"), "--outdir", str(tmp_path / "prep"), "--n_top_genes", "500", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "prep").iterdir()) == ["prepare_summary.json", "prepared.h5ad"]


def test_errors_are_one_sentence_and_exit_1(tmp_path):
    missing = tmp_path / "missing.h5ad"
    result = subprocess.run(
        [sys.executable, "-m", "scpermut", "qc", str(missing), "--sample", "x", "--outdir", str(tmp_path / "out")],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert f"{missing}: file not found." in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_defaults_match_the_step_settings():
    from dataclasses import fields

    from scpermut.data.preprocess import PrepareSettings
    from scpermut.data.qc import QCThresholds

    for command, settings in (("qc", QCThresholds), ("prepare", PrepareSettings)):
        defaults = {param.name: param.default for param in main.commands[command].params}
        for field in fields(settings):
            assert defaults[field.name] == field.default, (command, field.name)
