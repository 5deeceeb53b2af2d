"""What the novelty gate of query adaptation does on a novel-type split, from reference models kept by
``map.py --novel TYPE --keep_models``.

    /work/bench-venv/bin/python benchmarks/map_gate.py --novel "B cells" OUTDIR/models/*

For each model folder: how many of the novel type's query cells pull on the reference at the first
pseudo-label draw with and without the gate (:func:`scpermut.model.adapt.pulled_cells` on the frozen
latent), and, frozen / adapted / adapted without the gate (the model's ``pseudo_label_novelty`` read
as 1), the mean per-cell novelty of the novel and of the known-type query cells, the AUROC of the
per-cell novelty, and what the novel cells are predicted as.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import tasks  # noqa: E402
from common import LABEL, TRUTH, UNKNOWN, method_view  # noqa: E402


def main(argv=None) -> None:
    from sklearn.metrics import roc_auc_score

    from scpermut import Model, annotate, constants
    from scpermut.model import adapt

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--dataset", default="kang_pbmc", choices=sorted(tasks.DATASETS))
    parser.add_argument("--novel", required=True, metavar="TYPE")
    args = parser.parse_args(argv)
    split = tasks.novel_type(tasks.DATASETS[args.dataset].load(), args.novel)
    view = method_view(split)
    query = (view.obs[LABEL] == UNKNOWN).to_numpy()
    novel = split.obs[TRUTH].astype(str).to_numpy()[query] == args.novel
    cells = view[query].copy()
    for folder in args.models:
        model = Model.load(folder)
        latent = annotate(cells.copy(), model, adapt=False, umap=False, copy=True).obsm[constants.LATENT]
        probabilities = adapt._classify(model.network.classifier, latent)
        novelty_model, gate = adapt.novelty_gate(model.record)
        in_reference = np.isin(np.arange(probabilities.shape[1]), model.record.reference["classes"])
        threshold = float(model.record.training["pseudo_label_threshold"])
        gated, _ = adapt.pulled_cells(probabilities, threshold, in_reference, novelty_model.novelty(latent), gate)
        ungated, _ = adapt.pulled_cells(probabilities, threshold, in_reference)
        print(f"{folder.name}: {novel.sum()} {args.novel} in the query; pulling at the first draw: with the gate "
              f"{novel[gated].sum()} of {gated.size} cells, without {novel[ungated].sum()} of {ungated.size}")
        for name, adapted, recorded in (("frozen", False, {}), ("adapted", True, {}), ("adapted, no gate", True, {"pseudo_label_novelty": 1.0})):
            model = Model.load(folder)
            model.record.training.update(recorded)
            mapped = annotate(cells.copy(), model, adapt=adapted, umap=False, copy=True)
            novelty = model.novelty(mapped.obsm[constants.LATENT])
            predicted = mapped.obs[constants.PREDICTION].astype(str).to_numpy()[novel]
            called = {label: int(count) for label, count in zip(*np.unique(predicted, return_counts=True), strict=True)}
            print(f"  {name:17s} novelty: {args.novel} {novelty[novel].mean():.3f}, known {novelty[~novel].mean():.3f}; "
                  f"AUROC {roc_auc_score(novel, novelty):.3f}; {args.novel} predicted as {called}")


if __name__ == "__main__":
    main()
