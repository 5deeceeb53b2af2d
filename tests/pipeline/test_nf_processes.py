"""Every process has a container, a label, conda, a ``when:`` and a ``stub:``; GPU, profiles, boolean params and images behave as documented."""

from __future__ import annotations

import re
import tomllib

import pytest
import reftrace
import yaml
from nextflow_text import (
    block_after,
    evaluate,
    strip_comments,
)
from nf_contract import (
    CONFIG_FILES,
    CONFIG_PARAMS,
    EXT_ARGS,
    MODULES,
    NF_FILES,
    PARAMS_READ_BY_NF_SCHEMA,
    PROCESSES,
    REPO,
    SCPERMUT_MODULES,
)

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


@pytest.mark.parametrize("trainer", ["train", "tune_trial"])
def test_only_training_steps_are_gpu_and_switch_to_the_gpu_image(trainer):
    for name, path in MODULES.items():
        (process,) = reftrace.Module.from_file(str(path)).processes
        labels = {label.value for label in process.labels}
        assert ("process_gpu" in labels) == (name in ("train", "tune_trial")), name
    (process,) = reftrace.Module.from_file(str(MODULES[trainer])).processes
    (container,) = process.containers
    assert "task.ext.use_gpu" in container.condition
    assert container.true_name.endswith(
        "-gpu"
    ) and container.false_name == container.true_name.removesuffix("-gpu")
    assert "--device ${device}" in PROCESSES[trainer].script_parts()[1]


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
    """A `--calibrate false` from a params file or a launch form can reach the pipeline as the
    string 'false', which Groovy takes as true: every read of a boolean param must go through
    toBoolean()."""
    assert {"calibrate", "umap", "mixed_precision", "validate_params"} <= set(BOOLEAN_PARAMS)
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
    off = {"--no-classifier", "--no-permutation", "--no-grl_ramp", "--no-calibrate", "--no-pseudo_permutation"}
    assert off | {"--no-permute_across_batches"} <= set(train), train
    assert "--mixed_precision" not in train
    assert "--no-umap" in evaluate(EXT_ARGS["SCPERMUT_PREDICT"], {"params": params}).split()


@pytest.mark.parametrize("given", [True, "true", "TRUE"])
def test_a_true_boolean_param_turns_its_flag_on_whatever_its_type(given):
    params = {**CONFIG_PARAMS, **dict.fromkeys(BOOLEAN_PARAMS, given)}
    train = evaluate(EXT_ARGS["SCPERMUT_TRAIN"], {"params": params}).split()
    assert not [flag for flag in train if flag.startswith("--no-")], train
    assert {"--grl_ramp", "--permute_across_batches", "--mixed_precision", "--calibrate"} <= set(train)
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




def test_conda_environments_pin_the_versions_the_images_install():
    """-profile conda and the containers must run the same software: every pin equals the lock's."""
    lock = {
        name.lower().replace("_", "-"): version
        for name, version in re.findall(
            r"(?m)^([A-Za-z0-9_.-]+)==(\S+)", (REPO / "containers" / "requirements.lock.txt").read_text()
        )
    }
    environment = (REPO / "containers" / "environment.yml").read_text()
    pinned = 0
    for entry in re.findall(r"(?m)^\s*-\s+(\S+)$", environment):
        name, _, version = entry.split("::")[-1].replace("==", "=").partition("=")
        if name.lower() in lock:
            assert version == lock[name.lower()], f"{entry}: the images install {lock[name.lower()]}"
            pinned += 1
    assert pinned >= 12, "the conda environment lists too few of the locked packages"


def test_free_text_of_the_search_reaches_tune_plan_as_one_word():
    import shlex

    params = {**CONFIG_PARAMS, "tune_fixed": "epochs_full,it's"}
    plan = shlex.split(evaluate(EXT_ARGS["SCPERMUT_TUNE_PLAN"], {"params": params}))
    assert plan[plan.index("--tune_fixed") + 1] == "epochs_full,it's"
