"""The Nextflow pipeline, tested by contract (no Nextflow runtime is needed).

- every ``.nf`` and ``.config`` file parses with reftrace (a Nextflow parser from PyPI);
- every process has a container, a label, conda, a ``when:`` and a ``stub:``;
- every ``scpermut`` flag in a module script or its ``ext.args`` exists in the click CLI
  (introspected from ``scpermut.cli.main``), and each param passed as ``--x`` has the
  CLI's default;
- params agree between ``nextflow.config``, ``nextflow_schema.json`` and their uses;
- ``assets/schema_input.json`` accepts the test samplesheet and rejects bad ones;
- the gpu profile's accelerator request, boolean params and ``bin/scpermut`` behave as
  documented (evaluated, not just grepped);
- each module's script, rendered with the ``-profile test`` values, runs on the shipped
  data and writes every file its ``output:`` block declares; so does its ``stub:``.

``nextflow_text`` reads the Nextflow files (processes, params blocks, ``ext.args``
closures) and renders scripts as Nextflow would, for the Groovy subset they use.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import click
import jsonschema
import pytest
import reftrace
import tomllib
import yaml
from nextflow_text import (
    BlankList,
    Expression,
    Process,
    block_after,
    evaluate,
    ext_args_closures,
    parse_params_block,
    read_process,
    render_gstring,
    schema_params,
    strip_comments,
    used_params,
)

REPO = Path(__file__).resolve().parents[1]
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
    calls = re.findall(r"(?m)^\s*scpermut\s+(\w+)", process.script_parts()[1])
    assert len(calls) == 1, (
        f"{process.name}: the script must run one `scpermut <step>` command, not {calls}"
    )
    return calls[0]


PROCESSES = {name: read_process(path) for name, path in MODULES.items()}
CONFIG_PARAMS = parse_params_block(REPO / "nextflow.config", REPO)
TEST_PARAMS = {**CONFIG_PARAMS, **parse_params_block(REPO / "conf" / "test.config", REPO)}
NEXTFLOW_SCHEMA = json.loads((REPO / "nextflow_schema.json").read_text())
INPUT_SCHEMA = json.loads((REPO / "assets" / "schema_input.json").read_text())
EXT_ARGS = ext_args_closures(REPO / "conf" / "modules.config")


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


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODULES))
def test_process_has_container_label_conda_when_and_stub(name):
    (process,) = reftrace.Module.from_file(str(MODULES[name])).processes
    assert process.containers, f"{process.name} has no container"
    assert process.labels, f"{process.name} has no resource label"
    assert process.condas, f"{process.name} has no conda environment"
    assert (MODULES[name].parent / "environment.yml").is_file()
    meta = yaml.safe_load((MODULES[name].parent / "meta.yml").read_text())
    # Every emit, the versions_<tool> ones included (they also feed the versions topic).
    emits = {o["emit"] for o in PROCESSES[name].outputs}
    assert set(meta["output"]) == emits, "meta.yml must describe every output channel"
    assert meta.get("maintainers"), "meta.yml names no maintainers"
    sections = PROCESSES[name].sections
    required = {"output", "when", "script", "stub"}
    if name != "multiqc_version":  # takes no input: it must not wait on the versions topic
        required.add("input")
    assert required <= set(sections), sorted(sections)
    assert "task.ext.when" in sections["when"]
    versions = [o for o in PROCESSES[name].outputs if o["kind"] == "eval"]
    if name == "multiqc":
        # MULTIQC reads the collected versions: adding to them would keep the topic open
        # forever; MULTIQC_VERSION reports its version.
        assert not versions, versions
        return
    tool = "multiqc" if name == "multiqc_version" else "scpermut"
    assert any(o["tool"] == tool for o in versions), f"{process.name} reports no {tool} version"
    assert all(o["topic"] for o in versions), versions


def test_multiqc_version_comes_from_the_multiqc_image_without_reading_the_topic():
    """MultiQC's version joins the versions topic from a task that cannot wait on it."""
    assert PROCESSES["multiqc_version"].inputs == [], "MULTIQC_VERSION must not read the topic"
    (reporter_process,) = reftrace.Module.from_file(str(MODULES["multiqc_version"])).processes
    (multiqc_process,) = reftrace.Module.from_file(str(MODULES["multiqc"])).processes
    (reporter_image,) = reporter_process.containers
    (multiqc_image,) = multiqc_process.containers
    images = (reporter_image.true_name, reporter_image.false_name)
    assert images == (multiqc_image.true_name, multiqc_image.false_name)
    environment = (MODULES["multiqc"].parent / "environment.yml").read_text()
    assert (MODULES["multiqc_version"].parent / "environment.yml").read_text() == environment
    pinned = re.search(r"multiqc=([\d.]+)", environment).group(1)
    assert all(f"multiqc:{pinned}--" in image for image in images), (pinned, images)
    workflow = strip_comments((REPO / "workflows" / "scpermut.nf").read_text())
    assert re.search(r"(?m)^\s*MULTIQC_VERSION\(\)", workflow)


