"""scpermut: cell-type annotation and batch correction for single-cell RNA-seq atlases.

The public API, re-exported from where it lives. TensorFlow takes seconds to import, so the
names are loaded on first use: ``import scpermut`` (and ``scpermut --help``) stay instant.
"""

import os

from scpermut._version import __version__

# oneDNN's CPU kernels can round differently from one run to the next, which would break
# "same data + seed => bit-identical model". Off unless the user asks for it; this only works
# before TensorFlow is imported, so it is set here, when the package is first imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

_PUBLIC = {
    "Model": "scpermut.model.api",
    "Keys": "scpermut.keys",
    "prepare_anndata": "scpermut.data.preprocess",
    "annotate": "scpermut.annotation",
    "evaluate": "scpermut.metrics",
}


def __getattr__(name):
    if name in _PUBLIC:
        from importlib import import_module

        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'scpermut' has no attribute {name!r}")


__all__ = ["Keys", "Model", "__version__", "annotate", "evaluate", "prepare_anndata"]
