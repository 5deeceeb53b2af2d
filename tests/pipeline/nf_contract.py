"""What the pipeline contract tests share: the repository's Nextflow files, read once, and the CLI.

``nextflow_text`` reads the Nextflow files (processes, params blocks, ``ext.args``
closures) and renders scripts as Nextflow would, for the Groovy subset they use.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from pathlib import Path

import click
from nextflow_text import (
    Process,
    ext_args_closures,
    parse_params_block,
    read_process,
)

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "bin"
NF_FILES = sorted(
    p for p in REPO.glob("**/*.nf") if ".git" not in p.parts and "tests" not in p.parts
)
CONFIG_FILES = [REPO / "nextflow.config", *sorted((REPO / "conf").glob("*.config"))]
MODULES = {
    path.parent.name: path for path in sorted((REPO / "modules" / "local").glob("*/main.nf"))
}
SCPERMUT_MODULES = [name for name in MODULES if not name.startswith("multiqc")]
BAD_SAMPLESHEETS = REPO / "tests" / "pipeline"
# Each bad samplesheet in BAD_SAMPLESHEETS and the column its error must name.
BAD_SHEET_COLUMNS = [
    ("bad_role.csv", "role"),
    ("missing_h5ad.csv", "h5ad"),
    ("not_h5ad.csv", "h5ad"),
    ("sample_with_space.csv", "sample"),
    ("duplicate_sample.csv", "sample"),
    ("quoted_label_col.csv", "label_col"),
    ("unknown_column.csv", "tissue"),
]
# Read by nf-schema itself (validation.help in nextflow.config), not by pipeline code.
PARAMS_READ_BY_NF_SCHEMA = {"help", "help_full", "show_hidden"}
STEP_TIMEOUT = 900


def cli_commands() -> dict[str, click.Command]:
    """The CLI's commands as they are now (train, predict... appear as they land)."""
    from scpermut.cli import main

    return dict(main.commands)


def cli_flags(command: click.Command) -> dict[str, click.Option]:
    """Every spelling of every option of a command (--x, --no-x, kebab-case) -> the option."""
    flags = {}
    for parameter in command.params:
        if isinstance(parameter, click.Option):
            for flag in parameter.opts + parameter.secondary_opts:
                flags[flag] = parameter
    return flags


def scpermut_command(process: Process) -> str:
    """The `scpermut` command a module's script runs (exactly one)."""
    calls = re.findall(r"(?m)^\s*scpermut\s+([\w-]+)", process.script_parts()[1])
    assert len(calls) == 1, (
        f"{process.name}: the script must run one `scpermut <step>` command, not {calls}"
    )
    return calls[0]


PROCESSES = {name: read_process(path) for name, path in MODULES.items()}
CONFIG_PARAMS = parse_params_block(REPO / "nextflow.config", REPO)
TEST_PARAMS = {**CONFIG_PARAMS, **parse_params_block(REPO / "conf" / "test.config", REPO)}
NEXTFLOW_SCHEMA = json.loads((REPO / "nextflow_schema.json").read_text())
INPUT_SCHEMA = json.loads((REPO / "assets" / "schema_input.json").read_text())
EXT_ARGS = {
    **ext_args_closures(REPO / "conf" / "modules.config"),
    **ext_args_closures(REPO / "conf" / "modules_args.config"),
}


def samplesheet_rows(path: Path) -> list[dict]:
    """Rows as nf-schema sees them: empty cells are absent."""
    with path.open(newline="") as handle:
        return [
            {k.strip(): v.strip() for k, v in row.items() if v is not None and v.strip()}
            for row in csv.DictReader(handle)
        ]


def samples_with_meta(path: Path) -> list[tuple[dict, Path]]:
    """What samplesheetToList + resolveSampleFile give the workflow: [meta, file] per row."""
    properties = INPUT_SCHEMA["items"]["properties"]
    samples = []
    for row in samplesheet_rows(path):
        meta = {}
        for column, spec in properties.items():
            for key in spec.get("meta", []):
                meta[key] = row.get(column, spec.get("default"))
        file = Path(row["h5ad"]) if row["h5ad"].startswith("/") else path.parent / row["h5ad"]
        samples.append((meta, file))
    return samples


def task_environment() -> dict:
    env = dict(os.environ)
    # As in the container profiles, the launcher runs the installed package: here the
    # editable install of this checkout, so the module scripts run the repository's code.
    env.pop("SCPERMUT_USE_SOURCE", None)
    # bin/ first, as Nextflow puts it: tasks run `scpermut` through the launcher.
    env["PATH"] = os.pathsep.join([str(BIN), str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("MPLBACKEND", "Agg")
    return env
