"""``PhaseTrainer``: the network wrapped for one phase, with a custom ``train_step``."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from scpermut.model import losses
from scpermut.model.network import ScpermutNetwork
from scpermut.model.settings import TrainingSettings
from scpermut.model.train.plan import Phase


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
        self.confusion = settings.adversary_objective == "confusion"
        self.pseudo_threshold = settings.pseudo_label_threshold
        self.align = (
            losses.class_batch_kernel_alignment
            if settings.alignment == "kernel"
            else losses.class_batch_alignment
        )
        if phase.classifier and not phase.freeze_encoder and settings.align_weight > 0:
            self.term_weights["alignment_loss"] = settings.align_weight
        self.adversary_steps = settings.adversary_steps
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
        if "alignment_loss" in self.term_weights:
            terms["alignment_loss"] = self.align(
                self.aligned_latent(batch, outputs), self.memberships(batch, outputs), batch["batches"]
            )
        if self.phase.adversary:
            terms["adversary_loss"] = ops.mean(
                losses.batch_cross_entropy_per_cell(
                    batch["batches"], outputs["batch_probabilities"]
                )
            )
        return terms

    def aligned_latent(self, batch: dict, outputs: dict):
        """The latent the alignment judges: the one prediction will see, without dropout.

        Measured on CellBench (leave one batch out), aligning the dropout-noised latent left
        the held-out batch apart at prediction time (iLISI 0.13): the noise hides an offset
        smaller than itself from the alignment, and prediction runs without the noise.
        """
        if self.network.network_config.dropout == 0:
            return outputs["latent"]
        return self.network.latent_without_dropout(batch["x"])

    def memberships(self, batch: dict, outputs: dict):
        """Cell-type weights for the alignment: the label of labelled training cells, and for the
        other cells a one-hot pseudo-label where the classifier is at least ``pseudo_label_threshold``
        sure (no gradient through it); zeros otherwise (a threshold above 1 uses labels only)."""
        labels = ops.cast(batch["classes"], "float32")
        probabilities = ops.stop_gradient(outputs["class_probabilities"])
        n_classes = ops.shape(probabilities)[-1]
        confident = ops.cast(ops.max(probabilities, axis=-1) >= self.pseudo_threshold, "float32")
        unlabelled = 1.0 - ops.sum(labels, axis=-1)
        pseudo = ops.one_hot(ops.argmax(probabilities, axis=-1), n_classes) * (
            confident * unlabelled
        )[:, None]
        return labels + pseudo

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
        The head is tiny next to the encoder and decoder, so the extra steps cost little.
        """
        seen = tf.stop_gradient(self.network.adversary_input(outputs["latent"], outputs))
        weight = self.term_weights["adversary_loss"]
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
            outputs = self.network(
                batch["x"], training=True, decoder_batches=batch["target_batches"]
            )
            terms = self.loss_terms(batch, outputs)
            total = sum(self.term_weights[name] * value for name, value in terms.items())
            main_total = total
            if self.phase.adversary and self.confusion:
                main_total = total + self.term_weights["adversary_loss"] * (
                    self.encoder_adversary_term(outputs) - terms["adversary_loss"]
                )
            scaled = self.optimizer.scale_loss(main_total)
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
        if adversary_variables:
            self.extra_adversary_steps(batch, outputs, adversary_variables)
        self.trackers["loss"].update_state(total)
        for name, value in terms.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}