def test_only_train_is_gpu_and_switches_to_the_gpu_image():
    for name, path in MODULES.items():
        (process,) = reftrace.Module.from_file(str(path)).processes
        labels = {label.value for label in process.labels}
        assert ("process_gpu" in labels) == (name == "train"), name
    (train,) = reftrace.Module.from_file(str(MODULES["train"])).processes
    (container,) = train.containers
    assert "task.ext.use_gpu" in container.condition
    assert container.true_name.endswith(
        "-gpu"
    ) and container.false_name == container.true_name.removesuffix("-gpu")
    assert "--device ${device}" in PROCESSES["train"].script_parts()[1]


def test_gpu_flags_come_only_from_the_gpu_profile_for_process_gpu():
    config = strip_comments((REPO / "nextflow.config").read_text())
    gpu_profile = block_after(block_after(config, r"(?m)^profiles"), r"\bgpu")
    gpu_label = block_after(gpu_profile, r"withLabel:\s*process_gpu")
    for setting in ("--gpus", "--nv", "ext.use_gpu", "accelerator", "gpu_cluster_options"):
        assert setting in gpu_label, setting
    elsewhere = config.replace(gpu_profile, "") + "".join(p.read_text() for p in CONFIG_FILES[1:])
    for setting in ("--gpus", "--nv", "ext.use_gpu", "accelerator"):
        assert setting not in strip_comments(elsewhere), (
            f"{setting} is set outside the gpu profile's process_gpu block"
        )


# What each executor does with the GPU settings is checked with the real runtime in
# tests/pipeline/test_nextflow_run.py (test_gpu_profile_*).


def test_gpu_with_conda_stops_at_initialisation():
    """The conda environments hold CPU TensorFlow: `-profile conda,gpu` must stop at once."""
    text = strip_comments(
        (REPO / "subworkflows" / "local" / "utils_scpermut_pipeline" / "main.nf").read_text()
    )
    initialisation = block_after(text, r"(?m)^workflow PIPELINE_INITIALISATION")
    assert "checkProfiles(workflow.profile)" in initialisation
    assert initialisation.index("checkProfiles(") < initialisation.index("validateParameters()")
    check = block_after(text, r"(?m)^def checkProfiles\(String profile\)")
    assert "tokenize(',')" in check and "['conda', 'mamba']" in check
    assert re.search(r"if \('gpu' in profiles && conda\) \{\s*error\(", check), check


def test_cloud_profiles_stage_files_without_the_aws_cli():
    """The images have no AWS CLI: AWS Batch tasks reach S3 through Fusion (needs Wave)."""
    profiles = block_after(strip_comments((REPO / "nextflow.config").read_text()), r"(?m)^profiles")
    aws = block_after(profiles, r"(?m)^\s*awsbatch")
    google = block_after(profiles, r"(?m)^\s*google")
    assert re.search(r"wave\.enabled\s*=\s*true", aws) and re.search(
        r"fusion\.enabled\s*=\s*true", aws
    )
    assert "docker.enabled" not in aws + google, "batch executors always run containers"


def test_manifest_home_page_matches_the_nf_core_lint_organisation():
    """nf-core lint checks manifest.homePage against https://github.com/<template.org>/."""
    nf_core = yaml.safe_load((REPO / ".nf-core.yml").read_text())
    assert "manifest.homePage" not in nf_core["lint"]["nextflow_config"]
    manifest = block_after(strip_comments((REPO / "nextflow.config").read_text()), r"(?m)^manifest")
    home_page = re.search(r"homePage\s*=\s*'([^']+)'", manifest).group(1)
    assert home_page.startswith(f"https://github.com/{nf_core['template']['org']}/"), home_page
    assert re.search(r"contributors\s*=\s*\[", manifest)


