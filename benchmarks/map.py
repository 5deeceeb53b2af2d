"""The "map" task: train on the reference batches only, then map each held-out batch onto the saved reference.

    /work/bench-venv/bin/python benchmarks/map.py [--datasets kang_pbmc ...] [--seeds 0 1] \\
        [--methods "scpermut adapted" ...] [--max_batches N] [--outdir DIR] [--page docs/benchmarks_map.md]

Every split is :func:`tasks.leave_one_batch_out` of a shipped dataset, and every method sees
:func:`common.method_view` of it (counts, the label a method may learn from, the batch): the
query is the cells without a label, as a user knows which cells they map. Methods:

- ``scpermut frozen`` / ``scpermut adapted``: one ``scpermut.Model`` trained (defaults) on the
  reference cells alone, saved, reloaded; the query annotated with ``adapt=False`` / ``True``
  (the per-batch latent adapter, :mod:`scpermut.model.adapt`); the model folder is checked
  byte-identical after mapping;
- ``scpermut retrained``: today's default, one model trained on reference + query (query unlabelled);
- ``scANVI surgery``: scVI then scANVI on the reference at scvi-tools' defaults (as in
  ``methods.scanvi``), then ``SCANVI.prepare_query_anndata`` + ``SCANVI.load_query_data`` and
  the query training of scvi-tools' reference-mapping tutorial (100 epochs, weight decay 0);
- ``CellTypist``: trained on the reference (SGD), predicts the query.

Scores (``scoring.score``): balanced accuracy on the query cells of known types, iLISI of
the reference + query latents. Times: ``reference_seconds`` (training on the reference, once per
reference) and ``map_seconds`` (mapping the query: for ``scpermut retrained`` the whole
retraining, which is what mapping costs without a frozen reference), wall and CPU. One JSON per
(split, seed, method) under ``--outdir`` (an existing one is reused: delete the folder after a
code change); the page is rewritten from all of them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import methods  # noqa: E402
import tasks  # noqa: E402
from common import BATCH, LABEL, UNKNOWN, method_view  # noqa: E402

DATASETS = ("kang_pbmc", "cellbench_3cl", "mixology_5batch")
METHODS = ("scpermut frozen", "scpermut adapted", "scpermut retrained", "scANVI surgery", "CellTypist")
# scvi-tools' reference-mapping tutorial trains the query model this way.
SCANVI_QUERY_TRAINING = {"max_epochs": 100, "plan_kwargs": {"weight_decay": 0.0}}


class _Clock:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def _in_split_order(query: np.ndarray, reference_values, query_values) -> np.ndarray:
    """Reference rows and query rows put back in the split's order (``query``: the query cells' mask)."""
    reference_values, query_values = np.asarray(reference_values), np.asarray(query_values)
    out = np.empty((query.size, *reference_values.shape[1:]), dtype=np.result_type(reference_values, query_values))
    out[~query], out[query] = reference_values, query_values
    return out


def _digests(folder: Path) -> dict:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def scpermut_mapped(view, seed: int) -> dict:
    """``scpermut frozen`` and ``scpermut adapted`` from one reference model."""
    import tensorflow as tf

    from scpermut import Model, annotate, constants

    tf.config.threading.set_intra_op_parallelism_threads(1)
    query = (view.obs[LABEL] == UNKNOWN).to_numpy()
    with _Clock() as train, tempfile.TemporaryDirectory() as folder:
        prepared = methods.scpermut_prepared(view[~query].copy(), seed)
        Model(seed=seed).fit(prepared).save(Path(folder) / "model")
        before = _digests(Path(folder) / "model")
        model = Model.load(Path(folder) / "model")
        annotate(prepared, model, umap=False)
        results = {}
        for name, adapt in (("scpermut frozen", False), ("scpermut adapted", True)):
            with _Clock() as mapping:
                mapped = annotate(view[query].copy(), model, adapt=adapt, umap=False, copy=True)
            results[name] = {
                "labels": _in_split_order(query, prepared.obs[constants.PREDICTION].astype(str).to_numpy(), mapped.obs[constants.PREDICTION].astype(str).to_numpy()),
                "latent": _in_split_order(query, prepared.obsm[constants.LATENT], mapped.obsm[constants.LATENT]).astype(np.float32),
                "map_seconds": round(mapping.wall, 2), "map_cpu_seconds": round(mapping.cpu, 2),
                "adaptation": mapped.uns[constants.UNS]["adaptation"],
            }
        unchanged = _digests(Path(folder) / "model") == before
    for result in results.values():
        result.update(reference_seconds=round(train.wall - sum(r["map_seconds"] for r in results.values()), 2), model_folder_unchanged=unchanged)
    return results


def scpermut_retrained(view, seed: int) -> dict:
    with _Clock() as clock:
        prediction = methods.scpermut(view, seed, {"options": {}})
    return {"labels": prediction.labels, "latent": prediction.latent, "map_seconds": round(clock.wall, 2), "map_cpu_seconds": round(clock.cpu, 2)}


def scanvi_surgery(view, seed: int) -> dict:
    import scvi
    import torch

    torch.set_num_threads(1)
    scvi.settings.seed = seed
    query = (view.obs[LABEL] == UNKNOWN).to_numpy()
    trainer = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}
    with _Clock() as train:
        reference = methods.highly_variable(methods.log_normalised(view[~query].copy()))
        reference.X = view[~query][:, reference.var_names].X.copy()
        scvi.model.SCVI.setup_anndata(reference, batch_key=BATCH, labels_key=LABEL)
        vae = scvi.model.SCVI(reference, n_latent=10)
        vae.train(**trainer)
        model = scvi.model.SCANVI.from_scvi_model(vae, unlabeled_category=UNKNOWN)
        model.train(**trainer)
    with _Clock() as mapping:
        data = view[query].copy()
        scvi.model.SCANVI.prepare_query_anndata(data, model)
        surgery = scvi.model.SCANVI.load_query_data(data, model)
        surgery.train(**SCANVI_QUERY_TRAINING, **trainer)
        labels = surgery.predict()
        latent = surgery.get_latent_representation()
    return {
        "labels": _in_split_order(query, np.asarray(model.predict(), dtype=str), np.asarray(labels, dtype=str)),
        "latent": _in_split_order(query, model.get_latent_representation(), latent).astype(np.float32),
        "reference_seconds": round(train.wall, 2), "map_seconds": round(mapping.wall, 2), "map_cpu_seconds": round(mapping.cpu, 2),
    }


def celltypist_mapped(view, seed: int) -> dict:
    with _Clock() as clock:
        prediction = methods.celltypist_method(view, seed, {})
    return {"labels": prediction.labels, "latent": None, "reference_seconds": None, "map_seconds": round(clock.wall, 2), "map_cpu_seconds": round(clock.cpu, 2)}


RUNNERS = {"scANVI surgery": scanvi_surgery, "CellTypist": celltypist_mapped, "scpermut retrained": scpermut_retrained}


def run_split(dataset: str, batch: str, split, seed: int, wanted, outdir: Path, compute: bool = True) -> list[dict]:
    """Every wanted method on one split (``batch`` held out) and seed: scores and times, reusing the
    stored ones (without ``compute``: only the stored ones)."""
    from scoring import score

    rows, stem = [], f"{dataset}__{batch}__seed{seed}"
    missing = [name for name in wanted if not (outdir / f"{stem}__{name.replace(' ', '_')}.json").is_file()]
    if not compute:
        wanted = [name for name in wanted if name not in missing]
    elif missing:
        view = method_view(split)
        results = {}
        if {"scpermut frozen", "scpermut adapted"} & set(missing):
            results.update(scpermut_mapped(view, seed))
        for name in missing:
            if name in RUNNERS:
                results[name] = RUNNERS[name](view, seed)
        for name in missing:
            result = results[name]
            row = {"dataset": dataset, "held_out": batch, "seed": seed, "method": name}
            row.update(score(split, result.pop("labels"), result.pop("latent")))
            row.update(result)
            (outdir / f"{stem}__{name.replace(' ', '_')}.json").write_text(json.dumps(row, indent=2, default=str))
            print(f"{stem} {name}: balanced accuracy {row['balanced_accuracy']:.3f}, iLISI {row.get('ilisi', float('nan')):.3f}, map {row['map_seconds']} s", flush=True)
    for name in wanted:
        rows.append(json.loads((outdir / f"{stem}__{name.replace(' ', '_')}.json").read_text()))
    return rows


def page(rows: list[dict], command: str) -> str:
    """One table per dataset: each held-out batch and method, mean ± sd over seeds."""
    import pandas as pd

    from run import git_state

    table = pd.DataFrame(rows)
    state = git_state()
    lines = [
        "# Mapping a query onto a saved reference (benchmark task `map`)",
        "",
        f"Written by `{command}` at commit {state['commit'][:10]}{'' if state['clean'] else ' (tree not clean)'}; see `benchmarks/map.py`.",
        "Train on the reference batches only, map the held-out batch. Mean ± sd over seeds. `map s`: wall time of",
        "mapping the query (retrained: the whole retraining on reference + query), `ref s`: of training on the",
        "reference; on 2 cores shared with other sessions (load 8-13), so the CPU seconds compare better.",
        "",
    ]
    columns = {"balanced_accuracy": 3, "ilisi": 3, "map_seconds": 1, "map_cpu_seconds": 1, "reference_seconds": 1}
    for dataset, part in table.groupby("dataset", sort=False):
        seeds = sorted(int(seed) for seed in part["seed"].unique())
        lines += [f"## {dataset} (seeds {', '.join(map(str, seeds))})", ""]
        lines += ["| held-out batch | method | balanced accuracy | iLISI (ref + query) | map s | map CPU s | ref s |", "|---|---|---|---|---|---|---|"]
        for (batch, method), group in part.groupby(["held_out", "method"], sort=False):
            cells = []
            for column, digits in columns.items():
                values = pd.to_numeric(group[column], errors="coerce").dropna() if column in group else pd.Series(dtype=float)
                cells.append("–" if values.empty else f"{values.mean():.{digits}f}" + (f" ± {values.std(ddof=0):.{digits}f}" if len(values) > 1 else ""))
            lines.append(f"| {batch} | {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--max_batches", type=int, default=None, help="Only the first N held-out batches (sorted) of each dataset.")
    parser.add_argument("--outdir", type=Path, default=HERE / "results" / "map")
    parser.add_argument("--page", type=Path, default=None, help="Markdown page to write (default: OUTDIR/map.md).")
    parser.add_argument("--stored_only", action="store_true", help="Run nothing: write the page from the results stored in OUTDIR.")
    args = parser.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/map.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    rows = []
    for name in args.datasets:
        adata = tasks.DATASETS[name].load()
        for batch in sorted(adata.obs[BATCH].unique())[: args.max_batches]:
            split = tasks.leave_one_batch_out(adata, batch)
            for seed in args.seeds:
                rows += run_split(name, batch, split, seed, args.methods, args.outdir, compute=not args.stored_only)
    text = page(rows, command.strip())
    (args.page or args.outdir / "map.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
