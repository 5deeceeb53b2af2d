"""The network: gradient reversal, heads switched on and off, bottleneck and decoders."""

from __future__ import annotations

import numpy as np
import pytest

from scpermut.model.network import GradientReversal, ScpermutNetwork
from scpermut.model.settings import NetworkConfig


@pytest.fixture(scope="module")
def tf():
    import tensorflow  # after scpermut.model (imported above), which keeps oneDNN off for determinism

    return tensorflow


def _config(**changes) -> NetworkConfig:
    values = {
        "n_genes": 12,
        "n_classes": 3,
        "n_batches": 2,
        "hidden_layers": (16, 8),
        "latent_dim": 4,
        "seed": 0,
        "batch_head": True,
    }
    return NetworkConfig(**{**values, **changes})


@pytest.mark.parametrize("strength", [1.0, 0.25])
def test_gradient_reversal_is_identity_forward_and_flips_the_gradient(tf, strength):
    layer = GradientReversal(strength)
    x = tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
    weights = tf.constant([[1.0, -2.0, 3.0]])
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(y * weights)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_allclose(
        tape.gradient(loss, x).numpy(), -strength * np.repeat(weights.numpy(), 2, axis=0)
    )


def test_gradient_reversal_strength_changes_inside_a_compiled_function(tf):
    layer = GradientReversal(1.0)
    x = tf.Variable(tf.ones((1, 2)))

    @tf.function
    def gradient():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x))
        return tape.gradient(loss, x)

    np.testing.assert_allclose(gradient().numpy(), -1.0)
    layer.strength.assign(0.1)
    np.testing.assert_allclose(gradient().numpy(), -0.1)


def test_network_outputs_every_head_with_the_right_shapes():
    network = ScpermutNetwork(_config()).build_for_inputs()
    outputs = network(np.random.default_rng(0).random((5, 12), dtype=np.float32))
    assert outputs["latent"].shape == (5, 4)
    assert outputs["reconstruction"].shape == (5, 12)
    np.testing.assert_allclose(outputs["class_probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(outputs["batch_probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("switch", "missing"),
    [("use_classifier", "class_probabilities"), ("batch_head", "batch_probabilities")],
)
def test_switched_off_heads_are_not_built(switch, missing):
    network = ScpermutNetwork(_config(**{switch: False})).build_for_inputs()
    outputs = network(np.ones((2, 12), np.float32))
    assert missing not in outputs
    assert all(missing.split("_")[0] not in variable.path for variable in network.weights)


def test_bottleneck_is_linear_by_default_and_honours_an_activation():
    x = np.random.default_rng(1).normal(size=(64, 12)).astype(np.float32)
    linear = ScpermutNetwork(_config()).build_for_inputs()(x)["latent"].numpy()
    relu = (
        ScpermutNetwork(_config(latent_activation="relu")).build_for_inputs()(x)["latent"].numpy()
    )
    assert linear.min() < 0
    assert relu.min() >= 0 and relu.max() > 0


def test_negative_binomial_decoder_gives_gene_fractions_and_positive_dispersions():
    outputs = ScpermutNetwork(_config(reconstruction="nb")).build_for_inputs()(
        np.ones((3, 12), np.float32)
    )
    np.testing.assert_allclose(outputs["reconstruction"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert outputs["dispersion"].shape == (3, 12)
    assert (outputs["dispersion"].numpy() > 0).all()


def test_conditional_decoder_depends_on_the_batch_and_the_latent_does_not():
    network = ScpermutNetwork(_config(conditional_decoder=True)).build_for_inputs()
    x = np.random.default_rng(2).random((3, 12), dtype=np.float32)
    first = network(x, decoder_batches=np.tile([[1.0, 0.0]], (3, 1)).astype(np.float32))
    second = network(x, decoder_batches=np.tile([[0.0, 1.0]], (3, 1)).astype(np.float32))
    np.testing.assert_array_equal(first["latent"].numpy(), second["latent"].numpy())
    np.testing.assert_array_equal(
        first["class_probabilities"].numpy(), second["class_probabilities"].numpy()
    )
    assert not np.allclose(first["reconstruction"].numpy(), second["reconstruction"].numpy())
    # Prediction without a batch (a batch never seen in training) still works: encoder only.
    np.testing.assert_array_equal(network(x)["latent"].numpy(), first["latent"].numpy())


def test_conditional_adversary_sees_the_class_probabilities_without_training_the_classifier(tf):
    network = ScpermutNetwork(_config(conditional_adversary=True)).build_for_inputs()
    # The batch head's first layer reads the latent and the three class probabilities.
    assert network.adversary.layers[0].kernel.shape == (4 + 3, 64)
    x = np.random.default_rng(3).random((5, 12), dtype=np.float32)
    with tf.GradientTape() as tape:
        batch_loss = tf.reduce_sum(network(x, training=True)["batch_probabilities"][:, 0])
    classifier_gradients = tape.gradient(batch_loss, network.classifier.trainable_variables)
    assert all(gradient is None for gradient in classifier_gradients)
    plain = ScpermutNetwork(_config()).build_for_inputs()
    assert plain.adversary.layers[0].kernel.shape == (4, 64)


def test_latent_without_dropout_is_the_training_latent_minus_the_dropout_noise():
    x = np.random.default_rng(4).random((32, 12), dtype=np.float32)
    noisy = ScpermutNetwork(_config(dropout=0.5)).build_for_inputs()
    clean = noisy.latent_without_dropout(x).numpy()
    # No dropout draw: the same cells give the same latent, unlike the dropout-noised one.
    np.testing.assert_array_equal(clean, noisy.latent_without_dropout(x).numpy())
    assert not np.allclose(clean, noisy(x, training=True)["latent"].numpy())
    # Batch-norm still normalises with the mini-batch, as in training: with dropout 0 the two agree.
    plain = ScpermutNetwork(_config(dropout=0.0)).build_for_inputs()
    np.testing.assert_allclose(
        plain.latent_without_dropout(x).numpy(), plain(x, training=True)["latent"].numpy(), rtol=1e-6, atol=1e-6
    )
    assert not np.allclose(plain.latent_without_dropout(x).numpy(), plain(x)["latent"].numpy())


def test_inference_streams_the_encoder_and_classifier_without_the_decoder(monkeypatch):
    import scipy.sparse as sp

    from scpermut.model.minibatches import infer

    network = ScpermutNetwork(_config()).build_for_inputs()
    expression = sp.random(10, 12, density=0.5, format="csr", dtype=np.float32, random_state=0)
    whole = network(expression.toarray())

    def decoder_ran(*args, **kwargs):
        raise AssertionError("inference ran the decoder")

    monkeypatch.setattr(network.decoder, "call", decoder_ran)
    with pytest.raises(AssertionError, match="decoder"):
        network(expression.toarray())  # the whole network does run it
    outputs = infer(network, expression, batch_size=3)  # 4 chunks, the last of one row
    assert set(outputs) == {"latent", "class_probabilities"}
    for name, values in outputs.items():
        assert values.dtype == np.float32
        np.testing.assert_allclose(values, whole[name].numpy(), rtol=1e-5, atol=1e-6)
    rows = np.array([9, 0, 4])
    picked = infer(network, expression, batch_size=2, rows=rows, names=["latent"])
    assert set(picked) == {"latent"}
    np.testing.assert_array_equal(picked["latent"], infer(network, expression[rows], 2)["latent"])
    assert infer(network, expression, 4, rows=np.array([], int))["latent"].shape == (0, 4)
