"""Settings of the network and of training: plain dataclasses, importable without TensorFlow.

Defaults and limits of the options a user sets come from :mod:`scpermut.options`; the others
(layer activations, head widths, the batch head's learning-rate factor) are Python-only and set here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from scpermut.options import check, default


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
    use_classifier
        Build the classifier head (ablation switch).
    batch_head
        Build the batch head behind gradient reversal: set by training when ``dann_weight`` is
        above 0 and there are two batches or more (not a user option).
    conditional_decoder
        The decoder also gets the one-hot batch of the cell it reconstructs (as scVI's does), so
        the latent need not carry the batch to reconstruct batch effects. Prediction uses the
        encoder only, so unseen batches still map.
    conditional_adversary
        The batch head also gets the classifier's probabilities (no gradient through them), so it
        learns the batch given the cell type: the encoder then removes what the latent says
        about the batch beyond the type, and batches that hold the types in different
        proportions are not pushed to mix different types.
    grl_lambda
        Strength of the gradient reversal between the latent and the batch head.
    seed
        Seed of the dropout layers.
    """

    n_genes: int
    n_classes: int
    n_batches: int
    hidden_layers: tuple[int, ...] = default("hidden_layers")
    latent_dim: int = default("latent_dim")
    dropout: float = default("dropout")
    batch_norm: bool = True
    activation: str = "relu"
    latent_activation: str = "linear"
    classifier_layers: tuple[int, ...] = ()
    adversary_layers: tuple[int, ...] = (64,)
    reconstruction: str = default("reconstruction")
    use_classifier: bool = default("use_classifier")
    batch_head: bool = False
    conditional_decoder: bool = default("conditional_decoder")
    conditional_adversary: bool = default("conditional_adversary")
    grl_lambda: float = default("grl_lambda")
    seed: int = default("seed")

    def __post_init__(self):
        check(dataclasses.asdict(self))
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
        """Inverse of :meth:`to_dict`; reads model folders of earlier versions too."""
        values = dict(values)
        if "use_dann" in values:  # before 0.1.0's alignment-first names: the batch head's switch
            values["batch_head"] = bool(values.pop("use_dann"))
        return cls(**values)


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
        The batch head learns this many times faster than the rest, so that the reversed gradient
        removes the batch from the latent instead of fooling a stale head (CHANGELOG, issue 8).
    epochs_warmup, epochs_full, epochs_finetune
        Epochs of each phase (warm-up and full are maxima when early stopping applies).
    epoch_cells
        An epoch feeds at most this many cells (0: all of the phase's cells): on a larger data set
        consecutive epochs walk through one shuffled pass over the cells, then the next.
    patience, early_stopping_metric
        Phases that train the classifier stop after ``patience`` epochs without a better
        validation score (``"balanced_accuracy"`` or ``"mcc"``) and keep their best weights.
    min_epochs
        Early stopping never ends a phase before this many epochs (nor before the phase's last
        ``patience`` epochs, so a short phase can stop too), and an epoch that ties the
        best score replaces it (a tiny validation set moves in coarse steps; the later weights
        have trained longer).
    min_validation_per_class
        Early stopping needs at least this many validation cells in every cell type. With fewer
        (a sparsely labelled atlas), its scores are too coarse to choose an epoch: the
        validation cells train too and every phase runs its full schedule.
    rec_weight, clf_weight, align_weight, dann_weight
        Loss weights; 0 switches a term off (``dann_weight`` 0: no batch head).
    focal_gamma
        Focal loss focusing parameter (class weights alpha are always the balanced ones).
    adversary_objective
        What the encoder does to the batch head: ``"reversal"`` maximises its cross-entropy
        (classic DANN), ``"confusion"`` pushes its prediction towards uniform over the batches.
        The batch head itself always minimises its cross-entropy.
    adversary_steps
        Updates of the batch head per mini-batch (the first with the encoder's step, the others
        on the same latent with the encoder held still).
    alignment
        ``"kernel"``: each (type, batch) distribution is compared with the type's by a Gaussian
        kernel MMD at the type's own scale; ``"centroids"``: only their centroids are compared.
    pseudo_label_threshold
        Unlabelled and query cells join the alignment under the type the classifier gives them
        with at least this probability (above 1: labelled cells only).
    pseudo_permutation
        In the phase that permutes and trains the classifier, unlabelled and query cells the
        classifier gives a type with at least ``pseudo_label_threshold`` probability reconstruct
        a labelled cell of that type, from another batch when it has enough (re-predicted at
        every epoch); the others reconstruct themselves.
    grl_ramp
        Raise the gradient reversal from 0 to ``grl_lambda`` over the adversarial epochs.
    use_permutation, permute_across_batches
        Labelled cells reconstruct a same-type cell, from another batch when one exists.
    labelled_share
        In the phases that train the classifier, at least this share of every mini-batch is
        labelled cells, drawn class-balanced (0: cells in plain random order). Every cell is
        still fed once per epoch, so an epoch has ``1 / (1 - share)`` times as many cells.
    calibrate
        Fit a temperature on the validation cells so that ``scpermut_confidence`` matches
        accuracy; the ECE before and after goes to the run record.
    """

    seed: int = default("seed")
    batch_size: int = default("batch_size")
    learning_rate: float = default("learning_rate")
    adversary_lr_factor: float = 20.0
    epochs_warmup: int = default("epochs_warmup")
    epochs_full: int = default("epochs_full")
    epochs_finetune: int = default("epochs_finetune")
    epoch_cells: int = default("epoch_cells")
    patience: int = default("patience")
    min_epochs: int = default("min_epochs")
    min_validation_per_class: int = default("min_validation_per_class")
    early_stopping_metric: str = default("early_stopping_metric")
    rec_weight: float = default("rec_weight")
    clf_weight: float = default("clf_weight")
    dann_weight: float = default("dann_weight")
    focal_gamma: float = default("focal_gamma")
    grl_ramp: bool = default("grl_ramp")
    adversary_objective: str = default("adversary_objective")
    adversary_steps: int = default("adversary_steps")
    align_weight: float = default("align_weight")
    alignment: str = default("alignment")
    pseudo_permutation: bool = default("pseudo_permutation")
    pseudo_label_threshold: float = default("pseudo_label_threshold")
    use_permutation: bool = default("use_permutation")
    permute_across_batches: bool = default("permute_across_batches")
    labelled_share: float = default("labelled_share")
    calibrate: bool = default("calibrate")

    def __post_init__(self):
        check(dataclasses.asdict(self))

    def to_dict(self) -> dict:
        """Plain JSON-ready values."""
        return dataclasses.asdict(self)
