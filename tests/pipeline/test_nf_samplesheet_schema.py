"""``assets/schema_input.json`` accepts the test samplesheet and rejects bad ones."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from nf_contract import (
    BAD_SAMPLESHEETS,
    BAD_SHEET_COLUMNS,
    INPUT_SCHEMA,
    REPO,
    samples_with_meta,
    samplesheet_rows,
)

# --------------------------------------------------------------------------------------
# Samplesheet schema
# --------------------------------------------------------------------------------------




def samplesheet_errors(path: Path) -> list[str]:
    """JSON-schema errors of a samplesheet, plus nf-schema's uniqueEntries rule."""
    rows = samplesheet_rows(path)
    validator = jsonschema.Draft202012Validator(INPUT_SCHEMA)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(rows)]
    for column in INPUT_SCHEMA.get("uniqueEntries", []):
        values = [row.get(column) for row in rows]
        errors += [
            f"{i}/{column}: duplicate {v}" for i, v in enumerate(values) if values.count(v) > 1
        ]
    return errors




def test_schema_input_accepts_the_test_samplesheet_and_its_files_exist():
    sheet = REPO / "assets" / "samplesheet_test.csv"
    assert samplesheet_errors(sheet) == []
    samples = samples_with_meta(sheet)
    assert [meta["role"] for meta, _ in samples] == ["reference", "reference", "query", "query"]
    for meta, file in samples:
        assert file.is_file(), f"{meta['id']}: {file}"


@pytest.mark.parametrize(
    ("sheet", "column"),
    BAD_SHEET_COLUMNS,
)
def test_schema_input_rejects_bad_samplesheets(sheet, column):
    errors = samplesheet_errors(BAD_SAMPLESHEETS / sheet)
    assert errors, f"{sheet} was accepted"
    assert any(column in error for error in errors), errors


