"""The scpermut model: network, losses, permutation, training data and mini-batches, training, persistence and ``Model``.

``scpermut.model.settings`` imports without TensorFlow; everything else loads it.
"""


def __getattr__(name):
    if name == "Model":
        from scpermut.model.api import Model

        return Model
    raise AttributeError(f"module 'scpermut.model' has no attribute {name!r}")


__all__ = ["Model"]
