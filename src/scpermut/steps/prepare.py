"""``scpermut prepare``: merge ``scpermut qc`` outputs into ``prepared.h5ad`` and its summary."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import anndata as ad
import pandas as pd

from scpermut import constants
from scpermut._atomic import atomic_paths, json_text
from scpermut.data.io import read_h5ad
from scpermut.data.preprocess import PrepareSettings, prepare
from scpermut.errors import InputError
from scpermut.keys import KEY_NAMES, Keys


def read_qc_outputs(paths: list[str | Path]) -> tuple[list[ad.AnnData], Keys]:
    """Read ``scpermut qc`` outputs, check they agree on the keys and return the samples and those keys.

    The keys were chosen at ``scpermut qc`` and recorded in each file; this is the one place
    the prepare step reads them back (its CLI takes no key flags).
    """
    samples = []
    for path in paths:
        adata = read_h5ad(path)
        if constants.QC_UNS not in adata.uns:
            raise InputError(f"{path}: not an output of `scpermut qc` (no uns['{constants.QC_UNS}']); run `scpermut qc` on it first.")
        samples.append(adata)
    first = {key: samples[0].uns[constants.QC_UNS][key] for key in KEY_NAMES}
    for path, adata in zip(paths, samples):
        for key in KEY_NAMES:
            if adata.uns[constants.QC_UNS][key] != first[key]:
                raise InputError(f"{path}: {key} is '{adata.uns[constants.QC_UNS][key]}' but '{first[key]}' in {paths[0]}; QC every sample with the same keys.")
    names = pd.Series([adata.uns[constants.QC_UNS]["sample"] for adata in samples])
    if names.duplicated().any():
        raise InputError(f"sample id(s) {', '.join(sorted(set(names[names.duplicated()])))} appear in more than one QC file.")
    return samples, Keys.from_record(first)


def prepare_files(
    paths: list[str | Path], outdir: str | Path, settings: PrepareSettings = PrepareSettings(), recorded_inputs: list | None = None
) -> dict:
    """Run ``prepare`` on ``scpermut qc`` outputs and write ``prepared.h5ad`` and its summary to ``outdir``.

    ``recorded_inputs`` are the input paths the summary names (default: ``paths``; ``scpermut run``
    names the published files)."""
    samples, keys = read_qc_outputs(paths)
    prepared, summary = prepare(samples, keys, settings)
    outdir = Path(outdir)
    record = {**summary, "settings": asdict(settings), "inputs": [str(p) for p in (recorded_inputs or paths)]}
    # One set: both files are written to temporary names and renamed only when both are complete.
    with atomic_paths(outdir / constants.PREPARED_FILE, outdir / constants.PREPARE_SUMMARY_FILE) as (h5ad_tmp, json_tmp):
        prepared.write_h5ad(h5ad_tmp, compression="gzip")
        json_tmp.write_text(json_text(record))
    return summary
