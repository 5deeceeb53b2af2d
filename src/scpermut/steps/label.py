"""``scpermut label``: annotate the unlabelled cells of one atlas file, or of a query file, in one process."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from scpermut.data.samplesheet import SampleSpec
from scpermut.errors import InputError
from scpermut.steps.run import RunOptions, run_steps


def label_atlas(
    atlas: str | Path, outdir: str | Path, options: RunOptions, query: str | Path | None = None
) -> dict:
    """``scpermut label``: annotate the unlabelled cells of one atlas file, or of a query file.

    The atlas is the reference: its ``class_key`` column holds the labels (``unlabeled_category``
    marks the cells to annotate) and its ``batch_key`` column the batches. A query file's
    batches come from its own ``batch_key`` column when it has one, else the file is one batch;
    its labels, when present, are used only to score the transfer.
    """
    atlas = Path(atlas)
    specs = [_file_spec(atlas, "reference", batch_col=options.keys.batch_key)]
    if query is not None:
        query = Path(query)
        batch_col = options.keys.batch_key if options.keys.batch_key in _obs_columns(query) else None
        specs.append(_file_spec(query, "query", batch_col=batch_col))
        if specs[0].sample == specs[1].sample:
            specs[1] = replace(specs[1], sample=f"{specs[1].sample}_query")
    return run_steps(specs, outdir, options)


def _file_spec(path: Path, role: str, batch_col: str | None) -> SampleSpec:
    if not path.is_file():
        raise InputError(f"{path}: file not found.")
    return SampleSpec(sample=path.name.split(".")[0], path=path, role=role, batch_col=batch_col)


def _obs_columns(path: Path) -> list[str]:
    """Column names of an h5ad's ``obs`` without loading the matrix."""
    from scpermut.data.io import read_h5ad

    if path.suffix.lower() != ".h5ad":
        return []
    adata = read_h5ad(path, backed="r")
    columns = list(adata.obs.columns)
    adata.file.close()
    return columns
