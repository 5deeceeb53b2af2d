"""The shipped end-to-end run gives bit-identical results across refactors.

``tests/data/golden_digests.json`` holds SHA-256 digests of the prepared matrix, the model
weights, the latent and the predictions of one small ``scpermut run`` on the test samplesheet,
recorded before the code was reorganised (issue 11) and recorded again for issue 10, whose
intended change of results is the gene set: the model's genes now come from the reference
samples, so the query samples' own gene filter no longer removes any. Bit-identity needs the same numpy and
TensorFlow builds: with other versions the test is skipped, saying which differ.

Regenerate the fixture (only when a change of results is intended)::

    python tests/test_golden.py > tests/data/golden_digests.json
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

# As in conftest.py: oneDNN off before TensorFlow loads, or the digests vary between runs.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
FIXTURE = Path(__file__).parent / "data" / "golden_digests.json"
ASSETS = Path(__file__).resolve().parents[1] / "assets"
CONFIG = [
    "--min_genes", "100",
    "--n_top_genes", "300",
    "--epochs_warmup", "1",
    "--epochs_full", "2",
    "--epochs_finetune", "1",
    "--hidden_layers", "32",
    "--latent_dim", "8",
    "--seed", "3",
    "--device", "cpu",
]


def _sha(array) -> str:
    import numpy as np
    import scipy.sparse as sp

    if sp.issparse(array):
        array = array.toarray()
    array = np.ascontiguousarray(array)
    return hashlib.sha256(str(array.dtype).encode() + str(array.shape).encode() + array.tobytes()).hexdigest()


def versions() -> dict:
    import numpy
    import tensorflow

    return {"numpy": numpy.__version__, "tensorflow": tensorflow.__version__, "python": sys.version.split()[0]}


def run_digests(outdir: Path) -> dict:
    """Run CONFIG on the test samplesheet into ``outdir`` and digest its results."""
    import anndata as ad
    import h5py
    from click.testing import CliRunner

    from scpermut.cli import main

    result = CliRunner().invoke(
        main, ["run", "--input", str(ASSETS / "samplesheet_test.csv"), "--outdir", str(outdir), *CONFIG], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    prepared = ad.read_h5ad(outdir / "prepare" / "prepared.h5ad")
    annotated = ad.read_h5ad(outdir / "annotated" / "annotated.h5ad")
    weights = {}
    with h5py.File(outdir / "model" / "model.weights.h5", "r") as handle:
        handle.visititems(lambda name, obj: weights.__setitem__(name, _sha(obj[()])) if isinstance(obj, h5py.Dataset) else None)
    return {
        "prepared_X": _sha(prepared.X),
        "prepared_var_names": hashlib.sha256("\n".join(prepared.var_names).encode()).hexdigest(),
        "prepared_split": hashlib.sha256("\n".join(map(str, prepared.obs["scpermut_split"])).encode()).hexdigest(),
        "weights": hashlib.sha256(json.dumps(weights, sort_keys=True).encode()).hexdigest(),
        "latent": _sha(annotated.obsm["X_scpermut"]),
        "probabilities": _sha(annotated.obsm["scpermut_probabilities"]),
        "predictions": hashlib.sha256("\n".join(map(str, annotated.obs["scpermut_prediction"])).encode()).hexdigest(),
    }


def test_shipped_run_is_bit_identical_to_the_recorded_one(tmp_path):
    golden = json.loads(FIXTURE.read_text())
    now = versions()
    differ = {name: (golden["versions"][name], now[name]) for name in ("numpy", "tensorflow") if golden["versions"][name] != now[name]}
    if differ:
        pytest.skip(f"digests were recorded with other versions (recorded, installed): {differ}")
    assert golden["config"] == CONFIG
    assert run_digests(tmp_path / "results") == golden["digests"]


# What differs between two identical runs by design: clocks, and the output folder in recorded paths.
TIMING_FIELDS = {"started", "duration_seconds", "created"}


def _without_timing(value, outdir: str):
    """``value`` (parsed JSON or an ``uns`` tree) without timing fields, its output folder written ``<outdir>``."""
    import numpy as np

    if isinstance(value, dict):
        return {key: _without_timing(item, outdir) for key, item in value.items() if key not in TIMING_FIELDS}
    if isinstance(value, (list, tuple)):
        return [_without_timing(item, outdir) for item in value]
    if isinstance(value, np.ndarray):
        return _without_timing(value.tolist(), outdir) if value.dtype.kind in "OUS" else value.tobytes() + str(value.shape).encode()
    if isinstance(value, str):
        return value.replace(outdir, "<outdir>")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _h5ad_content(path: Path, outdir: Path) -> dict:
    """Every array and table an h5ad holds, read back by anndata: X, layers, obs, var, obsm, varm, obsp, uns."""
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    adata = ad.read_h5ad(path)

    def dense(matrix):
        matrix = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
        return str(matrix.dtype), matrix.shape, matrix.tobytes()

    content = {"X": dense(adata.X), "obs_names": list(adata.obs_names), "var_names": list(adata.var_names)}
    for name in ("obs", "var"):
        frame = getattr(adata, name)
        content[name] = {column: (str(frame[column].dtype), frame[column].astype(str).tolist()) for column in frame}
    for name in ("layers", "obsm", "varm", "obsp"):
        content[name] = {key: dense(value) for key, value in getattr(adata, name).items()}
    content["uns"] = _without_timing(dict(adata.uns), str(outdir))
    return content


def _h5_arrays(path: Path) -> dict:
    import h5py

    arrays = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, obj: arrays.__setitem__(name, obj[()].tobytes()) if isinstance(obj, h5py.Dataset) else None)
    return arrays


def output_content(outdir: Path) -> dict:
    """What a ``scpermut run`` folder holds, comparable between two runs.

    h5ad and h5 files embed HDF5 object timestamps, so they are compared by content (arrays,
    tables, ``uns``); JSON by its parsed fields less ``TIMING_FIELDS``; CSV, TSV and text files
    byte for byte once the output folder's path is neutralised. The HTML report and PNG plots
    are listed (same names) but not compared: the report prints when it was generated.
    """
    content = {}
    for path in sorted(p for p in outdir.rglob("*") if p.is_file()):
        name = str(path.relative_to(outdir))
        if path.suffix == ".h5ad":
            content[name] = _h5ad_content(path, outdir)
        elif path.suffix == ".h5":
            content[name] = _h5_arrays(path)
        elif path.suffix == ".json":
            content[name] = _without_timing(json.loads(path.read_text()), str(outdir))
        elif path.suffix in (".csv", ".tsv", ".txt"):
            content[name] = path.read_text().replace(str(outdir), "<outdir>")
        else:
            content[name] = "present"
    return content


def test_two_runs_in_separate_processes_give_identical_outputs_and_record_the_input_hash(tmp_path):
    """``scpermut run`` twice, each in a fresh process without the test suite's TensorFlow switches."""
    import subprocess

    from conftest import package_only_environment

    folders = [tmp_path / "first", tmp_path / "second"]
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "scpermut", "-q", "run", "--input", str(ASSETS / "samplesheet_test.csv"), "--outdir", str(folder), *CONFIG],
            env=package_only_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for folder in folders
    ]
    for child in children:
        output, _ = child.communicate(timeout=600)
        assert child.returncode == 0, output

    first, second = (output_content(folder) for folder in folders)
    assert first.keys() == second.keys()
    assert {"prepare/prepared.h5ad", "model/model.weights.h5", "annotated/annotated.h5ad", "model/run.json", "report/metrics.json"} <= first.keys()
    for name in first:
        assert first[name] == second[name], f"{name} differs between two runs"

    import anndata as ad

    prepared = folders[0] / "prepare" / "prepared.h5ad"
    sha256 = hashlib.sha256(prepared.read_bytes()).hexdigest()
    run = json.loads((folders[0] / "model" / "run.json").read_text())
    assert run["input"]["sha256"] == sha256
    assert run["tf_enable_onednn_opts"] == "0"  # the package's own switch, not the suite's
    annotated = ad.read_h5ad(folders[0] / "annotated" / "annotated.h5ad", backed="r")
    assert json.dumps(dict(annotated.uns["scpermut"]), default=str).count(sha256) >= 1


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps({"config": CONFIG, "versions": versions(), "digests": run_digests(Path(folder) / "results")}, indent=2))
