"""The phase plan: which ``fit`` calls run, in which order, with which loss terms and cells.

Phases (each skipped when it has 0 epochs or no loss term):

1. ``warmup``   reconstruction (+ the batch head) on all cells, every cell reconstructs itself;
2. ``full``     reconstruction with permutation, focal classifier, class-batch alignment (+ the
   batch head) on all cells;
3. ``finetune`` classifier head only, encoder frozen, labelled training cells only.

A phase's ``terms`` are the one switch of each loss term: the trainer computes exactly those.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from scpermut.model.settings import NetworkConfig, TrainingSettings
from scpermut.model.training_data import NOT_LABELLED, TrainingData

RECONSTRUCTION, CLASSIFIER, ALIGNMENT, ADVERSARY = "reconstruction", "classifier", "alignment", "adversary"
# Each loss term and the training setting that weighs it (0 switches the term off).
TERM_WEIGHTS = {RECONSTRUCTION: "rec_weight", CLASSIFIER: "clf_weight", ALIGNMENT: "align_weight", ADVERSARY: "dann_weight"}


@dataclass(frozen=True)
class Phase:
    """One ``fit`` call: the loss terms it trains and which cells it feeds.

    ``min_epochs``: early stopping never ends the phase sooner.
    """

    name: str
    epochs: int
    terms: tuple[str, ...]
    min_epochs: int = 0
    permute: bool = False
    freeze_encoder: bool = False
    labelled_only: bool = False

    def trains(self, term: str) -> bool:
        """True when this phase computes the loss term ``term``."""
        return term in self.terms


def plan_phases(settings: TrainingSettings, config: NetworkConfig, has_labels: bool) -> list[Phase]:
    """List the phases to run, in order, given the switches and weights."""
    on = {
        RECONSTRUCTION: settings.rec_weight > 0,
        CLASSIFIER: config.use_classifier and settings.clf_weight > 0 and has_labels,
        ADVERSARY: config.batch_head and settings.dann_weight > 0,
    }
    # The alignment groups cells by type: labels, and the classifier's confident predictions.
    on[ALIGNMENT] = on[CLASSIFIER] and settings.align_weight > 0

    def terms(*names: str) -> tuple[str, ...]:
        return tuple(name for name in names if on[name])

    def min_epochs(epochs: int) -> int:
        # Capped so that ``patience`` epochs without progress can end even a short phase.
        return min(settings.min_epochs, max(epochs - settings.patience, 0))

    candidates = [
        Phase("warmup", settings.epochs_warmup, terms(RECONSTRUCTION, ADVERSARY)),
        Phase(
            "full",
            settings.epochs_full,
            terms(RECONSTRUCTION, CLASSIFIER, ALIGNMENT, ADVERSARY),
            min_epochs(settings.epochs_full),
            permute=settings.use_permutation and has_labels and on[RECONSTRUCTION],
        ),
        Phase(
            "finetune", settings.epochs_finetune, terms(CLASSIFIER), min_epochs(settings.epochs_finetune),
            freeze_encoder=True, labelled_only=True,
        ),
    ]
    return [phase for phase in candidates if phase.epochs > 0 and phase.terms]


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
