"""The one rule on a dataset's genes against a model's: how many may be missing, and why they might be."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from scpermut.errors import InputError

_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
_SYMBOL_ENSEMBL = re.compile(r"^.+[_|-]ENS[A-Z]*G\d{6,}(\.\d+)?$")


def namespace(names) -> str:
    """What most of ``names`` look like: ``"Ensembl ids"``, ``"SYMBOL_Ensembl ids"`` or ``"gene symbols"``."""
    sample = [str(name) for name in list(names)[:500]]
    if not sample:
        return "gene symbols"
    for kind, pattern in (("Ensembl ids", _ENSEMBL), ("SYMBOL_Ensembl ids", _SYMBOL_ENSEMBL)):
        if sum(bool(pattern.match(name)) for name in sample) > len(sample) / 2:
            return kind
    return "gene symbols"


def check_missing_genes(
    genes, data_genes, *, max_missing_genes: float, source: str, var: pd.DataFrame | None = None
) -> np.ndarray:
    """The model ``genes`` present in ``data_genes`` (a boolean mask); stop when too many are missing.

    The same rule for ``predict``, ``run``, ``label`` and the API: more than ``max_missing_genes``
    (a fraction) of the model's genes absent from the data is an ``InputError`` naming ``source``,
    with a hint when the two sides name genes differently (symbols against Ensembl ids) and, given
    the data's ``var``, the column that holds the model's identifiers.
    """
    genes = pd.Index(np.asarray(genes, dtype=str))
    data_genes = pd.Index(np.asarray(data_genes, dtype=str))
    present = genes.isin(data_genes)
    n_missing = int((~present).sum())
    examples = f"model genes e.g. {', '.join(genes[~present][:3])}; the data's genes e.g. {', '.join(data_genes[:3])}"
    if not present.any():
        raise InputError(f"{source}: none of the model's {len(genes)} genes is in the data ({examples}){naming_hint(genes, data_genes, var)}.")
    if n_missing / len(genes) > max_missing_genes:
        raise InputError(
            f"{source}: {n_missing} of the model's {len(genes)} genes ({n_missing / len(genes):.0%}) are missing, more than "
            f"`max_missing_genes` {max_missing_genes:.0%} ({examples}){naming_hint(genes, data_genes, var)}."
        )
    return present


def naming_hint(genes, data_genes, var: pd.DataFrame | None) -> str:
    """``; ...``: why the data's gene names may differ from ``genes`` (the model's, the reference's), and how to fix it."""
    genes, data_genes = pd.Index(np.asarray(genes, dtype=str)), pd.Index(np.asarray(data_genes, dtype=str))
    column = _column_with(genes, var)
    if column is not None:
        return f"; var column '{column}' holds the model's gene names: make it the gene names (adata.var_names = adata.var['{column}'])"
    model_kind, data_kind = namespace(genes), namespace(data_genes)
    if model_kind != data_kind:
        return f"; the model's genes are {model_kind}, the data's {data_kind}: map them to the model's identifiers first"
    return "; gene names must use the training data's identifiers"


def _column_with(genes: pd.Index, var: pd.DataFrame | None) -> str | None:
    """The ``var`` column holding most of the model's genes, when it holds more than half of them."""
    if var is None:
        return None
    best, best_share = None, 0.5
    for column in var.columns:
        values = var[column]
        if values.dtype == object or isinstance(values.dtype, pd.CategoricalDtype):
            share = float(genes.isin(values.astype(str)).mean())
            if share > best_share:
                best, best_share = column, share
    return best
