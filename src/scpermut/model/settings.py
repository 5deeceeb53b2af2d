"""Settings of the network and of training: plain dataclasses, importable without TensorFlow.

The CLI reads its defaults from here, so ``scpermut --help`` stays instant and the defaults
exist once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from scpermut.errors import InputError

RECONSTRUCTIONS = ("mse", "nb")


@dataclass(frozen=True)
class NetworkConfig:
    """Shape of the network; stored as ``config.json`` in a model folder.

    Parameters
    ----------
    n_genes, n_classes, n_batches
        Input width, number of cell types, number of batches.
    hidden_layers
        Encoder layer widths; the decoder mirrors them.
    latent_dim
        Size of the latent space ``z``.
    dropout
        Dropout rate after each hidden layer.
    batch_norm
        Batch normalisation after each hidden dense layer.
    activation
        Activation of the hidden layers.
    latent_activation
        Activation of the bottleneck; linear by default so the latent is not clipped.
    classifier_layers, adversary_layers
        Hidden layer widths of the classifier and batch heads (empty: a single softmax layer).
    reconstruction
        ``"mse"`` (decoder predicts log-normalised expression) or ``"nb"`` (decoder predicts
        negative-binomial means of raw counts and learns one dispersion per gene).
    use_classifier, use_dann
        Build the classifier head and the batch head (ablation switches).
    grl_lambda
        Strength of the gradient reversal between the latent and the batch head.
    seed
        Seed of the dropout layers.
    """

    n_genes: int
    n_classes: int
    n_batches: int
    hidden_layers: tuple[int, ...] = (256, 128)
    latent_dim: int = 32
    dropout: float = 0.1
    batch_norm: bool = True
    activation: str = "relu"
    latent_activation: str = "linear"
    classifier_layers: tuple[int, ...] = ()
    adversary_layers: tuple[int, ...] = (64,)
    reconstruction: str = "mse"
    use_classifier: bool = True
    use_dann: bool = True
    grl_lambda: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.reconstruction not in RECONSTRUCTIONS:
            raise InputError(
                f"--reconstruction: must be one of {', '.join(RECONSTRUCTIONS)}, not '{self.reconstruction}'."
            )
        object.__setattr__(self, "hidden_layers", tuple(int(n) for n in self.hidden_layers))
        object.__setattr__(self, "classifier_layers", tuple(int(n) for n in self.classifier_layers))
        object.__setattr__(self, "adversary_layers", tuple(int(n) for n in self.adversary_layers))

    def to_dict(self) -> dict:
        """Plain JSON-ready values."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: dict) -> NetworkConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**values)


EARLY_STOPPING_METRICS = ("balanced_accuracy", "mcc")
DEVICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class TrainingSettings:
    """How the network is trained; stored in ``config.json`` and ``run.json``.

    Parameters
    ----------
    seed
        Seeds weights, dropout, cell order and permutation partners: one seed, one result.
    batch_size, learning_rate
        Mini-batch size and Adam learning rate of the encoder, decoder and classifier.
    adversary_lr_factor
        The batch head learns this many times faster than the rest. With an adversary as
        slow as the encoder, the reversed gradient only fools the current adversary (its loss
        rose above chance on the shipped data) instead of removing the batch from the latent.
    epochs_warmup, epochs_full, epochs_finetune
        Epochs of each phase (warm-up and full are maxima when early stopping applies).
    patience, early_stopping_metric
        Phases that train the classifier stop after ``patience`` epochs without a better
        validation score (``"balanced_accuracy"`` or ``"mcc"``) and keep their best weights.
    rec_weight, clf_weight, dann_weight
        Loss weights; 0 switches a term off.
    focal_gamma
        Focal loss focusing parameter (class weights alpha are always the balanced ones).
    grl_ramp
        Raise the gradient reversal from 0 to ``grl_lambda`` over the adversarial epochs.
    use_permutation, permute_across_batches
        Labelled cells reconstruct a same-type cell, from another batch when one exists.
    """

    seed: int = 0
    batch_size: int = 128
    learning_rate: float = 1e-3
    adversary_lr_factor: float = 20.0
    epochs_warmup: int = 10
    epochs_full: int = 40
    epochs_finetune: int = 10
    patience: int = 8
    early_stopping_metric: str = "balanced_accuracy"
    rec_weight: float = 1.0
    clf_weight: float = 1.0
    dann_weight: float = 0.5
    focal_gamma: float = 2.0
    grl_ramp: bool = True
    use_permutation: bool = True
    permute_across_batches: bool = True

    def __post_init__(self):
        if self.early_stopping_metric not in EARLY_STOPPING_METRICS:
            raise InputError(
                f"--early_stopping_metric: must be one of {', '.join(EARLY_STOPPING_METRICS)}, not '{self.early_stopping_metric}'."
            )
        if self.batch_size < 2:
            raise InputError(
                "--batch_size: must be at least 2 (batch normalisation needs two cells)."
            )

    def to_dict(self) -> dict:
        """Plain JSON-ready values."""
        return dataclasses.asdict(self)


# CLI switches spelt as modules (`--no-dann`) name the ``use_*`` fields of NetworkConfig/TrainingSettings.
_CLI_SWITCHES = {
    "dann": "use_dann",
    "classifier": "use_classifier",
    "permutation": "use_permutation",
}


def options_from_cli(flags: dict) -> dict:
    """Turn the CLI's training flags into ``scpermut.Model`` keyword arguments (``dann`` -> ``use_dann``)."""
    return {_CLI_SWITCHES.get(name, name): value for name, value in flags.items()}


def cli_defaults() -> dict:
    """Default of every training flag, keyed by its CLI name."""
    defaults = {
        field.name: field.default
        for field in dataclasses.fields(NetworkConfig)
        if field.default is not dataclasses.MISSING
    }
    defaults.update({field.name: field.default for field in dataclasses.fields(TrainingSettings)})
    renamed = {model_name: cli_name for cli_name, model_name in _CLI_SWITCHES.items()}
    return {renamed.get(name, name): value for name, value in defaults.items()}
