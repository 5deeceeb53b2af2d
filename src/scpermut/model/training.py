"""Training: phases as separate ``fit`` calls, a custom ``train_step``, early stopping and checkpoints.

Phases (each skipped when it has 0 epochs or nothing to train):

1. ``warmup``   autoencoder (+ DANN) on all cells, every cell reconstructs itself;
2. ``full``     autoencoder with permutation + focal classifier + DANN on all cells;
3. ``finetune`` classifier head only, encoder frozen, labelled training cells only.

Early stopping watches the validation cells (balanced accuracy or MCC) in the phases that
train the classifier and restores the best weights at the end of each phase.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from sklearn.metrics import balanced_accuracy_score, matthews_corrcoef

from scpermut.errors import InputError
from scpermut.model import losses
from scpermut.model.batches import NOT_LABELLED, CellBatches, TrainingData
from scpermut.model.network import ScpermutNetwork
from scpermut.model.persistence import read_checkpoint, write_checkpoint
from scpermut.model.settings import NetworkConfig, TrainingSettings
from scpermut.options import DEVICES

log = logging.getLogger(__name__)


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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TensorFlow ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    # Grappler's graph rewrites run under time budgets: on a busy machine two traces of the
    # same step can be fused differently and round differently. Off, so a seed fixes every bit.
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


def select_device(device: str, mixed_precision: bool) -> str:
    """Pick the device TensorFlow will use and return a description of it.

    Must run before TensorFlow touches a GPU. Mixed precision is only used on a GPU.
    """
    if device not in DEVICES:
        raise InputError(f"`device` must be one of {', '.join(DEVICES)}, not '{device}'.")
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise InputError(
            "`device=gpu`: TensorFlow sees no GPU on this machine; use `device=cpu` or `device=auto`."
        )
    if device == "cpu" or not gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # TensorFlow already started in this process (e.g. a notebook)
            log.warning("TensorFlow is already initialised: the GPU cannot be hidden any more")
        if mixed_precision:
            log.warning("mixed_precision is ignored on the CPU")
        keras.mixed_precision.set_global_policy("float32")
        return "cpu"
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    return describe_device()


def describe_device() -> str:
    """``"cpu"`` or ``"gpu (<name>)"``: where TensorFlow runs the model now."""
    gpus = tf.config.get_visible_devices("GPU")
    if not gpus:
        return "cpu"
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
    precision = (
        ", mixed precision" if keras.mixed_precision.global_policy().name == "mixed_float16" else ""
    )
    return f"gpu ({name}{precision})"


class PhaseTrainer(keras.Model):
    """Wraps the network for one phase: the loss terms, their weights and a ``Mean`` tracker each."""

    def __init__(
        self,
        network: ScpermutNetwork,
        phase: Phase,
        settings: TrainingSettings,
        class_weights: np.ndarray,
    ):
        super().__init__(name=f"trainer_{phase.name}")
        self.network = network
        self.phase = phase
        self.term_weights = {}
        if phase.reconstruction:
            self.term_weights["reconstruction_loss"] = settings.rec_weight
        if phase.classifier:
            self.term_weights["classifier_loss"] = settings.clf_weight
            self.focal = losses.focal_loss(settings.focal_gamma, class_weights)
        if phase.adversary:
            self.term_weights["adversary_loss"] = settings.dann_weight
        self.trackers = {
            name: keras.metrics.Mean(name=name) for name in ["loss", *self.term_weights]
        }

    @property
    def metrics(self):
        return list(self.trackers.values())

    def phase_variables(self) -> list:
        """Return what the main optimiser updates: modules with a gradient, the adversary excepted."""
        network, phase = self.network, self.phase
        modules = []
        if not phase.freeze_encoder and (
            phase.reconstruction or phase.adversary or phase.classifier
        ):
            modules.append(network.encoder)
        if phase.reconstruction:
            modules += [network.decoder] + (
                [network.dispersion] if network.dispersion is not None else []
            )
        if phase.classifier:
            modules.append(network.classifier)
        return [variable for module in modules for variable in module.trainable_variables]

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def loss_terms(self, batch: dict, outputs: dict) -> dict:
        """Each active loss term, averaged over the cells it applies to."""
        terms = {}
        if self.phase.reconstruction:
            if "dispersion" in outputs:
                per_cell = losses.negative_binomial_per_cell(
                    batch["target"],
                    outputs["reconstruction"],
                    batch["library_size"],
                    outputs["dispersion"],
                )
            else:
                per_cell = losses.mse_per_cell(batch["target"], outputs["reconstruction"])
            terms["reconstruction_loss"] = ops.mean(per_cell)
        if self.phase.classifier:
            labelled = ops.sum(batch["classes"], axis=-1)
            per_cell = self.focal(batch["classes"], outputs["class_probabilities"])
            terms["classifier_loss"] = losses.masked_mean(per_cell, labelled)
        if self.phase.adversary:
            terms["adversary_loss"] = ops.mean(
                losses.batch_cross_entropy_per_cell(
                    batch["batches"], outputs["batch_probabilities"]
                )
            )
        return terms

    def compile(self, optimizer, adversary_optimizer=None, **kwargs):
        """Like ``keras.Model.compile``, plus the batch head's own optimiser (GAN style).

        The adversary learns faster than the encoder moves (``adversary_lr_factor``): a stale
        adversary would let the reversed gradient merely fool it instead of removing the batch.
        """
        super().compile(optimizer=optimizer, **kwargs)
        self.adversary_optimizer = adversary_optimizer

    def train_step(self, batch):
        variables = self.phase_variables()
        adversary_variables = (
            self.network.adversary.trainable_variables if self.phase.adversary else []
        )
        with tf.GradientTape(persistent=bool(adversary_variables)) as tape:
            outputs = self.network(batch["x"], training=True)
            terms = self.loss_terms(batch, outputs)
            total = sum(self.term_weights[name] * value for name, value in terms.items())
            scaled = self.optimizer.scale_loss(total)
            adversary_scaled = (
                self.adversary_optimizer.scale_loss(total) if adversary_variables else None
            )
        self.optimizer.apply_gradients(
            zip(tape.gradient(scaled, variables), variables, strict=True)
        )
        if adversary_variables:
            gradients = tape.gradient(adversary_scaled, adversary_variables)
            self.adversary_optimizer.apply_gradients(
                zip(gradients, adversary_variables, strict=True)
            )
        del tape
        self.trackers["loss"].update_state(total)
        for name, value in terms.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def predict_classes(network: ScpermutNetwork, expression, batch_size: int) -> np.ndarray:
    """Class probabilities for the rows of a sparse matrix, densified one chunk at a time."""
    chunks = []
    for start in range(0, expression.shape[0], batch_size):
        dense = expression[start : start + batch_size].toarray()
        chunks.append(network(dense, training=False)["class_probabilities"].numpy())
    return (
        np.concatenate(chunks)
        if chunks
        else np.zeros((0, network.network_config.n_classes), np.float32)
    )


def classification_scores(true_codes: np.ndarray, predicted_codes: np.ndarray) -> dict[str, float]:
    """Balanced accuracy and Matthews correlation of predicted class codes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes predicted but absent from the validation cells
        return {
            "balanced_accuracy": float(balanced_accuracy_score(true_codes, predicted_codes)),
            "mcc": float(matthews_corrcoef(true_codes, predicted_codes)),
        }


