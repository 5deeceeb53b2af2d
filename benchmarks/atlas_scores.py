"""Score the SYNTHETIC atlas task from run.py work folders, against the atlas's ground truth.

    /work/bench-venv/bin/python benchmarks/atlas_scores.py /work/atlasout/seed0 /work/atlasout/seed1

Reads every stored run of the ``batches`` task on ``--dataset`` in each work folder (filled by
``run.py --profile atlas --only ...``), scores it with :func:`scoring.score` (balanced accuracy
on the held-out batches' cells of reference types; iLISI, kNN batch entropy and the
silhouettes of the latent over all cells) plus cLISI (scib-metrics ``clisi_knn``, scaled), and
puts each embedding's iLISI beside the ground truth: the uncorrected PCA of the same atlas
and of its twin without the gene-wise batch effect (``batch_lfc_sd=0``, same cells otherwise;
``atlas.check``). ``gap closed`` = (iLISI − PCA's) / (twin PCA's − PCA's): 0 = as mixed as the
uncorrected data, 1 = as mixed as the data without its batch shifts. Prints a markdown table
(one row per method and seed) and writes ``atlas_scores.csv`` beside the first folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import atlas  # noqa: E402
import scoring  # noqa: E402
import tasks  # noqa: E402
from common import BATCH, TRUTH  # noqa: E402

SHOWN = ("balanced_accuracy", "macro_f1", "ilisi", "gap_closed", "batch_entropy", "clisi", "label_silhouette", "batch_silhouette", "seconds", "cpu_seconds")


def clisi(latent: np.ndarray, labels: np.ndarray) -> float:
    """cLISI scaled 0-1 (scib-metrics ``clisi_knn``, 90 exact neighbours): 1 = every neighbourhood holds one type."""
    from scib_metrics import clisi_knn

    return float(clisi_knn(scoring.exact_neighbours(latent, scoring.LISI_NEIGHBOURS), np.asarray(labels), scale=True))


def markdown(frame: pd.DataFrame) -> str:
    """A markdown table of ``frame`` (floats to 3 decimals), without pandas' optional tabulate."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def ground_truth(dataset: str) -> dict:
    """iLISI and batch entropy of the uncorrected PCA of the atlas and of its twin without gene-wise batch shifts (all cells).

    Stored beside the cached atlases under a key of the parameters and of this file and ``scoring.py``.
    """
    params = tasks.DATASETS[dataset].params
    path = atlas.CACHE_DIR / f"ground_truth_{_digest(atlas.params_digest(params).encode(), Path(__file__).read_bytes(), Path(scoring.__file__).read_bytes())}.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = _ground_truth(params)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return result


def _ground_truth(params) -> dict:
    from methods import pca_embedding
    from scpermut import metrics

    result = {}
    for name, variant in (("pca", params), ("pca_without_batch_shift", replace(params, batch_lfc_sd=0.0))):
        adata = atlas.cached(variant)
        latent, batches = pca_embedding(adata), adata.obs[BATCH].astype(str).to_numpy()
        result[name] = {"ilisi": scoring.ilisi(latent, batches), "batch_entropy": metrics.batch_mixing(latent, batches)["batch_entropy"]}
    return result


def main(argv=None) -> None:
    import anndata as ad

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run.py work folders (e.g. one per seed)")
    parser.add_argument("--dataset", default="synthetic_atlas_10k", choices=sorted(name for name, d in tasks.DATASETS.items() if isinstance(d, tasks.SyntheticDataset)))
    args = parser.parse_args(argv)
    truth = ground_truth(args.dataset)
    floor, ceiling = truth["pca"]["ilisi"], truth["pca_without_batch_shift"]["ilisi"]
    rows = []
    for folder in args.folders:
        for group in sorted((folder / "runs").glob(f"*/batches__{args.dataset}")):
            for result_file in sorted(group.glob("*.npz")):
                split_id = result_file.stem.rsplit("__seed", 1)[0]
                split_file = folder / "splits" / f"{split_id}.h5ad"
                # Scores are stored under a key of the run's arrays, its split and the scoring code.
                stored = folder / "atlas_scores" / f"{_digest(result_file.read_bytes(), split_file.read_bytes(), Path(__file__).read_bytes(), Path(scoring.__file__).read_bytes())}.json"
                if stored.is_file():
                    row = json.loads(stored.read_text())
                else:
                    split = ad.read_h5ad(split_file)
                    arrays = np.load(result_file)
                    latent = arrays["latent"] if "latent" in arrays else None
                    timing = json.loads(result_file.with_suffix(".json").read_text())
                    row = {"method": group.parent.name, "split": split_id.split("__")[-1], "seed": int(result_file.stem.rsplit("__seed", 1)[1])}
                    row.update(scoring.score(split, arrays["labels"], latent))
                    if latent is not None:
                        row["clisi"] = clisi(latent, split.obs[TRUTH].astype(str).to_numpy())
                    row.update(seconds=timing["seconds"], cpu_seconds=timing.get("cpu_seconds"), settings=json.dumps(timing["settings"], default=str))
                    stored.parent.mkdir(parents=True, exist_ok=True)
                    stored.write_text(json.dumps(row, default=float))
                if "ilisi" in row:
                    row["gap_closed"] = (row["ilisi"] - floor) / (ceiling - floor)
                rows.append(row)
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k in ("method", "seed", *SHOWN)}), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.folders[0] / "atlas_scores.csv", index=False)
    print(f"\nground truth (uncorrected PCA, all cells): {json.dumps(truth)}\n")
    columns = [c for c in ("method", "seed", *SHOWN) if c in table]
    print(markdown(table[columns].sort_values(["method", "seed"])))
    numeric = [c for c in SHOWN if c in table]
    grouped = table.groupby("method")[numeric]
    means, sds, counts = grouped.mean(), grouped.std(), grouped.size()
    summary = pd.DataFrame({"method": means.index, "seeds": counts.to_numpy(), **{c: [f"{m:.3f} ± {d:.3f}" if d == d else f"{m:.3f}" for m, d in zip(means[c], sds[c])] for c in numeric}})
    print("\nmean ± sd over seeds (sd ddof 1; one seed: no sd)\n" + markdown(summary))


if __name__ == "__main__":
    main()