BOOLEAN_PARAMS = sorted(
    name
    for name, value in CONFIG_PARAMS.items()
    if isinstance(value, bool) and name not in PARAMS_READ_BY_NF_SCHEMA
)


def test_boolean_params_are_read_with_to_boolean():
    """A command-line `--dann false` can reach the pipeline as the string 'false', which
    Groovy takes as true: every read of a boolean param must go through toBoolean()."""
    assert {"dann", "umap", "mixed_precision", "validate_params"} <= set(BOOLEAN_PARAMS)
    read = set()
    for path in [*NF_FILES, *CONFIG_FILES]:
        text = strip_comments(path.read_text())
        if path.suffix == ".config" and re.search(r"(?m)^params\s*\{", text):
            text = text.replace(block_after(text, r"(?m)^params"), "")
        for match in re.finditer(r"\bparams\.(\w+)(\.toString\(\)\.toBoolean\(\))?", text):
            if match.group(1) in BOOLEAN_PARAMS:
                read.add(match.group(1))
                assert match.group(2), (
                    f"{path.relative_to(REPO)}: params.{match.group(1)} is read without"
                    " .toString().toBoolean()"
                )
    assert read == set(BOOLEAN_PARAMS), set(BOOLEAN_PARAMS) - read


@pytest.mark.parametrize("given", [False, "false", "False", "0"])
def test_a_false_boolean_param_turns_its_flag_off_whatever_its_type(given):
    params = {**CONFIG_PARAMS, **dict.fromkeys(BOOLEAN_PARAMS, given)}
    train = evaluate(EXT_ARGS["SCPERMUT_TRAIN"], {"params": params}).split()
    off = {"--no-dann", "--no-classifier", "--no-permutation", "--no-grl_ramp"}
    assert off | {"--no-permute_across_batches"} <= set(train), train
    assert "--mixed_precision" not in train
    assert "--no-umap" in evaluate(EXT_ARGS["SCPERMUT_PREDICT"], {"params": params}).split()


@pytest.mark.parametrize("given", [True, "true", "TRUE"])
def test_a_true_boolean_param_turns_its_flag_on_whatever_its_type(given):
    params = {**CONFIG_PARAMS, **dict.fromkeys(BOOLEAN_PARAMS, given)}
    train = evaluate(EXT_ARGS["SCPERMUT_TRAIN"], {"params": params}).split()
    assert not [flag for flag in train if flag.startswith("--no-")], train
    assert {"--grl_ramp", "--permute_across_batches", "--mixed_precision"} <= set(train)
    assert "--umap" in evaluate(EXT_ARGS["SCPERMUT_PREDICT"], {"params": params}).split()


def locked_requirements() -> dict[str, str]:
    """containers/requirements.lock.txt as {canonical name: version}; every line an exact pin."""
    from packaging.utils import canonicalize_name

    lock = {}
    for line in (REPO / "containers" / "requirements.lock.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9._-]+)==([\w.+!-]+)", line.strip())
            assert match, f"not an exact pin: {line!r}"
            lock[canonicalize_name(match.group(1))] = match.group(2)
    return lock


def test_images_install_the_locked_runtime_dependencies():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lock = locked_requirements()
    for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]:
        parsed = Requirement(requirement)
        if parsed.marker and not parsed.marker.evaluate({"platform_system": "Linux"}):
            continue
        name = canonicalize_name(parsed.name)
        assert name in lock, f"{parsed.name} is not locked"
        assert parsed.specifier.contains(lock[name]), f"{name}=={lock[name]} breaks {requirement}"
    test_tools = {"pytest", "jsonschema", "reftrace", "multiqc", "pip", "setuptools", "wheel"}
    assert not test_tools & set(lock), test_tools & set(lock)

    cpu = (REPO / "containers" / "Dockerfile").read_text()
    gpu = (REPO / "containers" / "Dockerfile.gpu").read_text()
    for dockerfile in (cpu, gpu):
        assert "COPY containers/requirements.lock.txt /opt/scpermut/" in dockerfile
        assert "pip install --no-deps /opt/scpermut" in dockerfile
    assert "pip install -r /opt/scpermut/requirements.lock.txt" in cpu
    assert '"tensorflow[and-cuda]==${tf_version}" -r /tmp/requirements.txt' in gpu


