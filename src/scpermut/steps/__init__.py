"""The file-in/file-out steps the CLI and the Nextflow modules call.

One module per step: :mod:`~scpermut.steps.qc`, :mod:`~scpermut.steps.prepare`,
:mod:`~scpermut.steps.train`, :mod:`~scpermut.steps.predict`, :mod:`~scpermut.steps.report`,
and the chained :mod:`~scpermut.steps.run` and :mod:`~scpermut.steps.label`. A step reads its
inputs, calls functions on AnnData and arrays (``scpermut.data``, ``scpermut.model``,
``scpermut.annotation``, ``scpermut.metrics``, ``scpermut.report``) and writes its outputs
atomically. Nothing below this layer opens a file other than the model folder.

Import a step's module directly: the train and predict steps load TensorFlow.
"""
