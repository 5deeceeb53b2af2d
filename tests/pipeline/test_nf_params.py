"""Module flags exist in the CLI; params agree with the CLI, ``nextflow.config``, ``nextflow_schema.json`` and ``scpermut.options``."""

from __future__ import annotations

import re
from pathlib import Path

import click
import jsonschema
import pytest
from nextflow_text import (
    Expression,
    parse_params_block,
    schema_params,
    strip_comments,
    used_params,
)
from nf_contract import (
    CONFIG_FILES,
    CONFIG_PARAMS,
    EXT_ARGS,
    NEXTFLOW_SCHEMA,
    NF_FILES,
    PARAMS_READ_BY_NF_SCHEMA,
    PROCESSES,
    REPO,
    SCPERMUT_MODULES,
    TEST_PARAMS,
    cli_commands,
    cli_flags,
    scpermut_command,
)

# --------------------------------------------------------------------------------------
# Flags and params
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCPERMUT_MODULES)
def test_module_flags_exist_in_the_cli(name):
    process = PROCESSES[name]
    command_name = scpermut_command(process)
    commands = cli_commands()
    assert command_name in commands, (
        f"{process.name} runs `scpermut {command_name}`, which the CLI does not have (yet)"
    )
    flags = cli_flags(commands[command_name])
    code, body = process.script_parts()
    sources = {"script": code + body, "ext.args": EXT_ARGS.get(process.name, "")}
    for where, source in sources.items():
        for flag in re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", source):
            assert flag in flags, (
                f"{process.name} ({where}): `scpermut {command_name}` has no flag {flag}"
            )


@pytest.mark.parametrize("name", SCPERMUT_MODULES)
def test_params_passed_as_flags_have_the_cli_default(name):
    process_name = PROCESSES[name].name
    closure = EXT_ARGS.get(process_name, "")
    command = cli_commands().get(scpermut_command(PROCESSES[name]))
    assert command is not None, (
        f"`scpermut {scpermut_command(PROCESSES[name])}` does not exist (yet)"
    )
    flags = cli_flags(command)
    for flag, param in re.findall(r"--(\w+) '?\$\{params\.(\w+)\}", closure):
        assert flag == param, (
            f"{process_name}: --{flag} takes params.{param}; params use the flag's name"
        )
        default = CONFIG_PARAMS[param]
        if default is None:
            continue
        cli_default = flags[f"--{flag}"].default
        if isinstance(cli_default, (int, float)) and not isinstance(cli_default, bool):
            assert float(default) == float(cli_default), (
                f"params.{param} = {default}, CLI --{flag} default {cli_default}"
            )
        else:
            assert str(default) == str(cli_default), (
                f"params.{param} = {default!r}, CLI --{flag} default {cli_default!r}"
            )
    pattern = r"params\.(\w+)\.toString\(\)\.toBoolean\(\)\s*\?\s*'([^']*)'\s*:\s*'([^']*)'"
    for param, on, off in re.findall(pattern, closure):
        cli_option = flags[(on or off).split()[0]]
        if CONFIG_PARAMS[param] is not None and cli_option.is_flag:
            assert bool(CONFIG_PARAMS[param]) == bool(cli_option.default), (
                f"params.{param} = {CONFIG_PARAMS[param]}, CLI default {cli_option.default}"
            )


def test_every_param_used_is_declared_in_config_and_schema():
    used = used_params([*NF_FILES, *CONFIG_FILES], REPO)
    declared = set(CONFIG_PARAMS)
    in_schema = set(schema_params(NEXTFLOW_SCHEMA))
    assert not set(used) - declared, {name: used[name] for name in set(used) - declared}
    assert declared == in_schema, {
        "config only": sorted(declared - in_schema),
        "schema only": sorted(in_schema - declared),
    }
    unused = declared - set(used) - PARAMS_READ_BY_NF_SCHEMA
    assert not unused, f"declared but never used: {sorted(unused)}"
    for path in (REPO / "conf").glob("test*.config"):
        assert set(parse_params_block(path, REPO)) <= declared, path.name


