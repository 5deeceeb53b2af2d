"""The shipped end-to-end run gives the recorded results: bit for bit on a CPU kind it was
recorded on, within a stated tolerance on any other.

The promise (README, "Reproducibility"): the same data, seed and software give bit-identical
results on one machine, across processes and resumes (the second test below). Across CPU kinds
(Intel vs AMD, AVX2 vs AVX-512) TensorFlow's and the BLAS's float kernels round differently, so
the prepared data and the predictions are the same and the latent and the probabilities agree
within ``tolerance``: measured here, switching TensorFlow's float kernels (oneDNN on vs off) on
this run moved the latent by at most 5e-5 and the probabilities by 1.4e-4; the tolerance is
30-100 times that, far below what any change of the model moves (0.1 and more).

``tests/data/golden_digests.json`` holds SHA-256 digests of the prepared matrix, genes and split
(every machine) and, per ``cpu_kind`` (``scpermut.model.train.platform_record``), of the weights,
latent and probabilities; ``tests/data/golden_outputs.npz`` the recorded latent and probabilities
that the other CPU kinds are compared with. Bit-identity needs the same numpy and TensorFlow
builds: with other versions the test is skipped, saying which differ.

Record again (only when a change of results is intended; drops every other CPU kind)::

    python tests/test_golden.py record

Add this machine's CPU kind to the fixture (its results within tolerance of the recorded ones)::

    python tests/test_golden.py add-cpu-kind
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
REFERENCE_OUTPUTS = Path(__file__).parent / "data" / "golden_outputs.npz"
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
# Largest absolute difference from the recorded values on another CPU kind.
TOLERANCE = {"latent": 5e-3, "probabilities": 5e-3}
EVERY_MACHINE = ("prepared_X", "prepared_var_names", "prepared_split")
PER_CPU_KIND = ("weights", "latent", "probabilities", "predictions")


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


def cpu_kind() -> str:
    from scpermut.model.train import platform_record

    return platform_record()["cpu_kind"]


def shipped_run(outdir: Path) -> tuple[dict, dict]:
    """Run CONFIG on the test samplesheet into ``outdir``: its digests and its latent, probabilities and classes."""
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
    digests = {
        "prepared_X": _sha(prepared.X),
        "prepared_var_names": hashlib.sha256("\n".join(prepared.var_names).encode()).hexdigest(),
        "prepared_split": hashlib.sha256("\n".join(map(str, prepared.obs["scpermut_split"])).encode()).hexdigest(),
        "weights": hashlib.sha256(json.dumps(weights, sort_keys=True).encode()).hexdigest(),
        "latent": _sha(annotated.obsm["X_scpermut"]),
        "probabilities": _sha(annotated.obsm["scpermut_probabilities"]),
        "predictions": hashlib.sha256("\n".join(map(str, annotated.obs["scpermut_prediction"])).encode()).hexdigest(),
    }
    outputs = {
        "latent": annotated.obsm["X_scpermut"],
        "probabilities": annotated.obsm["scpermut_probabilities"],
        "predictions": annotated.obs["scpermut_prediction"].astype(str).to_numpy().astype(str),
    }
    return digests, outputs


def within_tolerance(outputs: dict, reference: dict) -> list[str]:
    """What differs from the recorded outputs beyond ``TOLERANCE``: one line per fault, none if agreed.

    Predictions must be equal except for cells whose recorded top two probabilities lie within
    twice the tolerance of each other (a tie that rounding may break either way).
    """
    import numpy as np

    faults = []
    for name, limit in TOLERANCE.items():
        difference = float(np.abs(outputs[name] - reference[name]).max())
        if not difference <= limit:
            faults.append(f"{name} differs by up to {difference:.3g} (tolerance {limit:g})")
    ranked = np.sort(reference["probabilities"], axis=1)
    decided = ranked[:, -1] - ranked[:, -2] > 2 * TOLERANCE["probabilities"]
    flipped = int((outputs["predictions"] != reference["predictions"])[decided].sum())
    if flipped:
        faults.append(f"{flipped} predictions differ on cells the recorded probabilities decide clearly")
    return faults


def _recorded_outputs() -> dict:
    import numpy as np

    with np.load(REFERENCE_OUTPUTS, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory):
    """The fixture and one fresh shipped run (digests, outputs); skipped with other numpy/TensorFlow versions."""
    golden = json.loads(FIXTURE.read_text())
    now = versions()
    differ = {name: (golden["versions"][name], now[name]) for name in ("numpy", "tensorflow") if golden["versions"][name] != now[name]}
    if differ:
        pytest.skip(f"digests were recorded with other versions (recorded, installed): {differ}")
    assert golden["config"] == CONFIG
    return golden, *shipped_run(tmp_path_factory.mktemp("golden") / "results")


def test_shipped_run_gives_the_recorded_results_within_tolerance_on_any_cpu(golden_run):
    golden, digests, outputs = golden_run
    assert {name: digests[name] for name in EVERY_MACHINE} == golden["every_machine"]
    assert within_tolerance(outputs, _recorded_outputs()) == []


def test_shipped_run_is_bit_identical_on_a_cpu_kind_it_was_recorded_on(golden_run):
    golden, digests, _ = golden_run
    recorded = golden["per_cpu_kind"].get(cpu_kind())
    if recorded is None:
        pytest.skip(f"no digests recorded for this CPU kind ({cpu_kind()}); add them with `python tests/test_golden.py add-cpu-kind`")
    assert {name: digests[name] for name in PER_CPU_KIND} == recorded


def test_the_tolerance_absorbs_rounding_and_catches_a_changed_model():
    import numpy as np

    reference = _recorded_outputs()
    rng = np.random.default_rng(0)
    # Rounding as measured between float kernels: 5e-5 on the latent, 1.4e-4 on the probabilities.
    rounded = {
        "latent": reference["latent"] + rng.uniform(-5e-5, 5e-5, reference["latent"].shape).astype(np.float32),
        "probabilities": reference["probabilities"] + rng.uniform(-1.4e-4, 1.4e-4, reference["probabilities"].shape).astype(np.float32),
        "predictions": reference["predictions"].copy(),
    }
    assert within_tolerance(rounded, reference) == []
    changed = dict(rounded, latent=rounded["latent"] * 1.01)
    assert within_tolerance(changed, reference)[0].startswith("latent differs")
    flipped = dict(rounded, predictions=np.roll(reference["predictions"], 1))
    assert "predictions differ" in within_tolerance(flipped, reference)[-1]


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
    assert run["platform"]["cpu_kind"] == cpu_kind()  # says whether bit-identity is promised
    annotated = ad.read_h5ad(folders[0] / "annotated" / "annotated.h5ad", backed="r")
    assert json.dumps(dict(annotated.uns["scpermut"]), default=str).count(sha256) >= 1


def _record(add_cpu_kind: bool) -> None:
    """Write the fixture from a fresh run: anew (``record``) or adding this CPU kind (``add-cpu-kind``)."""
    import numpy as np

    with tempfile.TemporaryDirectory() as folder:
        digests, outputs = shipped_run(Path(folder) / "results")
    if add_cpu_kind:
        golden = json.loads(FIXTURE.read_text())
        with np.load(REFERENCE_OUTPUTS, allow_pickle=False) as stored:
            faults = within_tolerance(outputs, {name: stored[name] for name in stored.files})
        if faults or {name: digests[name] for name in EVERY_MACHINE} != golden["every_machine"]:
            sys.exit(f"not added: this machine's results differ from the recorded ones ({'; '.join(faults) or 'prepared data'})")
    else:
        golden = {"config": CONFIG, "versions": versions(), "every_machine": {name: digests[name] for name in EVERY_MACHINE}, "per_cpu_kind": {}}
        np.savez_compressed(REFERENCE_OUTPUTS, **outputs)
    golden["per_cpu_kind"][cpu_kind()] = {name: digests[name] for name in PER_CPU_KIND}
    FIXTURE.write_text(json.dumps(golden, indent=2) + "\n")
    print(f"{FIXTURE}: recorded for {cpu_kind()}")


if __name__ == "__main__":
    if sys.argv[1:] not in (["record"], ["add-cpu-kind"]):
        sys.exit("usage: python tests/test_golden.py record|add-cpu-kind")
    _record(add_cpu_kind=sys.argv[1] == "add-cpu-kind")
