"""The set-up record: which ``obs`` columns hold the labels and batches, declared once.

Like scvi-tools' ``setup_anndata``, the keys are chosen by the user at the first step and then
travel explicitly: :func:`scpermut.data.preprocess.prepare` takes them as an argument, writes
them to ``uns["scpermut_prepare"]``, the model folder stores them in ``preprocess.json`` and
prediction copies them to ``uns["scpermut"]["keys"]``. :meth:`Keys.from_record` is the one
place that reads them back from such a record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from scpermut.options import check, default


@dataclass(frozen=True)
class Keys:
    """The AnnData columns every step agrees on.

    Parameters
    ----------
    class_key
        ``obs`` column holding the cell-type label.
    batch_key
        ``obs`` column holding the batch (donor, technology, lab...).
    unlabeled_category
        Label value that marks a cell as unlabelled.
    condition_key
        ``obs`` column holding a biological condition that batch correction must keep (None: none).
    """

    class_key: str = default("class_key")
    batch_key: str = default("batch_key")
    unlabeled_category: str = default("unlabeled_category")
    condition_key: str | None = default("condition_key")

    def __post_init__(self):
        if self.condition_key == "":  # how records store "none"
            object.__setattr__(self, "condition_key", None)
        check(asdict(self))

    def to_dict(self) -> dict[str, str]:
        """``{"class_key": ..., "batch_key": ..., "unlabeled_category": ..., "condition_key": ...}``, ready
        for a record (h5ad ``uns`` stores no None: no condition is ``""``)."""
        return {name: "" if value is None else value for name, value in asdict(self).items()}

    @classmethod
    def from_record(cls, record) -> Keys:
        """The keys stored in a record (``uns["scpermut_prepare"]``, ``preprocess.json``, a QC summary).

        Names absent from the record keep their default.
        """
        return cls(**{f.name: str(record[f.name]) for f in fields(cls) if f.name in record})


KEY_NAMES = tuple(f.name for f in fields(Keys))
