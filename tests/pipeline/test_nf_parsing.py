"""Every .nf and .config file parses with reftrace (a Nextflow parser from PyPI) and includes resolve."""

from __future__ import annotations

import re

import pytest
import reftrace
from nf_contract import (
    CONFIG_FILES,
    MODULES,
    NF_FILES,
    REPO,
)

# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", NF_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_nf_file_parses(path):
    module = reftrace.Module.from_file(str(path))
    assert isinstance(module, reftrace.Module), module.error


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_config_file_parses(path):
    result = reftrace.ConfigFile.from_file(str(path))
    assert result.error is None, result.error


def test_parser_rejects_broken_files(tmp_path):
    """The parse checks above can fail: a dropped brace is a syntax error for reftrace."""
    broken_nf = tmp_path / "broken.nf"
    broken_nf.write_text(
        MODULES["qc"]
        .read_text()
        .replace("tuple val(meta), path(h5ad)\n", "tuple val(meta), path(h5ad\n", 1)
    )
    assert not isinstance(reftrace.Module.from_file(str(broken_nf)), reftrace.Module)
    broken_config = tmp_path / "broken.config"
    broken_config.write_text(
        (REPO / "conf" / "modules.config")
        .read_text()
        .replace("withName: 'SCPERMUT_QC' {", "withName: 'SCPERMUT_QC'", 1)
    )
    assert reftrace.ConfigFile.from_file(str(broken_config)).error is not None


def test_includes_resolve_to_defined_processes_and_workflows():
    defined = {}
    for path in NF_FILES:
        module = reftrace.Module.from_file(str(path))
        defined[path.resolve()] = {p.name for p in module.processes} | {
            w.name for w in module.workflows
        }
    for path in NF_FILES:
        module = reftrace.Module.from_file(str(path))
        for include in module.includes:
            if include.from_module.startswith("plugin/"):
                continue
            target = (path.parent / include.from_module).resolve()
            target = target if target.suffix == ".nf" else target.with_suffix(".nf")
            if not target.exists():
                target = (path.parent / include.from_module / "main.nf").resolve()
            where = f"{path.relative_to(REPO)}: include from {include.from_module}"
            assert target in defined, f"{where} resolves to no .nf file"
            functions = set(re.findall(r"(?m)^def\s+(\w+)", target.read_text()))
            for item in include.items:
                assert item.name in defined[target] | functions, f"{where}: no {item.name} there"


