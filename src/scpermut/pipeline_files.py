"""The Nextflow files written from :mod:`scpermut.options`: params, the launch form, each step's flags.

``scpermut options --nextflow DIR`` (re)writes, in the pipeline checkout ``DIR``:

- the options' part of the ``params {}`` block of ``nextflow.config`` (between the two
  ``GENERATED`` marker lines), with the CLI's defaults;
- the options' sections of ``nextflow_schema.json`` (the launch form of Seqera Platform and
  nf-schema's validation): the CLI's help texts, types, limits and choices, advanced options
  hidden; the hand-written sections (:data:`HAND_WRITTEN_SECTIONS`) are kept;
- ``conf/modules_args.config``: the ``ext.args`` of every module that runs a ``scpermut``
  command, one flag per pipeline param that command takes (read from the CLI itself);
- the parameter tables of ``docs/usage.md`` (between ``<!-- options: SECTION -->`` and
  ``<!-- end options -->``).

So adding an option that is also a pipeline param is one edit in ``options.py`` and a rerun
of the command; ``tests/pipeline/test_nf_params.py`` checks the committed files are current.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from scpermut.errors import InputError
from scpermut.options import SECTIONS, Option

PARAMS_BEGIN = "    // GENERATED from src/scpermut/options.py by `scpermut options --nextflow .`: edit options.py, not these lines"
PARAMS_END = "    // END GENERATED"
MODULES_ARGS = Path("conf") / "modules_args.config"
SCHEMA = "nextflow_schema.json"
CONFIG = "nextflow.config"
USAGE = Path("docs") / "usage.md"
_TABLE = re.compile(r"(<!-- options: (\w+) -->\n).*?(<!-- end options -->)", re.S)
# Sections of nextflow_schema.json written by hand: before and after the options' sections.
HAND_WRITTEN_SECTIONS = (("input_output_options",), ("multiqc_options", "generic_options"))

_SCHEMA_TYPES = {int: "integer", float: "number", bool: "boolean"}


def pipeline_options() -> list[Option]:
    """Every option that is also a pipeline param, in section order."""
    return [option for section in SECTIONS for option in section.options if option.param]


def _groovy(value) -> str:
    """A Python default as a Groovy literal."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def params_block() -> str:
    """The generated lines of the ``params {}`` block, one comment line per section."""
    width = max(len(option.cli) for option in pipeline_options())
    lines = [PARAMS_BEGIN]
    for section in SECTIONS:
        members = [option for option in section.options if option.param]
        if members:
            lines += ["", f"    // {section.title}"] if len(lines) > 1 else [f"    // {section.title}"]
            lines += [f"    {option.cli:<{width}} = {_groovy(option.cli_default())}" for option in members]
    return "\n".join([*lines, PARAMS_END])


def schema_property(option: Option) -> dict:
    """One param of the launch form."""
    kind = option.kind
    spec = {"type": _SCHEMA_TYPES.get(kind, "string"), "description": option.help}
    if option.cli_default() is not None:
        spec["default"] = option.cli_default()
    if isinstance(kind, tuple):
        spec["enum"] = list(kind)
    if option.pattern:
        spec["pattern"] = f"^{option.pattern}$"
    spec.update(option.limits or {})
    if option.details:
        spec["help_text"] = option.details
    if option.advanced:
        spec["hidden"] = True
    return spec


def schema(current: dict) -> dict:
    """``current`` (nextflow_schema.json) with its options' sections generated afresh."""
    defs = current["$defs"]
    before, after = HAND_WRITTEN_SECTIONS
    generated = {
        section.key: {
            "title": section.title,
            "type": "object",
            "fa_icon": section.icon,
            "description": section.description,
            "properties": {option.cli: schema_property(option) for option in section.options if option.param},
        }
        for section in SECTIONS
        if any(option.param for option in section.options)
    }
    order = [*before, *generated, *after]
    sections = {key: generated.get(key, defs.get(key)) for key in order}
    missing = [key for key, value in sections.items() if value is None]
    if missing:
        raise InputError(f"{SCHEMA}: the hand-written section(s) {', '.join(missing)} are missing.")
    return {**current, "$defs": sections, "allOf": [{"$ref": f"#/$defs/{key}"} for key in order]}


def _interpolated(expression: str) -> str:
    """A Groovy ``${...}`` interpolation, built without doubled braces in this source (nf-core
    lint takes those for a leftover Jinja template)."""
    return "$" + "{" + expression + "}"


