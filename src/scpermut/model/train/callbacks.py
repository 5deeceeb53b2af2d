"""Keras callbacks of a phase: epoch data, reversal ramp, validation scores, early stopping, checkpoints."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import keras
import numpy as np

from scpermut.model.minibatches import CellBatches
from scpermut.model.network import ScpermutNetwork
from scpermut.model.train.scores import predict_classes, validation_scores
from scpermut.model.training_data import NOT_LABELLED, TrainingData

log = logging.getLogger(__name__)


class EpochData(keras.callbacks.Callback):
    """Redraws the cell order and permutation targets at the start of every epoch."""

    def __init__(self, dataset: CellBatches):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        """Redraw the order and the permutation partners for this epoch."""
        self.dataset.set_epoch(epoch)


class ReversalRamp(keras.callbacks.Callback):
    """Sets the gradient-reversal strength for the epoch: ``lambda * (2 / (1 + exp(-10 p)) - 1)``.

    ``p`` is the share of the adversarial epochs done by the end of this epoch, counted
    over every phase that trains the adversary, so the strength keeps rising from phase to phase.
    """

    def __init__(self, network: ScpermutNetwork, epochs_before: int, total_epochs: int, ramp: bool):
        super().__init__()
        self.network = network
        self.epochs_before = epochs_before
        self.total_epochs = max(total_epochs, 1)
        self.ramp = ramp

    def on_epoch_begin(self, epoch, logs=None):
        """Set the reversal strength for this epoch."""
        strength = self.network.network_config.grl_lambda
        if self.ramp:
            progress = (self.epochs_before + epoch + 1) / self.total_epochs
            strength *= 2.0 / (1.0 + np.exp(-10.0 * progress)) - 1.0
        self.network.gradient_reversal.strength.assign(strength)


# Validation cells early stopping scores at each epoch's end, at most: beyond it a seeded sample
# keeping each type's share (and at least MIN_SCORED_PER_TYPE of it). Scoring all of an atlas's
# validation cells would cost more than the epoch of training before it.
MAX_SCORED_VALIDATION_CELLS = 50_000
MIN_SCORED_PER_TYPE = 200


def scored_validation_cells(validation_codes: np.ndarray, seed: int) -> np.ndarray:
    """The validation cells early stopping scores, in index order (see ``MAX_SCORED_VALIDATION_CELLS``)."""
    cells = np.flatnonzero(validation_codes != NOT_LABELLED)
    if cells.size <= MAX_SCORED_VALIDATION_CELLS:
        return cells
    share = MAX_SCORED_VALIDATION_CELLS / cells.size
    rng = np.random.default_rng([seed, 29])
    chosen = []
    for code in np.unique(validation_codes[cells]):
        members = cells[validation_codes[cells] == code]
        size = min(members.size, max(MIN_SCORED_PER_TYPE, int(round(members.size * share))))
        chosen.append(rng.choice(members, size=size, replace=False))
    return np.sort(np.concatenate(chosen))


class ValidationScores(keras.callbacks.Callback):
    """Adds ``val_balanced_accuracy`` and ``val_mcc`` of the validation cells (at most
    ``MAX_SCORED_VALIDATION_CELLS`` of them) to the epoch logs."""

    def __init__(self, network: ScpermutNetwork, data: TrainingData, batch_size: int, seed: int):
        super().__init__()
        self.network = network
        self.expression = data.expression
        self.cells = scored_validation_cells(data.validation_codes, seed)
        self.codes = data.validation_codes[self.cells]
        if data.stored:  # read once, not at every epoch's end
            self.expression, self.cells = data.expression[self.cells], None
        self.batch_size = batch_size

    def scores(self) -> dict[str, float]:
        """Balanced accuracy and MCC of the network on the validation cells now."""
        probabilities = predict_classes(self.network, self.expression, self.batch_size * 4, self.cells)
        return validation_scores(self.codes, probabilities.argmax(axis=1))

    def on_epoch_end(self, epoch, logs=None):
        """Add the validation scores to the epoch logs."""
        if logs is not None:
            logs.update({f"val_{name}": value for name, value in self.scores().items()})


class EarlyStopping(keras.callbacks.Callback):
    """Stops a phase when the validation score has not improved for ``patience`` epochs.

    The weights at the start of the phase count as the first candidate, so a phase never
    leaves the network worse on the validation cells than it found it. Its state lives in a
    plain dict so that checkpoints can store and restore it.
    """

    def __init__(
        self,
        network: ScpermutNetwork,
        scorer: ValidationScores,
        metric: str,
        patience: int,
        state: dict | None,
        best_values: list | None,
        min_epochs: int = 0,
    ):
        super().__init__()
        self.network = network
        self.scorer = scorer
        self.metric = metric
        self.patience = patience
        self.min_epochs = min_epochs
        self.state = state
        self.best_values = best_values

    def on_train_begin(self, logs=None):
        """Forget the best epoch: a new phase starts."""
        if self.state is None:
            self.state = {
                "best": self.scorer.scores()[self.metric],
                "best_epoch": -1,
                "wait": 0,
                "stopped": False,
            }
            self.best_values = [variable.numpy() for variable in self.network.variables]

    def on_epoch_end(self, epoch, logs=None):
        """Keep the weights of a better epoch; stop after ``patience`` epochs without one."""
        score = logs[f"val_{self.metric}"]
        if score >= self.state["best"]:
            # A tie keeps the later, longer-trained weights but is no progress: patience runs on.
            improved = score > self.state["best"]
            self.state.update(
                best=score, best_epoch=epoch, wait=0 if improved else self.state["wait"] + 1
            )
            self.best_values = [variable.numpy() for variable in self.network.variables]
        else:
            self.state["wait"] += 1
        if self.state["wait"] >= self.patience and epoch + 1 >= self.min_epochs:
            self.state["stopped"] = True
            self.model.stop_training = True

    def restore_best(self):
        """Put back the weights of the best epoch."""
        for variable, value in zip(self.network.variables, self.best_values, strict=True):
            variable.assign(value)
        log.info(
            "best validation %s %.4f (epoch %d of the phase; 0 means its start)",
            self.metric,
            self.state["best"],
            self.state["best_epoch"] + 1,
        )


class CheckpointedRun(Protocol):
    """What :class:`Checkpoint` needs of the run (``scpermut.model.train.runner.TrainingRun``)."""

    phases: list
    history: list[dict]

    def save_checkpoint(
        self, phase_index: int, epoch: int, optimizers: Sequence, stopper: EarlyStopping | None, memory=None
    ) -> None:
        """Write the network, optimiser, alignment-memory and early-stopping states after an epoch."""


class Checkpoint(keras.callbacks.Callback):
    """After each epoch, writes everything needed to continue exactly from there."""

    def __init__(self, run: CheckpointedRun, phase_index: int, stopper: EarlyStopping | None):
        super().__init__()
        self.run = run
        self.phase_index = phase_index
        self.stopper = stopper

    def on_epoch_end(self, epoch, logs=None):
        """Record the epoch in the history and write the checkpoint."""
        self.run.history.append(
            {
                "phase": self.run.phases[self.phase_index].name,
                "epoch": epoch + 1,
                **{key: float(value) for key, value in (logs or {}).items()},
            }
        )
        self.run.save_checkpoint(
            self.phase_index,
            epoch + 1,
            [self.model.optimizer, self.model.adversary_optimizer],
            self.stopper,
            self.model.memory,
        )