def test_containers_and_environments_pin_this_version():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    config = strip_comments((REPO / "nextflow.config").read_text())
    assert re.search(
        rf"version\s*=\s*'{re.escape(version)}'", block_after(config, r"(?m)^manifest")
    )
    for dockerfile in ("Dockerfile", "Dockerfile.gpu"):
        assert f"ARG SCPERMUT_VERSION={version}" in (REPO / "containers" / dockerfile).read_text()
    for name in SCPERMUT_MODULES:
        (process,) = reftrace.Module.from_file(str(MODULES[name])).processes
        (container,) = process.containers
        images = (
            {container.true_name, container.false_name} if container.condition else {container.name}
        )
        assert images <= {
            f"ghcr.io/scpermut/scpermut:{version}",
            f"ghcr.io/scpermut/scpermut:{version}-gpu",
        }, images

    environment = (REPO / "containers" / "environment.yml").read_text()
    for name in SCPERMUT_MODULES:
        assert (MODULES[name].parent / "environment.yml").read_text() == environment, (
            f"{name}/environment.yml differs from containers/environment.yml"
        )
    listed = {
        re.split(r"[<>=\[]", entry.split("::")[-1])[0].strip().lower()
        for entry in re.findall(r"(?m)^\s*-\s+(\S+)", environment)
    }
    for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]:
        if "== 'Darwin'" in requirement:
            continue  # the macOS build of TensorFlow
        assert re.split(r"[<>=;\[ ]", requirement)[0].lower() in listed, requirement


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


# --------------------------------------------------------------------------------------
# Samplesheet schema
# --------------------------------------------------------------------------------------


def samplesheet_rows(path: Path) -> list[dict]:
    """Rows as nf-schema sees them: empty cells are absent."""
    with path.open(newline="") as handle:
        return [
            {k.strip(): v.strip() for k, v in row.items() if v is not None and v.strip()}
            for row in csv.DictReader(handle)
        ]


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


def test_schema_input_accepts_the_test_samplesheet_and_its_files_exist():
    sheet = REPO / "assets" / "samplesheet_test.csv"
    assert samplesheet_errors(sheet) == []
    samples = samples_with_meta(sheet)
    assert [meta["role"] for meta, _ in samples] == ["reference", "reference", "query", "query"]
    for meta, file in samples:
        assert file.is_file(), f"{meta['id']}: {file}"


@pytest.mark.parametrize(
    ("sheet", "column"),
    [
        ("bad_role.csv", "role"),
        ("missing_h5ad.csv", "h5ad"),
        ("not_h5ad.csv", "h5ad"),
        ("sample_with_space.csv", "sample"),
        ("duplicate_sample.csv", "sample"),
        ("quoted_label_col.csv", "label_col"),
        ("unknown_column.csv", "condition"),
    ],
)
def test_schema_input_rejects_bad_samplesheets(sheet, column):
    errors = samplesheet_errors(BAD_SAMPLESHEETS / sheet)
    assert errors, f"{sheet} was accepted"
    assert any(column in error for error in errors), errors


# --------------------------------------------------------------------------------------
# Running each module's script, as rendered with -profile test
# --------------------------------------------------------------------------------------


@dataclass
class TaskResult:
    workdir: Path
    outputs: dict[str, list[Path]] = field(default_factory=dict)
    versions: list[tuple[str, str, str]] = field(default_factory=list)


def stage(workdir: Path, process: Process, values: dict) -> dict:
    """Link input files into the task folder as Nextflow stages them; return the script scope."""
    scope = {}
    for kind, name, stage_as in process.inputs:
        value = values[name]
        if kind == "val":
            scope[name] = value
            continue
        files = value if isinstance(value, list) else [value]
        staged = BlankList()
        for index, source in enumerate(files, start=1):
            relative = Path(
                stage_as.replace("?", str(index)).replace("*", source.name)
                if stage_as
                else source.name
            )
            (workdir / relative).parent.mkdir(parents=True, exist_ok=True)
            (workdir / relative).symlink_to(source.resolve())
            staged.append(relative)
        scope[name] = staged if isinstance(value, list) else staged[0]
    return scope


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


