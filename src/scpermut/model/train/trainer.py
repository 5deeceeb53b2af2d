"""``PhaseTrainer``: the network wrapped for one phase, with a custom ``train_step``.

The phase names its loss terms (:mod:`~scpermut.model.train.plan`); each term is one method
here, registered in ``PhaseTrainer.term_functions``, weighted by its setting and tracked by
its own ``Mean`` (the ``<term>_loss`` columns of ``history.csv``).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from scpermut.model import losses
from scpermut.model.network import ScpermutNetwork
from scpermut.model.settings import TrainingSettings
from scpermut.model.train.memory import AlignmentMemory
from scpermut.model.training_data import NOVEL
from scpermut.model.train.plan import (
    ADVERSARY,
    ALIGNMENT,
    CLASSIFIER,
    RECONSTRUCTION,
    TERM_WEIGHTS,
    Phase,
)


class PhaseTrainer(keras.Model):
    """Wraps the network for one phase: its loss terms, their weights and a ``Mean`` tracker each."""

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
        self.term_functions = {
            RECONSTRUCTION: self.reconstruction_loss,
            CLASSIFIER: self.classifier_loss,
            ALIGNMENT: self.alignment_loss,
            ADVERSARY: self.adversary_loss,
        }
        self.term_weights = {term: getattr(settings, TERM_WEIGHTS[term]) for term in phase.terms}
        self.focal = losses.focal_loss(settings.focal_gamma, class_weights)
        self.confusion = settings.adversary_objective == "confusion"
        self.pseudo_threshold = settings.pseudo_label_threshold
        self.alignment = settings.alignment
        self.memory = None
        if phase.trains(ALIGNMENT) and settings.alignment == "memory":
            config = network.network_config
            self.memory = AlignmentMemory(config.n_classes, settings.alignment_memory, config.latent_dim)
        self.adversary_steps = settings.adversary_steps
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ["loss", *(f"{term}_loss" for term in phase.terms)]
        }

    @property
    def metrics(self):
        return list(self.trackers.values())

    def phase_variables(self) -> list:
        """Return what the main optimiser updates: modules with a gradient, the batch head excepted."""
        network, phase = self.network, self.phase
        modules = [] if phase.freeze_encoder else [network.encoder]
        if phase.trains(RECONSTRUCTION):
            modules += [network.decoder] + ([network.dispersion] if network.dispersion is not None else [])
        if phase.trains(CLASSIFIER):
            modules.append(network.classifier)
        return [variable for module in modules for variable in module.trainable_variables]

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def loss_terms(self, batch: dict, outputs: dict) -> dict:
        """Each loss term of the phase, averaged over the cells it applies to (with the alignment,
        ``outputs`` gains the ``aligned_latent`` the memory then remembers)."""
        if self.phase.trains(ALIGNMENT):
            outputs["aligned_latent"] = self.aligned_latent(batch, outputs)
        return {term: self.term_functions[term](batch, outputs) for term in self.phase.terms}

    def reconstruction_loss(self, batch: dict, outputs: dict):
        if "dispersion" in outputs:
            per_cell = losses.negative_binomial_per_cell(
                batch["target"], outputs["reconstruction"], batch["library_size"], outputs["dispersion"]
            )
        else:
            per_cell = losses.mse_per_cell(batch["target"], outputs["reconstruction"])
        return ops.mean(per_cell)

    def classifier_loss(self, batch: dict, outputs: dict):
        labelled = ops.sum(batch["classes"], axis=-1)
        return losses.masked_mean(self.focal(batch["classes"], outputs["class_probabilities"]), labelled)

    def alignment_loss(self, batch: dict, outputs: dict):
        latent = outputs["aligned_latent"]
        if self.memory is not None:
            return losses.memory_kernel_alignment(
                latent,
                batch["aligned_types"],
                batch["batch_codes"],
                batch["condition_codes"],
                self.memory.contents(),
            )
        align = losses.class_batch_kernel_alignment if self.alignment == "kernel" else losses.class_batch_alignment
        return align(latent, self.memberships(batch, outputs), batch["batches"])

    def adversary_loss(self, batch: dict, outputs: dict):
        return ops.mean(losses.batch_cross_entropy_per_cell(batch["batches"], outputs["batch_probabilities"]))

    def aligned_latent(self, batch: dict, outputs: dict):
        """The latent the alignment judges: the one prediction will see, without dropout.

        Dropout noise hides from the alignment a batch offset smaller than the noise, which
        prediction, run without dropout, then shows.
        """
        if self.network.network_config.dropout == 0:
            return outputs["latent"]
        return self.network.latent_without_dropout(batch["x"])

    def memberships(self, batch: dict, outputs: dict):
        """Cell-type weights for the alignment: the label of labelled training cells, and for the
        other cells a one-hot pseudo-label where the classifier is at least ``pseudo_label_threshold``
        sure (no gradient through it) and that the epoch's novelty gate let through
        (``aligned_types`` not ``NOVEL``); zeros otherwise (a threshold above 1 uses labels only)."""
        labels = ops.cast(batch["classes"], "float32")
        probabilities = ops.stop_gradient(outputs["class_probabilities"])
        n_classes = ops.shape(probabilities)[-1]
        confident = ops.cast(ops.max(probabilities, axis=-1) >= self.pseudo_threshold, "float32")
        unlabelled = (1.0 - ops.sum(labels, axis=-1)) * ops.cast(batch["aligned_types"] != NOVEL, "float32")
        pseudo = ops.one_hot(ops.argmax(probabilities, axis=-1), n_classes) * (
            confident * unlabelled
        )[:, None]
        memberships = labels + pseudo
        conditions = ops.cast(batch["conditions"], "float32")
        if conditions.shape[-1] == 1:
            return memberships
        # One group per (type, condition): batches are compared only within a condition.
        return ops.reshape(memberships[:, :, None] * conditions[:, None, :], (ops.shape(memberships)[0], -1))

    def encoder_adversary_term(self, outputs):
        """The adversarial term of the main loss, written so that the reversed gradient moves the
        encoder the intended way: the batch head's cross-entropy (maximised through the reversal),
        or minus its confusion (so the encoder minimises the confusion)."""
        probabilities = outputs["batch_probabilities"]
        return -ops.mean(losses.batch_confusion_per_cell(probabilities))

    def extra_adversary_steps(self, batch: dict, outputs: dict, variables: list) -> None:
        """``adversary_steps - 1`` more updates of the batch head on this mini-batch's latent.

        The encoder is held still meanwhile, so the head catches up with the latent it has to
        judge: a head that lags behind only teaches the encoder to fool it, not to drop the batch.
        """
        seen = tf.stop_gradient(self.network.adversary_input(outputs["latent"], outputs))
        weight = self.term_weights[ADVERSARY]
        for _ in range(self.adversary_steps - 1):
            with tf.GradientTape() as tape:
                probabilities = self.network.adversary(seen, training=True)
                loss = weight * ops.mean(
                    losses.batch_cross_entropy_per_cell(batch["batches"], probabilities)
                )
                scaled = self.adversary_optimizer.scale_loss(loss)
            gradients = tape.gradient(scaled, variables)
            self.adversary_optimizer.apply_gradients(zip(gradients, variables, strict=True))

    def compile(self, optimizer, adversary_optimizer=None, **kwargs):
        """Like ``keras.Model.compile``, plus the batch head's own optimiser (GAN style)."""
        super().compile(optimizer=optimizer, **kwargs)
        self.adversary_optimizer = adversary_optimizer

    def train_step(self, batch):
        variables = self.phase_variables()
        adversarial = self.phase.trains(ADVERSARY)
        adversary_variables = self.network.adversary.trainable_variables if adversarial else []
        with tf.GradientTape(persistent=adversarial) as tape:
            outputs = self.network(
                batch["x"], training=True, decoder_batches=batch["target_batches"]
            )
            terms = self.loss_terms(batch, outputs)
            total = sum(self.term_weights[name] * value for name, value in terms.items())
            main_total = total
            if adversarial and self.confusion:
                main_total = total + self.term_weights[ADVERSARY] * (
                    self.encoder_adversary_term(outputs) - terms[ADVERSARY]
                )
            scaled = self.optimizer.scale_loss(main_total)
            adversary_scaled = self.adversary_optimizer.scale_loss(total) if adversarial else None
        self.optimizer.apply_gradients(
            zip(tape.gradient(scaled, variables), variables, strict=True)
        )
        if adversarial:
            gradients = tape.gradient(adversary_scaled, adversary_variables)
            self.adversary_optimizer.apply_gradients(
                zip(gradients, adversary_variables, strict=True)
            )
            self.extra_adversary_steps(batch, outputs, adversary_variables)
        del tape
        if self.memory is not None:
            self.memory.remember(
                tf.stop_gradient(outputs["aligned_latent"]),
                batch["aligned_types"],
                batch["batch_codes"],
                batch["condition_codes"],
            )
        self.trackers["loss"].update_state(total)
        for name, value in terms.items():
            self.trackers[f"{name}_loss"].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}