class _EpochData(keras.callbacks.Callback):
    """Redraws the cell order and permutation targets at the start of every epoch."""

    def __init__(self, dataset: CellBatches):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.set_epoch(epoch)


class _ReversalRamp(keras.callbacks.Callback):
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
        strength = self.network.network_config.grl_lambda
        if self.ramp:
            progress = (self.epochs_before + epoch + 1) / self.total_epochs
            strength *= 2.0 / (1.0 + np.exp(-10.0 * progress)) - 1.0
        self.network.gradient_reversal.strength.assign(strength)


class _ValidationScores(keras.callbacks.Callback):
    """Adds ``val_balanced_accuracy`` and ``val_mcc`` of the validation cells to the epoch logs."""

    def __init__(self, network: ScpermutNetwork, data: TrainingData, batch_size: int):
        super().__init__()
        self.network = network
        cells = np.flatnonzero(data.validation_codes != NOT_LABELLED)
        self.expression = data.expression[cells]
        self.codes = data.validation_codes[cells]
        self.batch_size = batch_size

    def scores(self) -> dict[str, float]:
        probabilities = predict_classes(self.network, self.expression, self.batch_size * 4)
        return classification_scores(self.codes, probabilities.argmax(axis=1))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update({f"val_{name}": value for name, value in self.scores().items()})