def run_task(name: str, values: dict, workdir: Path, section: str = "script") -> TaskResult:
    """Render a module's script (or stub) with -profile test values, run it, check its outputs."""
    process = PROCESSES[name]
    workdir.mkdir(parents=True)
    scope = stage(workdir, process, values)
    task = {
        "process": f"SCPERMUT:{process.name}",
        "cpus": 2,
        "ext": {"when": None, "use_gpu": None},
    }
    closure = EXT_ARGS.get(process.name)
    if closure:
        task["ext"]["args"] = evaluate(closure, {"params": TEST_PARAMS, **scope, "task": task})
    script = process.render({**scope, "task": task, "params": TEST_PARAMS}, section)
    (workdir / ".command.sh").write_text(script)
    run = subprocess.run(
        ["bash", "-euo", "pipefail", ".command.sh"],
        cwd=workdir,
        env=task_environment(),
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
    )
    assert run.returncode == 0, f"{process.name} {section} failed:\n{script}\n{run.stderr[-4000:]}"

    result = TaskResult(workdir)
    for output in process.outputs:
        if output["kind"] == "path":
            pattern = (
                render_gstring(output["pattern"], scope)
                if output["quote"] == '"'
                else output["pattern"]
            )
            matches = sorted(p for p in workdir.glob(pattern) if not p.is_symlink())
            declared = f"declared output {pattern!r} ({output['emit']})"
            assert matches or output["optional"], (
                f"{process.name} {section}: {declared} not written"
            )
            result.outputs.setdefault(output["emit"], []).extend(matches)
        elif section == "script":  # a stub's eval outputs run the same commands
            evaluated = subprocess.run(
                ["bash", "-c", output["command"]],
                cwd=workdir,
                env=task_environment(),
                capture_output=True,
                text=True,
            )
            assert evaluated.returncode == 0 and evaluated.stdout.strip(), (
                f"{process.name}: eval({output['command']!r}) gave {evaluated.stderr}"
            )
            step = evaluate(output["step"], {"task": task})
            result.versions.append((step, output["tool"], evaluated.stdout.strip()))
    return result


class PipelineRun:
    """The -profile test chain, run once per session; each step runs when first asked for."""

    def __init__(self, root: Path):
        self.root = root
        self.results: dict[str, object] = {}

    def step(self, name: str) -> TaskResult | list[TaskResult]:
        if name not in self.results:
            try:
                self.results[name] = getattr(self, f"_{name}")()
            except (Exception, pytest.skip.Exception) as error:  # remembered for later steps
                self.results[name] = error
        result = self.results[name]
        if isinstance(result, pytest.skip.Exception):
            raise result
        if isinstance(result, Exception):
            raise AssertionError(f"step {name} failed") from result
        return result

    def _qc(self):
        samples = samples_with_meta(REPO / "assets" / "samplesheet_test.csv")
        # One task per sample, two at a time, as Nextflow would run them on two cpus.
        with ThreadPoolExecutor(max_workers=2) as pool:
            return list(
                pool.map(
                    lambda sample: run_task(
                        "qc",
                        {"meta": sample[0], "h5ad": sample[1]},
                        self.root / f"qc_{sample[0]['id']}",
                    ),
                    samples,
                )
            )

    def _prepare(self):
        h5ads = [path for task in self.step("qc") for path in task.outputs["h5ad"]]
        return run_task(
            "prepare", {"meta": {"id": "merged"}, "qc_h5ads": h5ads}, self.root / "prepare"
        )

    def _train(self):
        (prepared,) = self.step("prepare").outputs["h5ad"]
        return run_task(
            "train", {"meta": {"id": "merged"}, "prepared": prepared}, self.root / "train"
        )

    def _predict(self):
        (prepared,) = self.step("prepare").outputs["h5ad"]
        (model,) = self.step("train").outputs["model"]
        return run_task(
            "predict",
            {"meta": {"id": "merged"}, "h5ad": prepared, "model": model},
            self.root / "predict",
        )

    def _report(self):
        (annotated,) = self.step("predict").outputs["h5ad"]
        (model,) = self.step("train").outputs["model"]
        return run_task(
            "report",
            {"meta": {"id": "merged"}, "annotated": annotated, "model": model},
            self.root / "report",
        )

    def _multiqc_version(self):
        if shutil.which("multiqc", path=task_environment()["PATH"]) is None:
            pytest.skip(
                "multiqc is not installed here; the MULTIQC modules run in its biocontainer"
            )
        return run_task("multiqc_version", {}, self.root / "multiqc_version")

    def _multiqc(self):
        tasks = [*self.scpermut_tasks(), self.step("multiqc_version")]
        report = self.step("report")
        versions = self.root / "scpermut_software_mqc_versions.yml"
        versions.write_text(versions_yaml([v for task in tasks for v in task.versions]))
        files = [*report.outputs["multiqc_files"], versions]
        config = REPO / "assets" / "multiqc_config.yml"
        inputs = {
            "multiqc_files": files,
            "multiqc_config": config,
            "extra_multiqc_config": BlankList(),
        }
        return run_task("multiqc", inputs, self.root / "multiqc")

    def scpermut_tasks(self) -> list[TaskResult]:
        """Every scpermut task of the chain (one QC per sample)."""
        return [
            *self.step("qc"),
            *(self.step(name) for name in ("prepare", "train", "predict", "report")),
        ]


