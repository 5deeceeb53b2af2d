"""Score scpermut with changed options on one benchmark split, seed by seed: a quick A/B before a full run.

    /work/bench-venv/bin/python benchmarks/try_options.py cellbench_3cl lobo --seeds 0,1,2 --options '{"align_weight": 1.0}'

``lobo`` holds out the dataset's first batch (sorted), as the standard profile does, and
``lobo:BATCH`` that batch; ``partial5`` / ``partial10`` label that share of each type (the seed
draws the labelled cells); ``novel:TYPE`` removes that type from the reference (novel-type task);
``batches`` holds out the atlas task's split (10 % of the batches, draw 0, as ``run.py`` does on the
SYNTHETIC atlas) and ``batches:SHARE:DRAW`` another share (%) and draw.
Prints one JSON line per seed (balanced accuracy, iLISI, label silhouette, epochs run) and
their mean. Nothing is cached or written: the page still comes from ``run.py`` alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import methods  # noqa: E402
import scoring  # noqa: E402
import tasks  # noqa: E402
from common import BATCH, method_view  # noqa: E402

SHOWN = ("balanced_accuracy", "ilisi", "batch_entropy", "label_silhouette", "fraction_unknown")
# Shown on the novel-type task.
NOVEL = ("novel_recall", "false_rejection", "novelty_auroc")


def split_for(adata, split: str, seed: int):
    if split == "lobo":
        return tasks.leave_one_batch_out(adata, sorted(adata.obs[BATCH].unique())[0])
    if split.startswith("lobo:"):
        return tasks.leave_one_batch_out(adata, split.removeprefix("lobo:"))
    if split.startswith("novel:"):
        return tasks.novel_type(adata, split.removeprefix("novel:"))
    if split == "batches" or split.startswith("batches:"):
        share, draw = (split.split(":")[1:] if ":" in split else ("10", "0"))
        return tasks.leave_batches_out(adata, tasks.drawn_batches(adata, float(share) / 100, int(draw)))
    if split.startswith("partial"):
        return tasks.partial_atlas(adata, float(split.removeprefix("partial")) / 100, seed)
    raise SystemExit(f"unknown split {split!r}: lobo, lobo:BATCH, partial5, partial10, novel:TYPE, batches, batches:SHARE:DRAW, ...")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(tasks.DATASETS))
    parser.add_argument("split", help="lobo, lobo:BATCH, partialN (N %% of each type labelled), novel:TYPE, batches (the atlas task's split), batches:SHARE:DRAW")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--options", default="{}", help="scpermut options as JSON, e.g. '{\"min_epochs\": 30}'")
    args = parser.parse_args(argv)
    options = json.loads(args.options)
    adata = tasks.DATASETS[args.dataset].load()
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        start = time.perf_counter()
        split = split_for(adata, args.split, seed)
        prediction = methods.scpermut(method_view(split), seed, {"options": options})
        scores = scoring.score(split, prediction.labels, prediction.latent, prediction.novelty)
        shown = [name for name in (*SHOWN, *NOVEL) if name in scores]
        row = {"seed": seed, **{name: round(scores[name], 3) for name in shown}, "epochs": prediction.settings["epochs_run"], "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    shown = [name for name in (*SHOWN, *NOVEL) if name in rows[0]]
    print(json.dumps({"mean": {name: round(float(np.mean([row[name] for row in rows])), 3) for name in shown}, "options": options}))


if __name__ == "__main__":
    main()
