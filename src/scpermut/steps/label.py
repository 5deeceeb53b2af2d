"""``scpermut label``: annotate the unlabelled cells of one atlas file, or of a query file, in one process."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from scpermut.data.samplesheet import SampleSpec
from scpermut.errors import InputError
from scpermut.steps.run import RunOptions, run_steps


def label_atlas(
    atlas: str | Path,
    outdir: str | Path,
    options: RunOptions,
    query: str | Path | None = None,
    layer: str | None = None,
) -> dict:
    """``scpermut label``: annotate the unlabelled cells of one atlas file, or of a query file.

    The atlas is the reference: its ``class_key`` column holds the labels (``unlabeled_category``
    marks the cells to annotate) and its ``batch_key`` column the batches. A query file's
    batches come from its own ``batch_key`` column when it has one, else the file is one batch;
    its labels, when present, are used only to score the transfer. ``layer`` says where both
    files keep their raw counts (default: detect).
    """
    atlas = Path(atlas)
    specs = [_file_spec(atlas, "reference", batch_col=options.keys.batch_key, layer=layer)]
    if query is None:
        _check_something_to_annotate(atlas, options.keys)
    if query is not None:
        query = Path(query)
        batch_col = options.keys.batch_key if options.keys.batch_key in _obs_columns(query) else None
        specs.append(_file_spec(query, "query", batch_col=batch_col, layer=layer))
        if specs[0].sample == specs[1].sample:
            specs[1] = replace(specs[1], sample=f"{specs[1].sample}_query")
    return run_steps(specs, outdir, options, command="label")


def _file_spec(path: Path, role: str, batch_col: str | None, layer: str | None = None) -> SampleSpec:
    if not path.is_file():
        raise InputError(f"{path}: file not found.")
    return SampleSpec(sample=path.name.split(".")[0], path=path, role=role, batch_col=batch_col, layer=layer)


def _check_something_to_annotate(atlas: Path, keys) -> None:
    """Stop before any work when the atlas has no unlabelled cell and no query is given."""
    from scpermut.data.qc import unlabelled_lookalikes

    obs = _obs(atlas)
    if obs is None or keys.class_key not in obs:
        return  # QC names the missing column
    labels = obs[keys.class_key].astype(object)
    unlabelled = labels.isna() | (labels.astype(str) == keys.unlabeled_category)
    if unlabelled.any():
        return
    lookalikes = unlabelled_lookalikes(labels.astype(str), keys.unlabeled_category)
    hint = (
        "; " + ", ".join(f"{count} cells are labelled '{value}'" for value, count in lookalikes.items())
        + f": if those are the cells to annotate, pass `unlabeled_category={next(iter(lookalikes))}`"
        if lookalikes
        else "; give the cells to annotate with --query, or mark them with `unlabeled_category`"
    )
    raise InputError(
        f"{atlas}: nothing to annotate: every cell has a {keys.class_key} label and none is "
        f"'{keys.unlabeled_category}' (`unlabeled_category`){hint}."
    )


def _obs(path: Path):
    """An h5ad's ``obs`` without loading the matrix (None for other files)."""
    from scpermut.data.io import read_h5ad

    if path.suffix.lower() != ".h5ad":
        return None
    adata = read_h5ad(path, backed="r")
    obs = adata.obs.copy()
    adata.file.close()
    return obs


def _obs_columns(path: Path) -> list[str]:
    """Column names of an h5ad's ``obs`` without loading the matrix."""
    from scpermut.data.io import read_h5ad

    if path.suffix.lower() != ".h5ad":
        return []
    adata = read_h5ad(path, backed="r")
    columns = list(adata.obs.columns)
    adata.file.close()
    return columns