def versions_yaml(entries) -> str:
    """What workflows/scpermut.nf collects from the versions topic."""
    grouped: dict[str, set[str]] = {}
    for task_name, tool, version in set(entries):
        grouped.setdefault(task_name.split(":")[-1], set()).add(f"    {tool}: {version}")
    return (
        "\n".join(
            f"{step}:\n" + "\n".join(sorted(lines)) for step, lines in sorted(grouped.items())
        )
        + "\n"
    )


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory) -> PipelineRun:
    return PipelineRun(tmp_path_factory.mktemp("pipeline_test_profile"))


def test_qc_module_writes_its_declared_outputs_per_sample(pipeline_run):
    tasks = pipeline_run.step("qc")
    assert [task.outputs["h5ad"][0].name for task in tasks] == [
        "ctrl101.qc.h5ad",
        "ctrl107.qc.h5ad",
        "stim101.qc.h5ad",
        "stim107.qc.h5ad",
    ]
    import anndata as ad

    query = ad.read_h5ad(tasks[2].outputs["h5ad"][0], backed="r")
    assert set(query.obs["scpermut_role"]) == {"query"}
    assert query.n_obs > 400, "the test profile's QC must keep the shipped cells (169+ genes each)"


def test_prepare_module_writes_its_declared_outputs(pipeline_run):
    task = pipeline_run.step("prepare")
    summary = json.loads(task.outputs["summary"][0].read_text())
    assert [Path(p).name for p in summary["inputs"]] == [
        "ctrl101.qc.h5ad",
        "ctrl107.qc.h5ad",
        "stim101.qc.h5ad",
        "stim107.qc.h5ad",
    ]
    assert summary["settings"]["n_top_genes"] == TEST_PARAMS["n_top_genes"]


def test_train_module_writes_its_declared_outputs(pipeline_run):
    (model,) = pipeline_run.step("train").outputs["model"]
    assert (model / "model.weights.h5").is_file() and (model / "config.json").is_file()


def test_predict_module_writes_its_declared_outputs(pipeline_run):
    import anndata as ad

    (annotated,) = pipeline_run.step("predict").outputs["h5ad"]
    adata = ad.read_h5ad(annotated)
    assert "X_scpermut" in adata.obsm and "scpermut_prediction" in adata.obs


def test_report_module_writes_its_declared_outputs(pipeline_run):
    task = pipeline_run.step("report")
    assert "scpermut_metrics_mqc.tsv" in {p.name for p in task.outputs["multiqc_files"]}


def test_multiqc_module_reports_the_scpermut_sections_and_versions(pipeline_run):
    task = pipeline_run.step("multiqc")
    (data_dir,) = task.outputs["data"]
    assert (data_dir / "multiqc_scpermut_metrics_table.txt").is_file(), sorted(
        p.name for p in data_dir.iterdir()
    )
    versions = (data_dir / "multiqc_software_versions.txt").read_text()
    assert "SCPERMUT_TRAIN" in versions and "tensorflow" in versions, versions
    ((step, tool, multiqc_version),) = pipeline_run.step("multiqc_version").versions
    assert (step, tool) == ("MULTIQC", "multiqc")
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", multiqc_version), multiqc_version
    header, *rows = [line.split("\t") for line in versions.splitlines()]
    table = {row[0]: dict(zip(header[1:], row[1:], strict=True)) for row in rows}
    assert table["MULTIQC"]["multiqc"] == multiqc_version, versions


