"""``TrainingRun``: from a fresh network (or a checkpoint) through every phase to the final weights.

Early stopping watches the validation cells (balanced accuracy or MCC) in the phases that
train the classifier and restores the best weights at the end of each phase.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from scpermut.errors import InputError
from scpermut.keys import Keys
from scpermut.model import losses
from scpermut.model.minibatches import CellBatches
from scpermut.model.network import ScpermutNetwork
from scpermut.model.persistence import read_checkpoint, write_checkpoint
from scpermut.model.settings import NetworkConfig, TrainingSettings
from scpermut.model.stored_batches import StoredCellBatches
from scpermut.model.train.callbacks import (
    Checkpoint,
    EarlyStopping,
    EpochData,
    ReversalRamp,
    ValidationScores,
)
from scpermut.model.train.plan import (
    ADVERSARY,
    ALIGNMENT,
    CLASSIFIER,
    Phase,
    join_validation_to_training,
    plan_phases,
    too_few_validation_cells,
)
from scpermut.model.train.memory import AlignmentMemory
from scpermut.model.train.runtime import seed_everything
from scpermut.model.train.scores import pseudo_label_codes
from scpermut.model.train.trainer import PhaseTrainer
from scpermut.model.training_data import NOT_LABELLED, TrainingData

log = logging.getLogger(__name__)


class TrainingRun:
    """One training from a fresh network (or a checkpoint) to the final weights.

    Parameters
    ----------
    data
        The prepared cells.
    config
        Network shape; ``batch_head`` is switched off here (with a warning) when there is one batch.
    settings
        Training settings.
    checkpoint_dir
        Folder for per-epoch checkpoints, or None for none.
    callbacks
        Extra Keras callbacks added to every phase (after the checkpoint).
    """

    def __init__(
        self,
        data: TrainingData,
        config: NetworkConfig,
        settings: TrainingSettings,
        checkpoint_dir: Path | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = (),
    ):
        if config.batch_head and len(data.batches) < 2:
            log.warning("only one batch (%s): no batch head (`dann_weight` is ignored)", data.batches[0])
            config = dataclasses.replace(config, batch_head=False)
        has_labels = bool((data.train_codes != NOT_LABELLED).any())
        if config.use_classifier and not has_labels:
            keys = Keys.from_record(data.preprocess)
            raise InputError(
                f"prepared data: no labelled training cell (every reference cell has {keys.class_key} '{keys.unlabeled_category}'?); "
                "check label_col in the samplesheet or `class_key`, or pass `use_classifier=False`."
            )
        if config.use_classifier and len(data.classes) < 2:
            raise InputError(
                f"prepared data: only one cell type ({', '.join(data.classes)}); the classifier needs two or more (or pass `use_classifier=False`)."
            )
        self.validation_joined_training = False
        if too_few_validation_cells(data, settings.min_validation_per_class):
            log.warning(
                "fewer than %d validation cells in some cell type: early stopping is off, the "
                "validation cells train too and every phase runs its full epochs",
                settings.min_validation_per_class,
            )
            data = join_validation_to_training(data)
            self.validation_joined_training = True
        self.data = data
        self.config = config
        self.settings = settings
        self.checkpoint_dir = checkpoint_dir
        self.extra_callbacks = list(callbacks)
        self.phases = plan_phases(settings, config, has_labels)
        self.has_validation = bool((data.validation_codes != NOT_LABELLED).any())
        self.class_weights = losses.balanced_class_weights(data.train_codes, len(data.classes))
        self.history: list[dict] = []
        self.resumed_from: dict | None = None
        seed_everything(settings.seed)
        self.network = ScpermutNetwork(config).build_for_inputs()

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the training arrays, hashed once (every checkpoint records it)."""
        return self.data.fingerprint()

    def identity(self) -> dict:
        """Return what a checkpoint must match to be resumed: data, network and settings."""
        return {
            "fingerprint": self.fingerprint,
            "network": self.config.to_dict(),
            "training": self.settings.to_dict(),
        }

    def save_checkpoint(
        self,
        phase_index: int,
        epoch: int,
        optimizers: Sequence,
        stopper: EarlyStopping | None,
        memory: AlignmentMemory | None = None,
    ) -> None:
        """Write the network, the optimisers' states (main, adversary), the alignment memory and
        early stopping to the checkpoint."""
        if self.checkpoint_dir is None:
            return
        arrays = {"network": [variable.numpy() for variable in self.network.variables]}
        if memory is not None:
            arrays["alignment_memory"] = memory.state()
        for name, optimizer in zip(("optimizer", "adversary_optimizer"), optimizers, strict=False):
            if optimizer is not None:
                arrays[name] = [variable.numpy() for variable in optimizer.variables]
        if stopper is not None:
            arrays["best"] = stopper.best_values
        state = {
            **self.identity(),
            "phase": phase_index,
            "epoch": epoch,
            "history": self.history,
            "early_stopping": stopper.state if stopper else None,
        }
        write_checkpoint(self.checkpoint_dir, state, arrays)

    def _load_checkpoint(self) -> tuple[dict, dict] | None:
        found = read_checkpoint(self.checkpoint_dir) if self.checkpoint_dir else None
        if found is None:
            log.warning(
                "resume: no checkpoint in %s; training from the start", self.checkpoint_dir
            )
            return None
        state, arrays = found
        if {key: state[key] for key in ("fingerprint", "network", "training")} != self.identity():
            raise InputError(
                f"{self.checkpoint_dir}: this checkpoint was written for other data or settings; rerun without `resume` and with `overwrite`."
            )
        for variable, value in zip(self.network.variables, arrays["network"], strict=True):
            variable.assign(value)
        self.history = state["history"]
        self.resumed_from = {
            "phase": self.phases[state["phase"]].name
            if state["phase"] < len(self.phases)
            else "end",
            "epoch": state["epoch"],
        }
        log.info(
            "resuming from the checkpoint: phase %s, %d epoch(s) done",
            self.resumed_from["phase"],
            state["epoch"],
        )
        return state, arrays

    def fit(self, resume: bool = False) -> ScpermutNetwork:
        """Run every phase (continuing a checkpoint when ``resume``) and return the trained network."""
        start_phase, start_epoch, saved = 0, 0, None
        if resume and (found := self._load_checkpoint()) is not None:
            saved = found
            start_phase, start_epoch = found[0]["phase"], found[0]["epoch"]
        adversarial_epochs = [phase.epochs if phase.trains(ADVERSARY) else 0 for phase in self.phases]
        for index, phase in enumerate(self.phases):
            if index < start_phase:
                continue
            resumed = saved if index == start_phase and start_epoch > 0 else None
            self._fit_phase(
                index,
                phase,
                start_epoch if resumed else 0,
                resumed,
                sum(adversarial_epochs[:index]),
                sum(adversarial_epochs),
            )
            self.save_checkpoint(index + 1, 0, [], None)
        return self.network

    def _fit_phase(
        self,
        index: int,
        phase: Phase,
        initial_epoch: int,
        saved,
        adversarial_before: int,
        adversarial_total: int,
    ) -> None:
        log.info(
            "phase %s: up to %d epochs (%s)",
            phase.name,
            phase.epochs,
            ", ".join(phase.terms) + (", permutation" if phase.permute else ""),
        )
        dataset = self._phase_batches(index, phase)
        trainer, adversary_optimizer = self._compiled_trainer(phase)
        callbacks: list[keras.callbacks.Callback] = [EpochData(dataset)]
        if phase.trains(ADVERSARY):
            callbacks.append(
                ReversalRamp(
                    self.network, adversarial_before, adversarial_total, self.settings.grl_ramp
                )
            )
        stopper = self._early_stopping(phase, saved)
        if stopper is not None:
            callbacks += [stopper.scorer, stopper]
        callbacks.append(Checkpoint(self, index, stopper))
        if saved is not None:
            self._restore_trainer_state(trainer, adversary_optimizer, saved)
        if phase.freeze_encoder:
            self.network.encoder.trainable = False
        try:
            if (
                not (stopper and stopper.state and stopper.state["stopped"])
                and initial_epoch < phase.epochs
            ):
                trainer.fit(
                    dataset,
                    epochs=phase.epochs,
                    initial_epoch=initial_epoch,
                    callbacks=callbacks + self.extra_callbacks,
                    verbose=1 if sys.stdout.isatty() else 2,
                    shuffle=False,
                )
        finally:
            self.network.encoder.trainable = True
        if stopper is not None:
            if stopper.state is None:
                stopper.on_train_begin()
            stopper.restore_best()

    def _phase_batches(self, index: int, phase: Phase) -> CellBatches:
        """The phase's mini-batches: its cells (the labelled ones only when the phase says so),
        partners when it permutes, the labelled share when it trains the classifier."""
        cells = (
            np.flatnonzero(self.data.train_codes != NOT_LABELLED) if phase.labelled_only else None
        )
        batches_class = StoredCellBatches if self.data.stored else CellBatches
        return batches_class(
            self.data,
            batch_size=self.settings.batch_size,
            seed=self.settings.seed,
            phase=index,
            cells=cells,
            permute=phase.permute,
            across_batches=self.settings.permute_across_batches,
            labelled_share=self.settings.labelled_share if phase.trains(CLASSIFIER) else 0.0,
            pseudo_labels=self._pseudo_labeller(phase),
            pseudo_permute=self.settings.pseudo_permutation and phase.permute,
            epoch_cells=self.settings.epoch_cells,
        )

    def _compiled_trainer(self, phase: Phase):
        """The phase's trainer, compiled, with its optimizers built (the adversary's only when the
        phase trains the batch head)."""
        trainer = PhaseTrainer(self.network, phase, self.settings, self.class_weights)
        adversary_optimizer = None
        if phase.trains(ADVERSARY):
            adversary_optimizer = keras.optimizers.Adam(
                self.settings.learning_rate * self.settings.adversary_lr_factor
            )
            if keras.mixed_precision.global_policy().name == "mixed_float16":
                adversary_optimizer = keras.optimizers.LossScaleOptimizer(adversary_optimizer)
            adversary_optimizer.build(self.network.adversary.trainable_variables)
        trainer.compile(
            optimizer=keras.optimizers.Adam(self.settings.learning_rate),
            adversary_optimizer=adversary_optimizer,
            jit_compile=False,
        )
        trainer.optimizer.build(trainer.phase_variables())
        return trainer, adversary_optimizer

    def _early_stopping(self, phase: Phase, saved) -> EarlyStopping | None:
        """Early stopping on the validation cells for a phase that trains the classifier, resumed
        from ``saved``; None without validation cells (the last epoch's weights are kept)."""
        if not phase.trains(CLASSIFIER):
            return None
        if not self.has_validation:
            log.warning("no validation cells: no early stopping, the last epoch's weights are kept")
            return None
        early_state = dict(saved[0]["early_stopping"]) if saved and saved[0]["early_stopping"] else None
        return EarlyStopping(
            self.network,
            ValidationScores(self.network, self.data, self.settings.batch_size, self.settings.seed),
            self.settings.early_stopping_metric,
            self.settings.patience,
            early_state,
            saved[1].get("best") if saved else None,
            phase.min_epochs,
        )

    def _restore_trainer_state(self, trainer, adversary_optimizer, saved) -> None:
        """The optimizers' and the alignment memory's state from a checkpoint."""
        for name, optimizer in (
            ("optimizer", trainer.optimizer),
            ("adversary_optimizer", adversary_optimizer),
        ):
            if name in saved[1]:
                for variable, value in zip(optimizer.variables, saved[1][name], strict=True):
                    variable.assign(value)
        if trainer.memory is not None and "alignment_memory" in saved[1]:
            trainer.memory.restore(saved[1]["alignment_memory"])

    def _pseudo_labeller(self, phase: Phase):
        """What gives the cells without labels their type for the alignment and the permutation
        in this phase, or None: phases that train the classifier on all cells and align or
        pseudo-permute."""
        settings = self.settings
        if not (phase.trains(CLASSIFIER) and not phase.labelled_only):
            return None
        if not (phase.trains(ALIGNMENT) or (settings.pseudo_permutation and phase.permute)):
            return None
        return lambda cells: pseudo_label_codes(
            self.network,
            self.data,
            settings.pseudo_label_threshold,
            settings.pseudo_label_novelty,
            settings.batch_size * 4,
            cells,
        )

    def planned_epochs(self) -> dict[str, dict]:
        """Each phase's plan: at most ``epochs`` epochs, each walking through ``cells_per_epoch``
        of its cells (plus the labelled draws of ``labelled_share``), never stopped early before
        ``min_epochs``."""
        plan = {}
        for phase in self.phases:
            n_cells = int((self.data.train_codes != NOT_LABELLED).sum()) if phase.labelled_only else self.data.n_cells
            cells = min(n_cells, self.settings.epoch_cells or n_cells)
            plan[phase.name] = {
                "epochs": phase.epochs,
                "min_epochs": phase.min_epochs,
                "cells_per_epoch": cells,
            }
        return plan

    def phase_epochs(self) -> dict[str, int]:
        """Epochs actually run in each phase (early stopping may cut a phase short)."""
        counts: dict[str, int] = {}
        for row in self.history:
            counts[row["phase"]] = max(counts.get(row["phase"], 0), int(row["epoch"]))
        return counts


def train_network(
    data: TrainingData,
    config: NetworkConfig,
    settings: TrainingSettings,
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainingRun:
    """Train a network on prepared data and return the finished :class:`TrainingRun`."""
    run = TrainingRun(data, config, settings, checkpoint_dir, callbacks)
    run.fit(resume=resume)
    return run
