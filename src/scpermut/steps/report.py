"""``scpermut report``: score an annotated h5ad and write the HTML report, metrics and MultiQC files."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad

from scpermut import constants, metrics
from scpermut._atomic import write_text
from scpermut.data.io import read_h5ad
from scpermut.errors import InputError
from scpermut.keys import Keys
from scpermut.model.persistence import read_model_record
from scpermut.options import default
from scpermut.report.files import report_outputs, report_texts

log = logging.getLogger(__name__)


def write_report(
    annotated: str | Path | ad.AnnData,
    model_dir: str | Path,
    outdir: str | Path,
    settings: metrics.MetricSettings | None = None,
    recorded_paths: dict[str, str] | None = None,
    warnings: list[str] = (),
) -> dict:
    """Score an annotated AnnData and write the report, metrics and MultiQC files to ``outdir``.

    The keys (class, batch, unlabelled category) and the seed are the ones the model was
    trained with, read from its folder. Everything is computed before the first file is
    written, and each file is written atomically, so a failure leaves no partial report.

    Parameters
    ----------
    annotated
        Output of ``scpermut predict`` (path or AnnData).
    model_dir
        The model folder used for the prediction (``preprocess.json``, ``config.json``,
        ``run.json``, ``history.csv``; absent records leave their part of the report empty).
    outdir
        Folder for ``report.html``, ``metrics.json``, ``metrics.tsv`` and ``*_mqc.tsv``.
    settings
        How the latent space is scored; default: the default settings with the run's seed.
    recorded_paths
        The paths to record for ``annotated`` and ``model`` when they differ from where they
        are read now (``scpermut run`` builds in a temporary folder).
    warnings
        The run's warnings, shown at the top of the report and listed in ``metrics.json``.

    Returns
    -------
    dict
        ``outputs`` (name to written path) and ``headline`` (see :func:`scpermut.metrics.headline`).
    """
    source = str(annotated) if not isinstance(annotated, ad.AnnData) else "AnnData in memory"
    source = (recorded_paths or {}).get("annotated", source)
    adata = annotated if isinstance(annotated, ad.AnnData) else _read_annotated(Path(annotated))
    model = read_model_record(model_dir, complete=False)
    keys = Keys.from_record(model.preprocess)
    for name, column in (("class_key", keys.class_key), ("batch_key", keys.batch_key)):
        if column not in adata.obs:
            log.warning("%s: obs has no column '%s' (%s); the scores that need it are left out", source, column, name)
    _warn_foreign_labels(adata, model.classes, keys, source)
    if settings is None:
        settings = metrics.MetricSettings(seed=int(model.training.get("seed", default("seed"))))
    texts, headline = report_texts(
        adata, model, keys, settings, inputs={"annotated": source, "model": str(model_dir), **(recorded_paths or {})},
        source=source,
        warnings=warnings,
    )
    outputs = report_outputs(outdir)
    written = {}
    for name, content in texts.items():
        if content is not None:
            write_text(outputs[name], content)
            written[name] = outputs[name]
        elif outputs[name].exists():  # left by an earlier report on other data: it would mislead MultiQC
            outputs[name].unlink()
    return {"outputs": written, "headline": headline}


def _warn_foreign_labels(adata: ad.AnnData, classes: list[str], keys: Keys, source: str) -> None:
    """Explain scores of query cells whose labels are not the model's type names (another vocabulary)."""
    if not classes or constants.PREDICTION not in adata.obs:
        return
    truth = metrics.known_labels(adata, keys.class_key, keys.unlabeled_category)
    if constants.SPLIT in adata.obs:
        truth = truth[(adata.obs[constants.SPLIT].astype(str) == constants.SPLIT_QUERY).to_numpy()]
    counts = truth.dropna().astype(str).value_counts()
    foreign = counts[~counts.index.isin([str(name) for name in classes])]
    if foreign.empty:
        return
    listed = ", ".join(f"'{label}' ({count} cells)" for label, count in foreign.head(5).items()) + (", ..." if len(foreign) > 5 else "")
    model_names = ", ".join(f"'{name}'" for name in list(classes)[:5]) + (", ..." if len(classes) > 5 else "")
    if len(foreign) == len(counts):
        log.warning(
            "%s: none of the query's labels (%s: %s) is a type of the model (%s): the query's scores compare two "
            "vocabularies and are 0 by construction; rename the query's labels to the reference's names to score the transfer",
            source, keys.class_key, listed, model_names,
        )
    else:
        log.warning(
            "%s: query labels that are not types of the model (%s; the model's: %s) count as wrong predictions in the scores",
            source, listed, model_names,
        )


def _read_annotated(path: Path) -> ad.AnnData:
    adata = read_h5ad(path, what="annotated h5ad")
    if constants.PREDICTION not in adata.obs and constants.LATENT not in adata.obsm:
        raise InputError(
            f"{path}: no obs['{constants.PREDICTION}'] nor obsm['{constants.LATENT}']; run `scpermut predict` on it first."
        )
    return adata
