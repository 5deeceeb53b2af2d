"""What a run covers: the full benchmark, the standard one and the quick variant.

The full profile is the one that ranks methods: every method at its own defaults
(scpermut's, scMusketeers' CLI defaults, scvi-tools' epoch heuristic for scVI and scANVI) on
every held-out batch of every shipped dataset, every type of every shipped dataset removed in
turn (novel task), and the SYNTHETIC many-batch atlas, each split once per seed in ``seeds``;
its cost is stated in benchmarks/README.md (``run.py --plan`` lists the runs).
The standard profile keeps the methods, their defaults, the seeds and the verdict rule of the
full one on fewer splits (one held-out batch and one novel type per dataset, 5 % and 10 %
labelled, one rare type, one draw of atlas batches); its splits are the full profile's own.
The quick profile cuts epochs and splits: it checks the machinery, its numbers rank nothing.
"""

from __future__ import annotations

PEERS = ("scpermut", "scmusketeers", "scanvi", "celltypist", "pca_knn", "harmony_knn")

# Each ablation variant is scpermut with options changed; run on the leave-one-batch-out splits.
# The batch head is off by default (dann_weight 0): "+dann" adds it at the weight the tuned
# searches chose (0.04-0.21).
ABLATIONS = {
    "scpermut +dann (weight 0.2)": {"dann_weight": 0.2},
    "scpermut -alignment": {"align_weight": 0.0},
    "scpermut -pseudo-permutation": {"pseudo_permutation": False},
    "scpermut -permutation": {"use_permutation": False},
    "scpermut -classifier (kNN on latent)": {"use_classifier": False},
    "scpermut -focal (gamma 0)": {"focal_gamma": 0.0},
    "scpermut -reconstruction": {"rec_weight": 0.0},
}

# scpermut with the options a seeded ``scpermut tune`` search picks on each split (reference
# labels and every batch, never the query's labels; one search per split, seed 0, reused by
# the split's seeds): tuned against default, on the leave-one-batch-out splits of ``tuned_datasets``.
TUNED = {
    "scpermut (tuned: 24 trials)": {"trials": 24, "mixing_weight": 0.3},
}

# On the novel task, a peer that gives class probabilities but never rejects is also scored
# with a stated rule: Unknown when its highest probability is at most this. For CellTypist it
# is its own rejection at its documented default ('prob match' mode, p_thres 0.5: no class
# above 0.5 -> 'Unassigned'); scANVI has no rejection rule of its own, so the same 0.5 is used.
REJECTION_RULES = {"celltypist": 0.5, "scanvi": 0.5}


def rejection_name(method: str) -> str:
    """The shown name of ``method`` answered with its rule of ``REJECTION_RULES``."""
    return f"{method} (Unknown at max probability ≤ {REJECTION_RULES[method]:g})"


