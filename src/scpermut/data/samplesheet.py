"""The samplesheet: one row per input file, with its role and the obs columns to use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from scpermut.errors import InputError

REQUIRED_COLUMNS = ("sample", "h5ad")
OPTIONAL_COLUMNS = ("role", "batch_col", "label_col", "unknown_label", "condition", "layer")
ROLES = ("reference", "query")


@dataclass(frozen=True)
class SampleSpec:
    """One input file and how to read it.

    ``batch_col`` None means the sample id is the batch; ``label_col`` None means the
    class key; ``unknown_label`` None means the unlabelled category; ``condition`` is the
    sample's biological condition (None: the file's own ``condition_key`` column, if any).
    """

    sample: str
    path: Path
    role: str = "reference"
    batch_col: str | None = None
    label_col: str | None = None
    unknown_label: str | None = None
    condition: str | None = None
    layer: str | None = None


def _cell(row: pd.Series, column: str) -> str | None:
    value = row.get(column)
    if value is None or pd.isna(value) or str(value).strip() == "":
        return None
    return str(value).strip()


def read_samplesheet(path: str | Path) -> list[SampleSpec]:
    """Read and check a samplesheet CSV.

    Required columns are ``sample`` and ``h5ad``; optional ones are ``role``
    (``reference`` or ``query``, default reference), ``batch_col``, ``label_col``,
    ``unknown_label``, ``condition`` and ``layer``. Relative paths resolve against the samplesheet's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: samplesheet not found.")
    try:
        table = pd.read_csv(path, dtype=str, skipinitialspace=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as error:
        raise InputError(f"{path}: not a readable CSV samplesheet ({error}).") from error
    table.columns = table.columns.str.strip()
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; a samplesheet needs at least 'sample,h5ad'.")
    unknown = [c for c in table.columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        allowed = ", ".join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
        raise InputError(f"{path}: unknown column(s) {', '.join(unknown)}; allowed columns are {allowed}.")
    if table.empty:
        raise InputError(f"{path}: the samplesheet lists no sample.")

    specs = []
    for line, row in zip(range(2, len(table) + 2), table.to_dict("records")):
        row = pd.Series(row)
        sample = _cell(row, "sample")
        file_name = _cell(row, "h5ad")
        if sample is None or file_name is None:
            raise InputError(f"{path}, line {line}: 'sample' and 'h5ad' must not be empty.")
        if any(character.isspace() for character in sample):
            raise InputError(f"{path}, line {line}: sample id '{sample}' contains spaces.")
        role = _cell(row, "role") or "reference"
        if role not in ROLES:
            raise InputError(f"{path}, line {line}: role '{role}' of sample '{sample}' must be 'reference' or 'query'.")
        file_path = Path(file_name).expanduser()
        if not file_path.is_absolute():
            file_path = path.parent / file_path
        if not file_path.is_file():
            raise InputError(f"{path}, line {line}: file '{file_name}' of sample '{sample}' not found ({file_path}).")
        specs.append(
            SampleSpec(
                sample=sample,
                path=file_path,
                role=role,
                batch_col=_cell(row, "batch_col"),
                label_col=_cell(row, "label_col"),
                unknown_label=_cell(row, "unknown_label"),
                condition=_cell(row, "condition"),
                layer=_cell(row, "layer"),
            )
        )
    seen = pd.Series([spec.sample for spec in specs])
    if seen.duplicated().any():
        duplicated = ", ".join(sorted(set(seen[seen.duplicated()])))
        raise InputError(f"{path}: sample id(s) {duplicated} appear more than once; sample ids must be unique.")
    return specs
