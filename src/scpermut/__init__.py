"""scpermut: cell-type annotation and batch correction for single-cell RNA-seq atlases."""

import os
from importlib.metadata import PackageNotFoundError, version

# oneDNN's CPU kernels can round differently from one run to the next, which would break
# "same data + seed => bit-identical model". Off unless the user asks for it; this only works
# before TensorFlow is imported, so it is set here, when the package is first imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

try:
    __version__ = version("scpermut")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"


def __getattr__(name):
    # TensorFlow takes seconds to import: load the model class only when asked for.
    if name == "Model":
        from scpermut.model.api import Model

        return Model
    raise AttributeError(f"module 'scpermut' has no attribute {name!r}")


__all__ = ["Model", "__version__"]