FULL = {
    "name": "full",
    # Every held-out batch of the three shipped datasets (4 + 3 + 5 leave-one-batch-out splits),
    # the partial atlas and the rare type on Kang PBMC, and the ablation on 2 Kang splits
    # (a control and a stimulated donor-batch as query). Each split runs once per seed: the
    # page reports mean ± sd over seeds and takes a verdict only when the gap exceeds that spread.
    "datasets": ["kang_pbmc", "cellbench_3cl", "mixology_5batch", "synthetic_atlas"],
    "tasks": ["lobo", "partial", "rare", "novel", "ablation"],
    "max_batches": None,
    # Novel task: every type of every shipped dataset in turn (None = no limit).
    "max_novel_types": None,
    # SYNTHETIC atlas (tasks.DATASETS): query = this share (%) of its batches, one split per draw.
    "atlas_query_share": 10,
    "atlas_draws": [0, 1],
    # Tasks whose embeddings also get scib-metrics' Benchmarker aggregates.
    "scib_tasks": ["lobo", "batches"],
    "fractions": [5, 10, 50],
    "seeds": [0, 1, 2],
    "partial_datasets": ["kang_pbmc"],
    "rare_datasets": ["kang_pbmc"],
    "max_rare_types": 2,
    "rare_seeds": [0],
    "ablation_datasets": ["kang_pbmc"],
    "ablation_batches": ["ctrl101", "stim101"],
    "tuned_datasets": ["kang_pbmc", "cellbench_3cl", "mixology_5batch"],
    "settings": {
        # scpermut: its own defaults (scpermut.model.settings.TrainingSettings).
        "scpermut": {"options": {}},
        # scMusketeers: its CLI defaults (training_scheme_13: up to 100 + 50 epochs, early stopping).
        "scmusketeers": {"overrides": {}},
        # scvi-tools' own defaults: max_epochs=None lets SCVI.train pick its heuristic
        # (min(round(20,000 / n_cells * 400), 400): 400 epochs below 20k cells) and SCANVI.train
        # after pre-training its own (min(10, max(2, round(scvi epochs / 3)))); n_latent 10 is SCVI's default.
        "scanvi": {"n_latent": 10, "scvi_epochs": None, "scanvi_epochs": None},
        "celltypist": {},
        "pca_knn": {},
        "harmony_knn": {},
    },
    "cost": {
        "compare_cells": 50_000,
        "compare_epochs": 2,
        "scaling_cells": [10_000, 100_000, 1_000_000],
        "scaling_max_steps": 300,
        "min_free_gib_1m": 12,
    },
}

STANDARD = {
    **FULL,
    "name": "standard",
    # The first held-out batch (sorted) of each dataset: Kang ctrl101, CellBench sc_10x, mixology's first.
    "max_batches": 1,
    "max_novel_types": 1,
    "atlas_draws": [0],
    "fractions": [5, 10],
    "max_rare_types": 1,
    # The ablation on each dataset's held-out batch: the batch head's effect differs between them.
    "ablation_datasets": ["kang_pbmc", "cellbench_3cl", "mixology_5batch"],
    "ablation_batches": ["ctrl101", "sc_10x", "sc_celseq2"],
}

QUICK = {
    **FULL,
    "name": "quick",
    "datasets": ["kang_pbmc", "synthetic_atlas_small"],
    "max_batches": 1,
    "max_novel_types": 1,
    "atlas_draws": [0],
    "fractions": [10],
    # Two seeds: enough to exercise mean ± sd and the verdict rule, not to rank anything.
    "seeds": [0, 1],
    "partial_datasets": ["kang_pbmc"],
    "rare_datasets": ["kang_pbmc"],
    "max_rare_types": 1,
    "ablation_datasets": ["kang_pbmc"],
    "tuned_datasets": [],
    "settings": {
        "scpermut": {"options": {"epochs_warmup": 2, "epochs_full": 5, "epochs_finetune": 2}},
        "scmusketeers": {"overrides": {"fullmodel_epoch": 5, "classifier_epoch": 2}},
        "scanvi": {"n_latent": 10, "scvi_epochs": 10, "scanvi_epochs": 3},
        "celltypist": {},
        "pca_knn": {},
        "harmony_knn": {},
    },
    "cost": {
        "compare_cells": 5_000,
        "compare_epochs": 1,
        "scaling_cells": [10_000],
        "scaling_max_steps": 50,
        "min_free_gib_1m": 12,
    },
}

# The SYNTHETIC many-batch atlas task alone (issue 21): every method at the full profile's
# defaults on one draw of held-out batches of the 10,000-cell atlas. No Benchmarker (its kBET
# per type takes tens of minutes on 40 types): iLISI, batch entropy and silhouettes only.
ATLAS = {
    **FULL,
    "name": "atlas",
    "datasets": ["synthetic_atlas_10k"],
    "tasks": [],
    "atlas_draws": [0],
    "scib_tasks": [],
    "tuned_datasets": [],
}

PROFILES = {"full": FULL, "standard": STANDARD, "quick": QUICK, "atlas": ATLAS}
