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


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps({"config": CONFIG, "versions": versions(), "digests": run_digests(Path(folder) / "results")}, indent=2))
