"""Samplesheet rules: required columns, roles, relative paths, unique ids, clear errors."""

from pathlib import Path

import pytest

from scpermut.data.samplesheet import read_samplesheet
from scpermut.errors import InputError


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("a.h5ad", "b.h5ad"):
        (folder / name).write_bytes(b"")
    return folder


def write_sheet(tmp_path, text):
    path = tmp_path / "samples.csv"
    path.write_text(text)
    return path


def test_shipped_samplesheet(samplesheet_test):
    specs = read_samplesheet(samplesheet_test)
    assert [s.sample for s in specs] == ["ctrl101", "ctrl107", "stim101", "stim107"]
    assert [s.role for s in specs] == ["reference", "reference", "query", "query"]
    assert all(s.path.is_file() and s.path.is_absolute() for s in specs)
    assert specs[0].label_col == "cell_type" and specs[0].batch_col is None


def test_minimal_sheet_defaults_and_relative_paths(tmp_path, data_dir):
    sheet = write_sheet(tmp_path, "sample,h5ad\ns1,data/a.h5ad\ns2,data/b.h5ad\n")
    specs = read_samplesheet(sheet)
    assert specs[0].path == data_dir / "a.h5ad"
    assert specs[1].role == "reference"
    assert specs[1].label_col is None and specs[1].unknown_label is None and specs[1].layer is None


def test_absolute_paths_and_optional_columns(tmp_path, data_dir):
    sheet = write_sheet(
        tmp_path,
        "sample,h5ad,role,batch_col,label_col,unknown_label,layer\n"
        f"s1,{data_dir / 'a.h5ad'},query,donor,celltype,unassigned,counts\n",
    )
    (spec,) = read_samplesheet(sheet)
    assert (spec.role, spec.batch_col, spec.label_col, spec.unknown_label, spec.layer) == (
        "query", "donor", "celltype", "unassigned", "counts",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sample,file\ns1,data/a.h5ad\n", "missing column\\(s\\) h5ad"),
        ("sample,h5ad,colour\ns1,data/a.h5ad,red\n", "unknown column\\(s\\) colour"),
        ("sample,h5ad\n", "lists no sample"),
        ("sample,h5ad\ns1,data/missing.h5ad\n", "line 2: file 'data/missing.h5ad' of sample 's1' not found"),
        ("sample,h5ad\ns1,data/a.h5ad\ns1,data/b.h5ad\n", "sample id\\(s\\) s1 appear more than once"),
        ("sample,h5ad,role\ns1,data/a.h5ad,atlas\n", "role 'atlas' of sample 's1'"),
        ("sample,h5ad\n,data/a.h5ad\n", "line 2: 'sample' and 'h5ad' must not be empty"),
        ("sample,h5ad\nmy sample,data/a.h5ad\n", "contains spaces"),
    ],
)
def test_bad_samplesheets_name_the_problem(tmp_path, data_dir, text, message):
    with pytest.raises(InputError, match=message):
        read_samplesheet(write_sheet(tmp_path, text))


def test_missing_samplesheet(tmp_path):
    with pytest.raises(InputError, match="samplesheet not found"):
        read_samplesheet(Path(tmp_path / "none.csv"))


def test_bom_semicolons_trailing_commas_and_blank_lines_are_read(tmp_path, data_dir):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffsample;h5ad;role;\r\ns1;data/a.h5ad;reference;\r\n\r\n;;;\r\nstim_ü;data/b.h5ad;query;\r\n".encode("utf-8"))
    specs = read_samplesheet(path)
    assert [(s.sample, s.role) for s in specs] == [("s1", "reference"), ("stim_ü", "query")]
    assert specs[1].path == data_dir / "b.h5ad"


def test_every_bad_row_is_named_with_the_closest_value(tmp_path, data_dir):
    sheet = write_sheet(tmp_path, "sample,h5ad,role\ns1,data/a.h5ad,referense\ns2,data/b.h5a,query\ns3,data/a.h5ad,atlas\n")
    with pytest.raises(InputError) as error:
        read_samplesheet(sheet)
    message = str(error.value)
    assert "line 2: role 'referense' of sample 's1' must be 'reference' or 'query' (did you mean 'reference'?)" in message
    assert "line 3: file 'data/b.h5a' of sample 's2' not found" in message and "did you mean 'b.h5ad'?" in message
    assert "line 4: role 'atlas'" in message
    assert message.count("\n") == 0


def test_a_misspelt_column_gets_its_closest_name(tmp_path, data_dir):
    with pytest.raises(InputError, match="unknown column\\(s\\) lable_col \\(did you mean 'label_col' for 'lable_col'\\?\\)"):
        read_samplesheet(write_sheet(tmp_path, "sample,h5ad,lable_col\ns1,data/a.h5ad,x\n"))
