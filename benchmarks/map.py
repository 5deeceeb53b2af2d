"""The "map" task: train on the reference batches only, then map each held-out batch onto the saved reference.

    /work/bench-venv/bin/python benchmarks/map.py [--datasets kang_pbmc ...] [--seeds 0 1] \\
        [--methods "scpermut adapted" ...] [--max_batches N | --batches B ...] [--novel TYPE]
        [--outdir DIR] [--keep_models] [--page docs/benchmarks_map.md]

Every split is :func:`tasks.leave_one_batch_out` of a shipped dataset (or of the SYNTHETIC atlas) (with ``--novel TYPE``:
:func:`tasks.novel_type`, ``TYPE`` removed from the reference and kept in the query batch holding
most of it, scored for novel recall and false rejection as well), and every method sees
:func:`common.method_view` of it (counts, the label a method may learn from, the batch): the
query is the cells without a label, as a user knows which cells they map. Methods:

- ``scpermut frozen`` / ``scpermut adapted``: one ``scpermut.Model`` trained (defaults) on the
  reference cells alone, saved, reloaded; the query annotated with ``adapt=False`` / ``True``
  (the per-batch latent adapter, :mod:`scpermut.model.adapt`); the model folder is checked
  byte-identical after mapping; ``scpermut adapted, no gate``: the same adaptation with the
  novelty gate off (the model's ``pseudo_label_novelty`` read as 1), to measure the gate;
- ``scpermut frozen, latent novelty only`` / ``scpermut adapted, latent novelty only``: the same
  with the model's reconstruction novelty ignored (the latent novelty alone, as before it);
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
import re
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

# The shipped datasets, and the SYNTHETIC many-batch atlas (``--batches`` picks its held-out ones).
SHIPPED = ("kang_pbmc", "cellbench_3cl", "mixology_5batch")
DATASETS = (*SHIPPED, "synthetic_atlas_10k")
METHODS = (
    "scpermut frozen", "scpermut adapted", "scpermut adapted, no gate", "scpermut adapted, 300 steps",
    "scpermut frozen, latent novelty only", "scpermut adapted, latent novelty only",
    "scpermut retrained", "scANVI surgery", "CellTypist",
)
# The methods mapped with one reference model: whether they adapt, the recorded training options
# they read differently, and their adaptation settings (:class:`scpermut.model.adapt.AdaptSettings`)
# changed from the package's. "latent novelty only": the model folder's reconstruction novelty
# (reconstruction_novelty.npz) ignored, as a folder written before it maps.
MAPPED = {
    "scpermut frozen": (False, {}, {}),
    "scpermut adapted": (True, {}, {}),
    "scpermut adapted, no gate": (True, {"pseudo_label_novelty": 1.0}, {}),
    "scpermut adapted, 300 steps": (True, {}, {"steps": 300, "tolerance": 0.0}),
    "scpermut frozen, latent novelty only": (False, {}, {}),
    "scpermut adapted, latent novelty only": (True, {}, {}),
}
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


def scpermut_mapped(view, seed: int, wanted, keep: Path | None = None) -> dict:
    """The ``wanted`` methods of :data:`MAPPED` from one reference model (its folder copied to
    ``keep`` when given)."""
    import dataclasses
    import shutil
    from unittest import mock

    import tensorflow as tf

    from scpermut import Model, annotate, constants
    from scpermut.model import adapt as adaptation

    tf.config.threading.set_intra_op_parallelism_threads(1)
    query = (view.obs[LABEL] == UNKNOWN).to_numpy()
    with _Clock() as train, tempfile.TemporaryDirectory() as folder:
        prepared = methods.scpermut_prepared(view[~query].copy(), seed)
        Model(seed=seed).fit(prepared).save(Path(folder) / "model")
        before = _digests(Path(folder) / "model")
        model = Model.load(Path(folder) / "model")
        annotate(prepared, model, umap=False)
        results = {}
        for name in wanted:
            adapt, recorded, adapt_settings = MAPPED[name]
            model = Model.load(Path(folder) / "model")
            model.record.training.update(recorded)
            if name.endswith("latent novelty only"):
                model.record.reconstruction = {}
            settings = dataclasses.replace(adaptation.DEFAULT_SETTINGS, **adapt_settings)
            with _Clock() as mapping, mock.patch.object(adaptation, "DEFAULT_SETTINGS", settings):
                mapped = annotate(view[query].copy(), model, adapt=adapt, umap=False, copy=True)
            results[name] = {
                "labels": _in_split_order(query, prepared.obs[constants.PREDICTION].astype(str).to_numpy(), mapped.obs[constants.PREDICTION].astype(str).to_numpy()),
                "latent": _in_split_order(query, prepared.obsm[constants.LATENT], mapped.obsm[constants.LATENT]).astype(np.float32),
                "novelty": _in_split_order(query, prepared.obs[constants.NOVELTY].to_numpy(np.float32), mapped.obs[constants.NOVELTY].to_numpy(np.float32)) if constants.NOVELTY in mapped.obs else None,
                "map_seconds": round(mapping.wall, 2), "map_cpu_seconds": round(mapping.cpu, 2),
                "adaptation": mapped.uns[constants.UNS]["adaptation"],
            }
        unchanged = _digests(Path(folder) / "model") == before
        if keep is not None:
            shutil.copytree(Path(folder) / "model", keep, dirs_exist_ok=True)
    for result in results.values():
        result.update(reference_seconds=round(train.wall - sum(r["map_seconds"] for r in results.values()), 2), model_folder_unchanged=unchanged)
    return results


def scpermut_retrained(view, seed: int) -> dict:
    with _Clock() as clock:
        prediction = methods.scpermut(view, seed, {"options": {}})
    return {"labels": prediction.labels, "latent": prediction.latent, "novelty": prediction.novelty, "map_seconds": round(clock.wall, 2), "map_cpu_seconds": round(clock.cpu, 2)}


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
    return {"labels": prediction.labels, "latent": None, "novelty": prediction.novelty, "reference_seconds": None, "map_seconds": round(clock.wall, 2), "map_cpu_seconds": round(clock.cpu, 2)}


RUNNERS = {"scANVI surgery": scanvi_surgery, "CellTypist": celltypist_mapped, "scpermut retrained": scpermut_retrained}


def _safe(name: str) -> str:
    """``name`` as a file name: runs of other characters than letters, digits, ``.+-`` made ``_``."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", name).strip("_")


