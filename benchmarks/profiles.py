"""What a run covers: the full benchmark and its quick variant.

Epochs are the modest settings this 2-core machine affords for the whole benchmark in under
~45 minutes; they are written into docs/benchmarks.md with the results.
"""

from __future__ import annotations

PEERS = ("scpermut", "scmusketeers", "scanvi", "celltypist", "pca_knn", "harmony_knn")

# Each ablation variant is scpermut with options changed; run on the leave-one-batch-out splits.
ABLATIONS = {
    "scpermut -dann": {"use_dann": False},
    "scpermut -permutation": {"use_permutation": False},
    "scpermut -classifier (kNN on latent)": {"use_classifier": False},
    "scpermut -focal (gamma 0)": {"focal_gamma": 0.0},
    "scpermut -reconstruction": {"rec_weight": 0.0},
}

FULL = {
    "name": "full",
    # Sized for ~45-60 min on 2 shared cores: scMusketeers (defaults) and scANVI cost 1-2 min per
    # split, so the grid is 7 leave-one-batch-out + 6 partial-atlas + 2 rare-type splits, and the
    # ablation runs on 2 Kang splits (a control and a stimulated donor-batch as query).
    # mixology_5batch feeds the synthetic cost data.
    "datasets": ["kang_pbmc", "cellbench_3cl"],
    "tasks": ["lobo", "partial", "rare", "ablation"],
    "max_batches": None,
    "fractions": [5, 10, 50],
    "seeds": [0, 1],
    "partial_datasets": ["kang_pbmc"],
    "rare_datasets": ["kang_pbmc"],
    "max_rare_types": 2,
    "rare_seeds": [0],
    "ablation_datasets": ["kang_pbmc"],
    "ablation_batches": ["ctrl101", "stim101"],
    "settings": {
        # scpermut: its own defaults (scpermut.model.settings.TrainingSettings).
        "scpermut": {"options": {}},
        # scMusketeers: its CLI defaults (training_scheme_13: up to 100 + 50 epochs, early stopping).
        "scmusketeers": {"overrides": {}},
        # scvi-tools would pick 400 epochs for data this small; at ~1.3 s per epoch on this
        # machine, 25 + 5 keeps a split near 40 s.
        "scanvi": {"n_latent": 10, "scvi_epochs": 25, "scanvi_epochs": 5},
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

QUICK = {
    **FULL,
    "name": "quick",
    "datasets": ["kang_pbmc"],
    "max_batches": 1,
    "fractions": [10],
    "seeds": [0],
    "partial_datasets": ["kang_pbmc"],
    "rare_datasets": ["kang_pbmc"],
    "max_rare_types": 1,
    "ablation_datasets": ["kang_pbmc"],
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

PROFILES = {"full": FULL, "quick": QUICK}
