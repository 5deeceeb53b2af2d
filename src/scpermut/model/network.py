"""The network alone: encoder -> latent -> decoder, a classifier head and an optional batch head
behind gradient reversal.

Nothing here knows about losses, phases or data; :mod:`scpermut.model.train` drives it.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from scpermut.model.settings import NetworkConfig


@keras.saving.register_keras_serializable(package="scpermut")
class GradientReversal(layers.Layer):
    """Identity on the way forward; multiplies the gradient by ``-strength`` on the way back.

    ``strength`` is a non-trainable variable so that a schedule can ramp it during training
    without retracing the training function.
    """

    def __init__(self, strength: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_strength = float(strength)

    def build(self, input_shape):
        self.strength = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.initial_strength),
            trainable=False,
            name="strength",
        )

    def call(self, inputs):
        strength = ops.cast(self.strength, inputs.dtype)

        @ops.custom_gradient
        def reverse(x):
            def grad(*args, upstream=None):
                if upstream is None:
                    (upstream,) = args
                return ops.negative(strength) * upstream

            return x, grad

        return reverse(inputs)

    def get_config(self):
        return {**super().get_config(), "strength": self.initial_strength}


@keras.saving.register_keras_serializable(package="scpermut")
class GeneDispersion(layers.Layer):
    """One learned negative-binomial dispersion per gene, broadcast to the batch."""

    def __init__(self, n_genes: int, **kwargs):
        super().__init__(**kwargs)
        self.n_genes = n_genes

    def build(self, input_shape):
        self.log_theta = self.add_weight(
            shape=(self.n_genes,), initializer="zeros", name="log_theta"
        )

    def call(self, inputs):
        theta = ops.exp(ops.cast(self.log_theta, "float32"))
        return ops.broadcast_to(theta, (ops.shape(inputs)[0], self.n_genes))

    def get_config(self):
        return {**super().get_config(), "n_genes": self.n_genes}


def _dense_block(width: int, config: NetworkConfig, seed: int, name: str) -> list[layers.Layer]:
    block = [layers.Dense(width, name=f"{name}_dense")]
    if config.batch_norm:
        block.append(layers.BatchNormalization(name=f"{name}_norm"))
    block.append(layers.Activation(config.activation, name=f"{name}_act"))
    if config.dropout > 0:
        block.append(layers.Dropout(config.dropout, seed=seed, name=f"{name}_dropout"))
    return block


def _stack(widths, config: NetworkConfig, seed: int, prefix: str) -> list[layers.Layer]:
    stack = []
    for index, width in enumerate(widths):
        stack += _dense_block(width, config, seed + index, f"{prefix}{index}")
    return stack


def _softmax_head(widths, n_outputs: int, config: NetworkConfig, seed: int, name: str, output_name: str):
    """Hidden blocks on the latent, then a float32 softmax over ``n_outputs`` (classes or batches)."""
    return keras.Sequential(
        _stack(widths, config, seed, name)
        + [layers.Dense(n_outputs, activation="softmax", dtype="float32", name=output_name)],
        name=name,
    )


@keras.saving.register_keras_serializable(package="scpermut")
class ScpermutNetwork(keras.Model):
    """Encoder, decoder, classifier head and batch head sharing one latent space.

    Calling the network on log-normalised expression returns a dict with ``latent`` and
    ``reconstruction`` (plus ``dispersion`` for the negative-binomial decoder),
    ``class_probabilities`` when the classifier is on and ``batch_probabilities`` when the
    batch head is built.
    """

    def __init__(self, config: NetworkConfig | dict, **kwargs):
        super().__init__(**kwargs)
        self.network_config = (
            config if isinstance(config, NetworkConfig) else NetworkConfig.from_dict(config)
        )
        cfg = self.network_config
        self.encoder = keras.Sequential(
            _stack(cfg.hidden_layers, cfg, cfg.seed, "encoder")
            + [layers.Dense(cfg.latent_dim, activation=cfg.latent_activation, name="latent")],
            name="encoder",
        )
        decoder_output = "softmax" if cfg.reconstruction == "nb" else "linear"
        self.decoder = keras.Sequential(
            _stack(reversed(cfg.hidden_layers), cfg, cfg.seed + 100, "decoder")
            + [
                layers.Dense(
                    cfg.n_genes, activation=decoder_output, dtype="float32", name="reconstruction"
                )
            ],
            name="decoder",
        )
        self.dispersion = (
            GeneDispersion(cfg.n_genes, name="dispersion") if cfg.reconstruction == "nb" else None
        )
        self.classifier = None
        if cfg.use_classifier:
            self.classifier = _softmax_head(
                cfg.classifier_layers, cfg.n_classes, cfg, cfg.seed + 200, "classifier", "class_probabilities"
            )
        self.gradient_reversal = None
        self.adversary = None
        if cfg.batch_head:
            self.gradient_reversal = GradientReversal(cfg.grl_lambda, name="gradient_reversal")
            self.adversary = _softmax_head(
                cfg.adversary_layers, cfg.n_batches, cfg, cfg.seed + 300, "adversary", "batch_probabilities"
            )

    def call(self, inputs, training=False, decoder_batches=None):
        """``decoder_batches``: one-hot batch the decoder reconstructs for (conditional decoder only).

        Without it a conditional decoder gets zeros: prediction needs the encoder alone, so cells
        of a batch never seen in training still get a latent and a label.
        """
        latent = self.encoder(inputs, training=training)
        decoder_input = latent
        if self.network_config.conditional_decoder:
            if decoder_batches is None:
                decoder_batches = ops.zeros((ops.shape(latent)[0], self.network_config.n_batches))
            decoder_input = ops.concatenate(
                [latent, ops.cast(decoder_batches, latent.dtype)], axis=-1
            )
        outputs = {
            "latent": ops.cast(latent, "float32"),
            "reconstruction": self.decoder(decoder_input, training=training),
        }
        if self.dispersion is not None:
            outputs["dispersion"] = self.dispersion(latent)
        if self.classifier is not None:
            outputs["class_probabilities"] = self.classifier(latent, training=training)
        if self.adversary is not None:
            outputs["batch_probabilities"] = self.adversary(
                self.adversary_input(self.gradient_reversal(latent), outputs), training=training
            )
        return outputs

    def encode(self, inputs):
        """What inference needs, without the decoder: ``latent`` and, with the classifier,
        ``class_probabilities`` (inference mode: batch-norm's moving statistics, no dropout)."""
        latent = self.encoder(inputs, training=False)
        outputs = {"latent": ops.cast(latent, "float32")}
        if self.classifier is not None:
            outputs["class_probabilities"] = self.classifier(latent, training=False)
        return outputs

    def encoded_widths(self) -> dict[str, int]:
        """Column count of each output of :meth:`encode`."""
        widths = {"latent": self.network_config.latent_dim}
        if self.classifier is not None:
            widths["class_probabilities"] = self.network_config.n_classes
        return widths

    def latent_without_dropout(self, inputs):
        """The latent in training mode (batch-norm on the mini-batch's statistics) without dropout:
        the latent that prediction will see, for the loss terms that must judge that latent rather
        than a dropout-noised copy (dropout noise hides a batch's offset below its scale)."""
        hidden = inputs
        for layer in self.encoder.layers:
            if not isinstance(layer, layers.Dropout):
                hidden = layer(hidden, training=True)
        return ops.cast(hidden, "float32")

    def adversary_input(self, latent, outputs: dict):
        """What the batch head sees: the latent, and with ``conditional_adversary`` the class
        probabilities as given facts (no gradient flows back through them)."""
        if not (self.network_config.conditional_adversary and "class_probabilities" in outputs):
            return latent
        probabilities = ops.stop_gradient(outputs["class_probabilities"])
        return ops.concatenate([latent, ops.cast(probabilities, latent.dtype)], axis=-1)

    def build_for_inputs(self) -> ScpermutNetwork:
        """Create every weight by calling the network once on a zero batch; returns self."""
        self(ops.zeros((2, self.network_config.n_genes)), training=False)
        return self

    def get_config(self):
        return {"name": self.name, "config": self.network_config.to_dict()}