class _EarlyStopping(keras.callbacks.Callback):
    """Stops a phase when the validation score has not improved for ``patience`` epochs.

    The weights at the start of the phase count as the first candidate, so a phase never
    leaves the network worse on the validation cells than it found it. Its state lives in a
    plain dict so that checkpoints can store and restore it.
    """

    def __init__(
        self,
        network: ScpermutNetwork,
        scorer: _ValidationScores,
        metric: str,
        patience: int,
        state: dict | None,
        best_values: list | None,
    ):
        super().__init__()
        self.network = network
        self.scorer = scorer
        self.metric = metric
        self.patience = patience
        self.state = state
        self.best_values = best_values

    def on_train_begin(self, logs=None):
        if self.state is None:
            self.state = {
                "best": self.scorer.scores()[self.metric],
                "best_epoch": -1,
                "wait": 0,
                "stopped": False,
            }
            self.best_values = [variable.numpy() for variable in self.network.variables]

    def on_epoch_end(self, epoch, logs=None):
        score = logs[f"val_{self.metric}"]
        if score > self.state["best"]:
            self.state.update(best=score, best_epoch=epoch, wait=0)
            self.best_values = [variable.numpy() for variable in self.network.variables]
        else:
            self.state["wait"] += 1
        if self.state["wait"] >= self.patience:
            self.state["stopped"] = True
            self.model.stop_training = True

    def restore_best(self):
        for variable, value in zip(self.network.variables, self.best_values, strict=True):
            variable.assign(value)
        log.info(
            "best validation %s %.4f (epoch %d of the phase; 0 means its start)",
            self.metric,
            self.state["best"],
            self.state["best_epoch"] + 1,
        )


class _Checkpoint(keras.callbacks.Callback):
    """After each epoch, writes everything needed to continue exactly from there."""

    def __init__(self, run: TrainingRun, phase_index: int, stopper: _EarlyStopping | None):
        super().__init__()
        self.run = run
        self.phase_index = phase_index
        self.stopper = stopper

    def on_epoch_end(self, epoch, logs=None):
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
        )


class TrainingRun:
    """One training from a fresh network (or a checkpoint) to the final weights.

    Parameters
    ----------
    data
        The prepared cells.
    config
        Network shape; ``use_dann`` is switched off here (with a warning) when there is one batch.
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
        if config.use_dann and len(data.batches) < 2:
            log.warning(
                "only one batch (%s): the domain adversary (DANN) is turned off", data.batches[0]
            )
            config = dataclasses.replace(config, use_dann=False)
        has_labels = bool((data.train_codes != NOT_LABELLED).any())
        if config.use_classifier and not has_labels:
            raise InputError(
                "prepared data: no labelled training cell; label some reference cells or pass `use_classifier=False`."
            )
        if config.use_classifier and len(data.classes) < 2:
            raise InputError(
                f"prepared data: only one cell type ({', '.join(data.classes)}); the classifier needs two or more (or pass `use_classifier=False`)."
            )
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

    def identity(self) -> dict:
        """Return what a checkpoint must match to be resumed: data, network and settings."""
        return {
            "fingerprint": self.data.fingerprint(),
            "network": self.config.to_dict(),
            "training": self.settings.to_dict(),
        }

    def save_checkpoint(
        self, phase_index: int, epoch: int, optimizers: Sequence, stopper: _EarlyStopping | None
    ) -> None:
        """Write the network, the optimisers' states (main, adversary) and early stopping to the checkpoint."""
        if self.checkpoint_dir is None:
            return
        arrays = {"network": [variable.numpy() for variable in self.network.variables]}
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
        adversarial_epochs = [phase.epochs if phase.adversary else 0 for phase in self.phases]
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
            ", ".join(
                name
                for name in ("reconstruction", "classifier", "adversary")
                if getattr(phase, name)
            )
            + (", permutation" if phase.permute else ""),
        )
        cells = (
            np.flatnonzero(self.data.train_codes != NOT_LABELLED) if phase.labelled_only else None
        )
        dataset = CellBatches(
            self.data,
            batch_size=self.settings.batch_size,
            seed=self.settings.seed,
            phase=index,
            cells=cells,
            permute=phase.permute,
            across_batches=self.settings.permute_across_batches,
        )
        trainer = PhaseTrainer(self.network, phase, self.settings, self.class_weights)
        adversary_optimizer = None
        if phase.adversary:
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
        callbacks: list[keras.callbacks.Callback] = [_EpochData(dataset)]
        if phase.adversary:
            callbacks.append(
                _ReversalRamp(
                    self.network, adversarial_before, adversarial_total, self.settings.grl_ramp
                )
            )
        stopper = None
        if phase.classifier and self.has_validation:
            scorer = _ValidationScores(self.network, self.data, self.settings.batch_size)
            early_state = (
                dict(saved[0]["early_stopping"]) if saved and saved[0]["early_stopping"] else None
            )
            stopper = _EarlyStopping(
                self.network,
                scorer,
                self.settings.early_stopping_metric,
                self.settings.patience,
                early_state,
                saved[1].get("best") if saved else None,
            )
            callbacks += [scorer, stopper]
        elif phase.classifier:
            log.warning("no validation cells: no early stopping, the last epoch's weights are kept")
        callbacks.append(_Checkpoint(self, index, stopper))
        for name, optimizer in (
            ("optimizer", trainer.optimizer),
            ("adversary_optimizer", adversary_optimizer),
        ):
            if saved is not None and name in saved[1]:
                for variable, value in zip(optimizer.variables, saved[1][name], strict=True):
                    variable.assign(value)
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
