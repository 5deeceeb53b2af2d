"""The samplesheet: one row per input file, with its role and the obs columns to use."""

from __future__ import annotations

import difflib
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
    A UTF-8 byte-order mark, ``;`` or tab separators, blank lines and trailing commas are accepted;
    every bad row is named in one error, with the closest valid value where there is one.
    """
    path = Path(path)
    table = _read_table(path)
    problems, specs = [], []
    for line, row in zip(table.index + 2, table.to_dict("records")):
        spec = _spec(path, line, pd.Series(row), problems)
        if spec is not None:
            specs.append(spec)
    seen = pd.Series([spec.sample for spec in specs], dtype=object)
    if seen.duplicated().any():
        duplicated = ", ".join(sorted(set(seen[seen.duplicated()])))
        problems.append(f"sample id(s) {duplicated} appear more than once; sample ids must be unique")
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems) + ".")
    return specs


def _read_table(path: Path) -> pd.DataFrame:
    """The samplesheet's rows (blank ones dropped) under its stripped column names, checked."""
    if not path.is_file():
        raise InputError(f"{path}: samplesheet not found.")
    try:
        with open(path, encoding="utf-8-sig") as handle:
            header = handle.readline()
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not a UTF-8 text file ({error}); save the samplesheet as CSV (UTF-8).") from error
    separator = next((sep for sep in (",", ";", "\t") if sep in header), ",")
    try:
        table = pd.read_csv(path, dtype=str, sep=separator, skipinitialspace=True, encoding="utf-8-sig")
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as error:
        raise InputError(f"{path}: not a readable CSV samplesheet ({error}).") from error
    table.columns = table.columns.str.strip()
    # Trailing separators make nameless, empty columns; rows of separators only are blank lines.
    table = table.loc[:, [not (c.startswith("Unnamed:") and table[c].isna().all()) for c in table.columns]]
    table = table.dropna(how="all")
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; a samplesheet needs at least 'sample,h5ad'{_closest_columns(table.columns, missing)}.")
    unknown = [c for c in table.columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        allowed = ", ".join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
        raise InputError(f"{path}: unknown column(s) {', '.join(unknown)}{_closest_columns(unknown, REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}; allowed columns are {allowed}.")
    if table.empty:
        raise InputError(f"{path}: the samplesheet lists no sample.")
    return table


def _closest_columns(given, allowed) -> str:
    """`` (did you mean 'h5ad' for 'h5'?)`` for the given names close to an allowed one."""
    pairs = [(name, close[0]) for name in given if (close := difflib.get_close_matches(str(name), list(allowed), n=1, cutoff=0.6))]
    return " (" + ", ".join(f"did you mean '{right}' for '{wrong}'?" for wrong, right in pairs) + ")" if pairs else ""


def _spec(path: Path, line: int, row: pd.Series, problems: list[str]) -> SampleSpec | None:
    """The row's sample, or None after adding what is wrong with it to ``problems``."""
    sample, file_name = _cell(row, "sample"), _cell(row, "h5ad")
    if sample is None or file_name is None:
        problems.append(f"line {line}: 'sample' and 'h5ad' must not be empty")
        return None
    found = len(problems)
    if any(character.isspace() for character in sample):
        problems.append(f"line {line}: sample id '{sample}' contains spaces")
    role = _cell(row, "role") or "reference"
    if role not in ROLES:
        close = difflib.get_close_matches(role.lower(), ROLES, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        problems.append(f"line {line}: role '{role}' of sample '{sample}' must be 'reference' or 'query'{hint}")
    file_path = Path(file_name).expanduser()
    if not file_path.is_absolute():
        file_path = path.parent / file_path
    if not file_path.is_file():
        siblings = [p.name for p in file_path.parent.iterdir()] if file_path.parent.is_dir() else []
        close = difflib.get_close_matches(file_path.name, siblings, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        problems.append(f"line {line}: file '{file_name}' of sample '{sample}' not found ({file_path}{hint})")
    if len(problems) > found:
        return None
    return SampleSpec(
        sample=sample,
        path=file_path,
        role=role,
        batch_col=_cell(row, "batch_col"),
        label_col=_cell(row, "label_col"),
        unknown_label=_cell(row, "unknown_label"),
        condition=_cell(row, "condition"),
        layer=_cell(row, "layer"),
    )