def _flag(option: Option) -> str:
    """One list item of an ``ext.args`` closure: the option's flag built from its param."""
    param = f"params.{option.cli}"
    if option.kind is bool:
        on = f"--{option.cli}"
        off = f"--no-{option.cli}" if option.negatable else ""
        # A command-line `--x false` or a launch form may hand over the text 'false'.
        return f"{param}.toString().toBoolean() ? '{on}' : '{off}'"
    if option.kind in (int, float):
        return f'"--{option.cli} {_interpolated(param)}"'
    # Text goes to the shell in single quotes, each ' written as '"'"'.
    quoted = "'" + _interpolated(param + """.toString().replace("'", "'\\"'\\"'")""") + "'"
    item = f'"--{option.cli} {quoted}"'
    return f"{param} ? {item} : ''" if option.default is None else item


def module_commands(pipeline_dir: Path) -> dict[str, str]:
    """Process name -> the ``scpermut`` command its script runs, for every local module."""
    commands = {}
    for path in sorted((pipeline_dir / "modules" / "local").glob("*/main.nf")):
        text = path.read_text()
        process = re.search(r"(?m)^process\s+(\w+)", text)
        command = re.search(r"(?m)^\s*scpermut\s+([\w-]+)", text)
        if process and command:
            commands[process.group(1)] = command.group(1)
    return commands


def command_params(command) -> list[Option]:
    """The declared pipeline params the click command ``command`` takes, in its order."""
    declared = [getattr(parameter, "declared", None) for parameter in command.params]
    return [option for option in declared if option is not None and option.param]


def modules_args(pipeline_dir: Path, commands: dict) -> str:
    """``conf/modules_args.config``: each module's ``ext.args`` from the params its command takes.

    ``commands`` maps each ``scpermut`` command name to its click command.
    """
    blocks = []
    for process, command in module_commands(pipeline_dir).items():
        params = command_params(commands[command])
        if not params:
            continue
        items = "".join(f"            {_flag(option)},\n" for option in params)
        blocks.append(
            f"    withName: '{process}' " + "{\n"
            "        ext.args = { [\n" + items + "        ].join(' ').trim() }\n"
            "    }\n"
        )
    header = (
        "/*\n"
        "    GENERATED from src/scpermut/options.py by `scpermut options --nextflow .`: edit options.py, not this file.\n"
        "    Each step's optional `scpermut` flags, one per pipeline param of the same name. Override a\n"
        "    step's flags in your own config with `withName: 'SCPERMUT_TRAIN' { ext.args = '...' }`.\n"
        "*/\n\n"
    )
    return header + "process {\n\n" + "\n".join(blocks) + "}\n"


def _markdown_default(option: Option) -> str:
    value = option.cli_default()
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"`{value}`" if isinstance(value, str) else f"{value:g}"


def usage_tables(text: str) -> str:
    """``docs/usage.md`` with each ``<!-- options: SECTION -->`` table written afresh."""
    sections = {section.key: section for section in SECTIONS}

    def table(match: re.Match) -> str:
        section = sections.get(match.group(2))
        if section is None:
            raise InputError(f"{USAGE}: no option section '{match.group(2)}' (known: {', '.join(sections)}).")
        rows = [
            f"| `--{option.cli}` | {_markdown_default(option)} | {option.help} |"
            for option in section.options
            if option.param
        ]
        return match.group(1) + "\n".join(["| parameter | default | meaning |", "|---|---|---|", *rows]) + "\n" + match.group(3)

    return _TABLE.sub(table, text)


def generated_files(pipeline_dir: Path, commands: dict) -> dict[Path, str]:
    """Every generated file of the pipeline checkout ``pipeline_dir`` and its new text (``commands``:
    the CLI's click commands by name)."""
    config_path = pipeline_dir / CONFIG
    config = config_path.read_text()
    pattern = re.compile(re.escape(PARAMS_BEGIN) + r".*?" + re.escape(PARAMS_END), re.S)
    if not pattern.search(config):
        raise InputError(f"{config_path}: the params block has no generated part (its marker lines are missing).")
    schema_path = pipeline_dir / SCHEMA
    current = json.loads(schema_path.read_text())
    return {
        config_path: pattern.sub(lambda _: params_block(), config),
        schema_path: json.dumps(schema(current), indent=4, ensure_ascii=False) + "\n",
        pipeline_dir / MODULES_ARGS: modules_args(pipeline_dir, commands),
        pipeline_dir / USAGE: usage_tables((pipeline_dir / USAGE).read_text()),
    }


def write(pipeline_dir: Path, commands: dict, check: bool = False) -> list[Path]:
    """Write the generated files (or, with ``check``, only compare); return those that changed."""
    changed = []
    for path, text in generated_files(Path(pipeline_dir), commands).items():
        if not path.is_file() or path.read_text() != text:
            changed.append(path)
            if not check:
                path.write_text(text)
    return changed
