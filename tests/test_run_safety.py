"""`scpermut run`/`label` never lose results: checked output folders, failed overwrites, resume.

A small atlas (300 cells of three cell lines, a third unlabelled) and a few epochs keep each
run to seconds.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from click.testing import CliRunner

from scpermut import constants
from scpermut.cli import main
from scpermut.errors import InputError

TINY = [
    "--class_key", "cell_line",
    "--batch_key", "batch",
    "--min_genes", "50",
    "--n_top_genes", "200",
    "--min_shared_genes", "50",
    "--epochs_warmup", "1",
    "--epochs_full", "3",
    "--epochs_finetune", "1",
    "--patience", "10",
    "--hidden_layers", "16",
    "--latent_dim", "4",
    "--no_umap",
    "--device", "cpu",
]


def invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def atlas(tmp_path_factory, assets_dir):
    """300 cells of the shipped cell-line atlas, a third of them labelled Unknown."""
    full = ad.read_h5ad(assets_dir / "test_data" / "cellbench_3cl_3tech.h5ad")
    rng = np.random.default_rng(1)
    cells = full[np.sort(rng.choice(full.n_obs, 300, replace=False))].copy()
    labels = cells.obs["cell_line"].astype(str).to_numpy()
    cells.obs["cell_line"] = np.where(rng.random(cells.n_obs) < 1 / 3, "Unknown", labels)
    cells.obs["sample"] = "the user's own column"
    path = tmp_path_factory.mktemp("atlas") / "atlas.h5ad"
    cells.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def straight(tmp_path_factory, atlas):
    """An uninterrupted `label` run."""
    outdir = tmp_path_factory.mktemp("straight") / "out"
    result = invoke("label", atlas, "--outdir", outdir, *TINY)
    assert result.exit_code == 0, result.output
    return outdir


def test_the_users_obs_columns_are_kept(straight):
    annotated = _annotated(straight)
    assert set(annotated.obs["sample"]) == {"the user's own column"}
    assert set(annotated.obs[constants.SAMPLE]) == {"atlas"}


def test_help_is_grouped_in_sections_with_an_example():
    for command in ("label", "run"):
        text = invoke(command, "--help").output
        titles = ("Input and output", "AnnData keys", "Quality control", "Merging and normalisation", "Model", "Training", "Label transfer")
        positions = [text.index(f"\n{title}:\n") for title in titles]
        assert positions == sorted(positions)
        assert "--layer" in text and "--no_umap" in text and "--resume" in text
        assert "Example" in text
    assert "scpermut label" in invoke("--help").output


def test_every_query_cell_of_a_targeted_panel_is_annotated(tmp_path, atlas, assets_dir):
    """A query measuring 300 of the genes, most of its cells below --min_genes: all annotated, flagged.

    The panel lacks ~60 % of the model's genes, so it needs a --max_missing_genes above the
    default 0.5, as `predict` would (without it the run stops before training, naming the panel).
    """
    full = ad.read_h5ad(assets_dir / "test_data" / "cellbench_3cl_3tech.h5ad")
    reference = ad.read_h5ad(atlas)
    others = full[~full.obs_names.isin(reference.obs_names)]
    query = others[:120, :300].copy()
    query.write_h5ad(tmp_path / "panel.h5ad")
    result = invoke(
        "label", atlas, "--query", tmp_path / "panel.h5ad", "--outdir", tmp_path / "out", *TINY, "--min_genes", "200",
        "--max_missing_genes", "0.8",
    )
    assert result.exit_code == 0, result.output
    annotated = _annotated(tmp_path / "out")
    is_query = annotated.obs[constants.ROLE] == "query"
    assert is_query.sum() == 120  # not one query cell dropped
    failed = ~annotated.obs.loc[is_query, constants.QC_PASS].astype(bool)
    assert failed.sum() > 60  # about 128 of the 300 genes detected per cell: most fail --min_genes 200
    assert annotated.obs.loc[is_query, constants.PREDICTION].notna().all()
    assert annotated.uns["scpermut"]["genes_used"] == 200  # the reference's HVGs, not the panel's
    assert "cells to annotate in sample 'panel' fail QC" in result.output
    assert f"annotated {120 + int((reference.obs['cell_line'] == 'Unknown').sum())} cells" in result.output


def _annotated(outdir):
    return ad.read_h5ad(outdir / "annotated" / "annotated.h5ad")


def test_an_impossible_output_folder_stops_before_any_work(tmp_path, atlas):
    (tmp_path / "some.h5ad").write_text("not a folder")
    result = invoke("label", atlas, "--outdir", tmp_path / "some.h5ad" / "out", *TINY)
    assert result.exit_code == 1
    assert "some.h5ad is a file; choose another --outdir" in result.output
    assert "[1/" not in result.output  # no step started
    assert "Traceback" not in result.output


def test_a_failed_overwrite_keeps_the_earlier_results(tmp_path, straight, atlas):
    import shutil

    outdir = tmp_path / "out"
    shutil.copytree(straight, outdir)
    before = (outdir / "annotated" / "annotated.h5ad").read_bytes()
    result = invoke("label", atlas, "--outdir", outdir, "--overwrite", *TINY, "--class_key", "no_such_column")
    assert result.exit_code == 1
    assert (outdir / "annotated" / "annotated.h5ad").read_bytes() == before
    assert (outdir / "report" / "report.html").is_file()
    assert sorted(path.name for path in outdir.iterdir()) == sorted(path.name for path in straight.iterdir())


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, straight, atlas, monkeypatch):
    from scpermut.model.train import runner

    written = runner.write_checkpoint
    calls = []

    def interrupt_on_the_third_checkpoint(*args, **kwargs):
        written(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(runner, "write_checkpoint", interrupt_on_the_third_checkpoint)
    outdir = tmp_path / "out"
    result = invoke("label", atlas, "--outdir", outdir, *TINY)
    assert result.exit_code == 130
    assert "--resume" in result.output
    assert (outdir / ".scpermut-partial" / "model" / "checkpoint").is_dir()
    monkeypatch.setattr(runner, "write_checkpoint", written)

    result = invoke("label", atlas, "--outdir", outdir, *TINY, "--resume")
    assert result.exit_code == 0, result.output
    assert "reused from the interrupted run" in result.output
    assert "training continues from its checkpoint" in result.output
    assert not (outdir / ".scpermut-partial").exists()
    resumed, expected = _annotated(outdir), _annotated(straight)
    np.testing.assert_array_equal(resumed.obsm[constants.LATENT], expected.obsm[constants.LATENT])
    assert list(resumed.obs[constants.PREDICTION]) == list(expected.obs[constants.PREDICTION])
    assert resumed.uns["scpermut"]["model"] == str((outdir / "model").resolve())


def test_a_second_run_into_the_same_folder_stops_naming_the_first_and_leaves_it_alone(tmp_path):
    import os

    from scpermut.steps.outdir import RunFolder

    first = RunFolder(tmp_path / "out", "options a", overwrite=False, resume=False)
    first.open()
    (first.folders["qc"]).mkdir()
    second = RunFolder(tmp_path / "out", "options b", overwrite=True, resume=False)
    with pytest.raises(InputError, match=rf"another scpermut run writes here \(process {os.getpid()} on "):
        second.open()
    assert first.folders["qc"].is_dir()  # the first run's work is untouched
    first.publish()
    assert (tmp_path / "out" / "qc").is_dir() and not (tmp_path / "out" / ".scpermut.lock").exists()
    second.open()  # the folder is free again
    second.discard()


def test_the_lock_of_a_run_that_no_longer_exists_is_taken_over(tmp_path, caplog):
    import json
    import socket
    import subprocess
    import sys

    from scpermut.steps.outdir import LOCK_FILE, RunFolder

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / LOCK_FILE).write_text(json.dumps({"pid": int(finished.stdout), "host": socket.gethostname(), "started": "then"}))
    folder = RunFolder(tmp_path / "out", "options", overwrite=False, resume=False)
    with caplog.at_level("WARNING"):
        folder.open()
    assert "taking over the lock of a run that no longer exists" in caplog.text
    folder.discard()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