def test_module_versions_are_reported(pipeline_run):
    versions = {
        (task_name.split(":")[-1], tool): version
        for task in pipeline_run.scpermut_tasks()
        for task_name, tool, version in task.versions
    }
    from scpermut import __version__

    assert versions[("SCPERMUT_QC", "scpermut")] == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", versions[("SCPERMUT_TRAIN", "tensorflow")])
    parsed = yaml.safe_load(
        versions_yaml([(f"SCPERMUT:{step}", tool, v) for (step, tool), v in versions.items()])
    )
    assert parsed["SCPERMUT_TRAIN"] == {
        "scpermut": __version__,
        "tensorflow": versions[("SCPERMUT_TRAIN", "tensorflow")],
    }


@pytest.mark.parametrize("name", list(MODULES))
def test_stub_writes_every_declared_output(name, tmp_path):
    process = PROCESSES[name]
    inputs_dir = tmp_path / "inputs"
    inputs_dir.mkdir()
    values = {}
    for kind, input_name, _ in process.inputs:
        if kind == "val":
            values[input_name] = {"id": "sample1", "role": "reference"}
        else:
            dummy = inputs_dir / f"{input_name}.h5ad"
            dummy.touch()
            values[input_name] = [dummy] if input_name.endswith("s") else dummy
    values = {k: (BlankList() if k == "extra_multiqc_config" else v) for k, v in values.items()}
    run_task(name, values, tmp_path / "task", section="stub")


# --------------------------------------------------------------------------------------
# The launcher in bin/
# --------------------------------------------------------------------------------------


def pipeline_with_marked_source(root: Path) -> Path:
    """A copy of bin/scpermut next to a src/ whose `scpermut.cli.main` only says who it is."""
    (root / "bin").mkdir(parents=True)
    shutil.copy(BIN / "scpermut", root / "bin" / "scpermut")
    package = root / "src" / "scpermut"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text(
        "import sys\n\n\ndef main(prog_name):\n    print('pipeline src', prog_name, sys.argv[1:])\n"
    )
    return root / "bin" / "scpermut"


def run_launcher(launcher: Path, *args: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(launcher), *args],
        capture_output=True,
        text=True,
        env={**task_environment(), **environment},
    )


def test_launcher_runs_the_installed_package_even_where_src_is_visible(tmp_path):
    """Docker, Singularity and conda tasks all run the same code: the installed package."""
    run = run_launcher(pipeline_with_marked_source(tmp_path), "--version")
    from scpermut import __version__

    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"scpermut, version {__version__}"


def test_launcher_runs_the_checkouts_source_only_when_asked(tmp_path):
    launcher = pipeline_with_marked_source(tmp_path)
    run = run_launcher(launcher, "qc", "--help", SCPERMUT_USE_SOURCE="1")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "pipeline src scpermut ['qc', '--help']"
    ignored = run_launcher(launcher, "--version", SCPERMUT_USE_SOURCE="0")
    assert ignored.stdout.startswith("scpermut, version"), ignored.stderr


def test_launcher_stops_when_the_asked_for_source_is_not_visible(tmp_path):
    """A container that does not mount the checkout fails loudly, not with other code."""
    shutil.copy(BIN / "scpermut", tmp_path / "scpermut")
    run = run_launcher(tmp_path / "scpermut", "--version", SCPERMUT_USE_SOURCE="1")
    assert run.returncode == 1 and run.stdout == ""
    assert "SCPERMUT_USE_SOURCE=1" in run.stderr and "not visible" in run.stderr, run.stderr


def test_only_the_conda_profiles_opt_into_the_checkouts_source():
    """The conda environments lack scpermut itself: conda/mamba run src/, no other profile."""
    config = strip_comments((REPO / "nextflow.config").read_text())
    profiles = block_after(config, r"(?m)^profiles")
    for name in ("conda", "mamba"):
        assert re.search(
            r"env\.SCPERMUT_USE_SOURCE\s*=\s*'1'", block_after(profiles, rf"(?m)^\s*{name}")
        ), name
    assert config.count("SCPERMUT_USE_SOURCE") == 2
    for path in CONFIG_FILES[1:]:
        assert "SCPERMUT_USE_SOURCE" not in path.read_text(), path.name