def test_schema_defaults_match_the_config_defaults():
    for name, spec in schema_params(NEXTFLOW_SCHEMA).items():
        default = CONFIG_PARAMS[name]
        if default is None or isinstance(default, Expression):
            assert "default" not in spec, f"{name}: no literal default in the config"
        else:
            assert spec.get("default") == default, (
                f"{name}: config {default!r}, schema {spec.get('default')!r}"
            )
            same_kind = {type(spec["default"]), type(default)} <= {int, float}
            assert type(spec["default"]) is type(default) or same_kind, name


def test_test_profile_is_small_and_cpu_only():
    test_config = strip_comments((REPO / "conf" / "test.config").read_text())
    limits = re.search(r"resourceLimits\s*=\s*\[(.*?)\]", test_config, re.DOTALL).group(1)
    assert re.search(r"cpus:\s*2\b", limits) and re.search(r"memory:\s*6\.GB", limits), limits
    assert "gpu" not in test_config
    epochs = ("epochs_warmup", "epochs_full", "epochs_finetune")
    assert sum(TEST_PARAMS[name] for name in epochs) <= 5
    assert Path(TEST_PARAMS["input"]) == REPO / "assets" / "samplesheet_test.csv"


def test_schema_accepts_the_default_and_test_params():
    validator = jsonschema.Draft202012Validator(NEXTFLOW_SCHEMA)
    for params in (CONFIG_PARAMS, TEST_PARAMS):
        given = {k: v for k, v in params.items() if v is not None and not isinstance(v, Expression)}
        given.setdefault("input", "samplesheet.csv")
        errors = [
            f"{list(e.path)}: {e.message}"
            for e in validator.iter_errors({**given, "outdir": "results"})
        ]
        assert not errors, errors
    errors = list(
        validator.iter_errors(
            {"input": "sheet.csv", "outdir": "results", "early_stopping_metric": "accuracy"}
        )
    )
    assert errors, "the schema must reject an unknown early-stopping metric"


def test_schema_params_are_documented_with_type_and_description():
    assert NEXTFLOW_SCHEMA["$schema"].startswith("https://json-schema.org/draft/2020-12")
    for name, spec in schema_params(NEXTFLOW_SCHEMA).items():
        assert spec.get("type") and spec.get("description"), name
    usage = (REPO / "docs" / "usage.md").read_text()
    for name in schema_params(NEXTFLOW_SCHEMA):
        assert f"--{name}`" in usage or f"`{name}`" in usage, (
            f"docs/usage.md does not mention --{name}"
        )


def test_the_generated_nextflow_files_are_the_committed_ones():
    """``scpermut.options`` is the one source: params, launch form and step flags are written from it."""
    from scpermut.cli import main
    from scpermut.pipeline_files import generated_files

    for path, text in generated_files(REPO, main.commands).items():
        assert path.read_text() == text, (
            f"{path.relative_to(REPO)} is not what scpermut.options gives; run `scpermut options --nextflow .`"
        )


def test_the_launch_form_says_what_the_cli_says():
    from scpermut import options

    schema = schema_params(NEXTFLOW_SCHEMA)
    for option in options.ALL.values():
        if option.param:
            assert schema[option.cli]["description"] == option.help, option.cli
            for bound, value in (option.limits or {}).items():
                assert schema[option.cli][bound] == value, (option.cli, bound)


def test_every_cli_option_of_a_declared_name_comes_from_the_declaration():
    """No command hand-writes a twin of a declared option (its default or help would drift)."""
    from scpermut import options

    names = {option.name for option in [*options.ALL.values(), options.INFERENCE_BATCH_SIZE, options.LAYER, options.PARAMS, options.MLFLOW_URI]}
    for command in cli_commands().values():
        for parameter in command.params:
            if isinstance(parameter, click.Option) and parameter.name in names:
                assert getattr(parameter, "declared", None) is not None, (command.name, parameter.name)
