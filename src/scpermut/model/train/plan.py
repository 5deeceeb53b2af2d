"""The phase plan: which ``fit`` calls run, in which order, with which losses and cells.

Phases (each skipped when it has 0 epochs or nothing to train):

1. ``warmup``   autoencoder (+ DANN) on all cells, every cell reconstructs itself;
2. ``full``     autoencoder with permutation + focal classifier + DANN on all cells;
3. ``finetune`` classifier head only, encoder frozen, labelled training cells only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from scpermut.model.batches import NOT_LABELLED, TrainingData
from scpermut.model.settings import NetworkConfig, TrainingSettings


@dataclass(frozen=True)
class Phase:
    """One ``fit`` call: which losses are on and which cells are fed."""

    name: str
    epochs: int
    reconstruction: bool
    classifier: bool
    adversary: bool
    permute: bool = False
    freeze_encoder: bool = False
    labelled_only: bool = False


def plan_phases(settings: TrainingSettings, config: NetworkConfig, has_labels: bool) -> list[Phase]:
    """List the phases to run, in order, given the switches and weights."""
    reconstruction = settings.rec_weight > 0
    classifier = config.use_classifier and settings.clf_weight > 0 and has_labels
    adversary = config.use_dann and settings.dann_weight > 0
    candidates = [
        Phase("warmup", settings.epochs_warmup, reconstruction, False, adversary),
        Phase(
            "full",
            settings.epochs_full,
            reconstruction,
            classifier,
            adversary,
            permute=settings.use_permutation and has_labels and reconstruction,
        ),
        Phase(
            "finetune",
            settings.epochs_finetune,
            False,
            classifier,
            False,
            freeze_encoder=True,
            labelled_only=True,
        ),
    ]
    return [
        phase
        for phase in candidates
        if phase.epochs > 0 and (phase.reconstruction or phase.classifier or phase.adversary)
    ]


def too_few_validation_cells(data: TrainingData, minimum: int) -> bool:
    """True when some cell type with training cells has fewer than ``minimum`` validation cells
    (and validation cells exist at all): too few for early stopping to choose an epoch."""
    validation = data.validation_codes[data.validation_codes != NOT_LABELLED]
    if validation.size == 0:
        return False
    types = np.unique(data.train_codes[data.train_codes != NOT_LABELLED])
    counts = np.bincount(validation, minlength=len(data.classes))
    return bool((counts[types] < minimum).any())


def join_validation_to_training(data: TrainingData) -> TrainingData:
    """The same data with every validation cell labelled for training."""
    joined = np.where(data.validation_codes != NOT_LABELLED, data.validation_codes, data.train_codes)
    return dataclasses.replace(
        data, train_codes=joined, validation_codes=np.full_like(data.validation_codes, NOT_LABELLED)
    )