def run_split(dataset: str, batch: str, split, seed: int, wanted, outdir: Path, compute: bool = True, keep_models: bool = False) -> list[dict]:
    """Every wanted method on one split (``batch`` held out) and seed: scores and times, reusing the
    stored ones (without ``compute``: only the stored ones); ``keep_models``: the reference model
    folder is kept under ``OUTDIR/models``."""
    from scoring import score

    rows, stem = [], _safe(f"{dataset}__{batch}__seed{seed}")
    missing = [name for name in wanted if not (outdir / f"{stem}__{_safe(name)}.json").is_file()]
    if not compute:
        wanted = [name for name in wanted if name not in missing]
    elif missing:
        view = method_view(split)
        results = {}
        mapped = [name for name in missing if name in MAPPED]
        if mapped:
            keep = outdir / "models" / stem if keep_models else None
            results.update(scpermut_mapped(view, seed, mapped, keep))
        for name in missing:
            if name in RUNNERS:
                results[name] = RUNNERS[name](view, seed)
        for name in missing:
            result = results[name]
            row = {"dataset": dataset, "held_out": batch, "seed": seed, "method": name}
            row.update(score(split, result.pop("labels"), result.pop("latent"), result.pop("novelty", None)))
            row.update(result)
            (outdir / f"{stem}__{_safe(name)}.json").write_text(json.dumps(row, indent=2, default=str))
            novel = f", novel recall {row['novel_recall']:.3f}, false rejection {row['false_rejection']:.3f}" if "novel_recall" in row else ""
            print(f"{stem} {name}: balanced accuracy {row['balanced_accuracy']:.3f}, iLISI {row.get('ilisi', float('nan')):.3f}{novel}, map {row['map_seconds']} s", flush=True)
    for name in wanted:
        rows.append(json.loads((outdir / f"{stem}__{_safe(name)}.json").read_text()))
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
    headers = ["balanced accuracy", "iLISI (ref + query)", "map s", "map CPU s", "ref s"]
    if "novel_recall" in table:
        columns = {"novel_recall": 3, "false_rejection": 3, "novelty_auroc": 3, **columns}
        headers = ["novel recall", "false rejection", "novelty AUROC", *headers]
    elif "fraction_unknown" in table:
        # Every query type is known: the cells called Unknown are all false rejections.
        columns = {"fraction_unknown": 3, **columns}
        headers = ["Unknown (false rejection)", *headers]
    for dataset, part in table.groupby("dataset", sort=False):
        seeds = sorted(int(seed) for seed in part["seed"].unique())
        lines += [f"## {dataset} (seeds {', '.join(map(str, seeds))})", ""]
        lines += ["| held-out batch | method | " + " | ".join(headers) + " |", "|---|---|" + "---|" * len(headers)]
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
    parser.add_argument("--datasets", nargs="+", default=list(SHIPPED), choices=DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--max_batches", type=int, default=None, help="Only the first N held-out batches (sorted) of each dataset.")
    parser.add_argument("--batches", nargs="+", default=None, help="Only these held-out batches.")
    parser.add_argument("--novel", default=None, metavar="TYPE", help="The novel-type split instead: TYPE removed from the reference, kept in the query batch holding most of it.")
    parser.add_argument("--keep_models", action="store_true", help="Keep each reference model folder under OUTDIR/models.")
    parser.add_argument("--outdir", type=Path, default=HERE / "results" / "map")
    parser.add_argument("--page", type=Path, default=None, help="Markdown page to write (default: OUTDIR/map.md).")
    parser.add_argument("--stored_only", action="store_true", help="Run nothing: write the page from the results stored in OUTDIR.")
    args = parser.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/map.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    rows = []
    for name in args.datasets:
        adata = tasks.DATASETS[name].load()
        if args.novel:
            split = tasks.novel_type(adata, args.novel)
            splits = [(f"novel {args.novel} ({split.uns['bench_novel']['query_batch']})", split)]
        else:
            batches = args.batches or sorted(adata.obs[BATCH].unique())[: args.max_batches]
            splits = [(batch, tasks.leave_one_batch_out(adata, batch)) for batch in batches]
        for batch, split in splits:
            for seed in args.seeds:
                rows += run_split(name, batch, split, seed, args.methods, args.outdir, compute=not args.stored_only, keep_models=args.keep_models)
    text = page(rows, command.strip())
    (args.page or args.outdir / "map.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
