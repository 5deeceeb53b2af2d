"""Training of the network, in four parts.

- :mod:`~scpermut.model.train.plan`: the phases to run (warm-up, full, fine-tune);
- :mod:`~scpermut.model.train.trainer` and :mod:`~scpermut.model.train.callbacks`: one phase's
  ``train_step`` and its callbacks (epoch data, reversal ramp, early stopping, checkpoints);
- :mod:`~scpermut.model.train.runner`: the run through every phase, with resumable checkpoints;
- :mod:`~scpermut.model.train.runtime`: device, precision, seeds and op determinism.
"""

from scpermut.model.train.plan import Phase, plan_phases
from scpermut.model.train.runner import TrainingRun, train_network
from scpermut.model.train.runtime import (
    describe_device,
    platform_record,
    seed_everything,
    select_device,
)
from scpermut.model.train.scores import novelty_model, predict_classes, reconstruction_novelty, validation_scores

__all__ = [
    "Phase",
    "TrainingRun",
    "validation_scores",
    "describe_device",
    "novelty_model",
    "reconstruction_novelty",
    "plan_phases",
    "platform_record",
    "predict_classes",
    "seed_everything",
    "select_device",
    "train_network",
]
