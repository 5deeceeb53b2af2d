"""The ``scpermut`` command line: thin click commands, each one call into the package."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from pathlib import Path

import click

from scpermut import options
from scpermut._version import __version__
from scpermut.errors import ScpermutError
from scpermut.options import Option, flag_text

log = logging.getLogger("scpermut")


class DeclaredOption(click.Option):
    """A click option made from a declared :class:`~scpermut.options.Option`, which it keeps."""

    def __init__(self, *args, declared: Option, **kwargs):
        super().__init__(*args, **kwargs)
        self.declared = declared


def option(name: str, python_name: str | None = None, **kwargs):
    """A click option accepting both ``--snake_case`` and ``--kebab-case`` spellings.

    The value reaches the command as ``python_name`` (default: ``name``).
    """
    flags = [f"--{name}"]
    if "_" in name:
        flags.append(f"--{name.replace('_', '-')}")
    if kwargs.get("is_flag") and kwargs.pop("negatable", False):
        flags = [f"{flag}/--no-{flag[2:]}" for flag in flags] + [f" /--no_{name}"]
    return click.option(*flags, python_name or name, **kwargs)


def reports_errors(func):
    """Turn failures into one logged sentence in the CLI's words and a non-zero exit status.

    A ``ScpermutError`` exits 1; library messages name Python arguments (```batch_size```), the
    sentence names flags (``--batch_size``). A file-system fault (``OSError``) exits 1 naming
    the file; running out of memory exits 1 with one sentence. Ctrl-C (SIGINT) exits 130, saying how to resume when the command can.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ScpermutError as error:
            log.error(flag_text(str(error)))
            sys.exit(1)
        except KeyboardInterrupt:
            resumable = "resume" in kwargs
            log.error(
                "interrupted%s",
                "; rerun the same command with --resume to continue where it stopped" if resumable else "",
            )
            sys.exit(130)
        except MemoryError:
            log.error(
                "out of memory: the data does not fit in this machine's memory; run on a machine with more memory, "
                "on fewer cells (or fewer genes: --n_top_genes), or with a smaller --batch_size."
            )
            sys.exit(1)
        except OSError as error:
            where = error.filename or "a file"
            log.error("%s: %s; check the path, its permissions and the free disk space.", where, error.strerror or error)
            sys.exit(1)

    return wrapper


def _click_kwargs(declared: Option) -> dict:
    """The click keyword arguments of one declared option: its type, limits, default and help."""
    kwargs = {"default": declared.cli_default(), "show_default": declared.default is not None, "help": declared.help}
    if declared.kind is bool:
        kwargs.update(is_flag=True, negatable=declared.negatable)
    elif isinstance(declared.kind, tuple):
        kwargs["type"] = click.Choice(declared.kind)
    elif declared.kind in (int, float):
        range_type = click.IntRange if declared.kind is int else click.FloatRange
        kwargs["type"] = range_type(**_range(declared.limits or {}))
    else:
        kwargs["type"] = str
        if declared.kind == "int_list" or declared.pattern:
            kwargs["callback"] = functools.partial(_checked, declared)
    return kwargs


def _range(limits: dict) -> dict:
    """click's range arguments for JSON-schema limits."""
    bounds = {}
    for name, (side, is_open) in {"minimum": ("min", False), "exclusiveMinimum": ("min", True), "maximum": ("max", False), "exclusiveMaximum": ("max", True)}.items():
        if name in limits:
            bounds[side], bounds[f"{side}_open"] = limits[name], is_open
    return bounds


def _checked(declared: Option, ctx, param, value):
    """Parse ``256,128`` into ``(256, 128)`` and check a value against its option's pattern."""
    if value is None:
        return value
    if declared.kind == "int_list":
        try:
            value = tuple(int(part) for part in str(value).split(",") if part.strip())
        except ValueError:
            raise click.BadParameter("give comma-separated integers, e.g. 256,128") from None
    if (problem := declared.problem(value)) is not None:
        raise click.BadParameter(problem)
    return value


def declared_options(*groups):
    """A decorator adding one click option per declared option (see ``scpermut.options``), in order.

    Each option's value reaches the command under its Python name (``--classifier`` -> ``use_classifier``).
    """
    declared = [item for group in groups for item in (group.values() if isinstance(group, dict) else [group])]

    def decorate(func):
        for item in reversed(declared):
            func = option(item.cli, python_name=item.name, cls=DeclaredOption, declared=item, **_click_kwargs(item))(func)
        return func

    return decorate


def apply_params_file(flags: dict) -> dict:
    """Fill ``flags`` from the ``--params`` JSON file; options given on the command line win."""
    path = flags.pop("params", None)
    if path is None:
        return flags
    ctx = click.get_current_context()
    allowed = {name: options.ALL[name] for name in flags if name in options.ALL}
    for name, value in options.read_params_file(path, allowed).items():
        if ctx.get_parameter_source(name) is click.core.ParameterSource.DEFAULT:
            flags[name] = value
    return flags


def given_on_command_line(names) -> tuple[str, ...]:
    """The option names among ``names`` the user gave (not left at their default)."""
    ctx = click.get_current_context()
    return tuple(name for name in names if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT)


params_option = declared_options(options.PARAMS)
key_options = declared_options(options.KEYS)
qc_options = declared_options(options.QC)
prepare_options = declared_options(options.PREPARE)
seed_option = declared_options(options.SEED)
training_options = declared_options(options.TRAINING)


class SectionedCommand(click.Command):
    """A command whose ``--help`` lists its own input and output options first, then one section per
    :data:`scpermut.options.SECTIONS` entry."""

    def format_options(self, ctx, formatter):
        records = {param.name: param.get_help_record(ctx) for param in self.get_params(ctx) if isinstance(param, click.Option)}
        sectioned = {option.name for section in options.SECTIONS for option in section.options}
        groups = [("Input and output", [name for name in records if name not in sectioned])]
        groups += [(section.title, [option.name for option in section.options]) for section in options.SECTIONS]
        for title, names in groups:
            rows = [records[name] for name in names if records.get(name)]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class CommandGroup(click.Group):
    """The ``scpermut`` group: every command lists its options by section."""

    command_class = SectionedCommand


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="scpermut")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
@option("log_file", type=click.Path(dir_okay=False, path_type=Path), help="Also write the log to this file.")
def main(verbose: bool, quiet: bool, log_file: Path | None):
    """scpermut: cell-type annotation and batch correction for single-cell RNA-seq atlases.

    \b
    Start here:
      scpermut label REF.h5ad --query QUERY.h5ad --class_key cell_type --batch_key batch --outdir out
    (see `scpermut label --help`). Several samples: `scpermut run --input samplesheet.csv`.
    The single steps: qc -> prepare -> train -> predict -> report.
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    # TensorFlow's C++ start-up chatter (CPU features, absl) is noise unless debugging.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", handlers=handlers, force=True)
    # anndata's own chatter ("storing 'x' as categorical", duplicated names, which scpermut names
    # and makes unique itself) is noise unless debugging.
    if not verbose:
        logging.getLogger("anndata").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message="(Variable|Observation) names are not unique", category=UserWarning)


@main.command()
@click.argument("input_file", metavar="INPUT", type=click.Path(path_type=Path))
@option("sample", required=True, help="Sample id (names the outputs and, by default, the batch).")
@option("outdir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the QC outputs.")
@option("role", type=click.Choice(["reference", "query"]), default="reference", show_default=True, help="Reference cells can carry labels; query cells are annotated.")
@option("batch_col", default=None, help="obs column with the batch in this file (default: the sample id is the batch).")
@option("label_col", default=None, help="obs column with the labels in this file (default: --class_key; absent means unlabelled).")
@option("unknown_label", default=None, help="Label value meaning unlabelled in this file (default: --unlabeled_category).")
@option("condition", default=None, help="This sample's condition, written to obs[--condition_key] (default: the file's own column).")
@declared_options(options.LAYER)
@key_options
@qc_options
@reports_errors
def qc(input_file, sample, outdir, role, batch_col, label_col, unknown_label, condition, layer, class_key, batch_key, unlabeled_category, condition_key, **thresholds):
    """Filter one sample's cells and genes and write its QC metrics, plots and summary.

    INPUT is an .h5ad (raw counts in X, a layer or .raw) or a 10x .h5 file.
    """
    from scpermut.data.qc import QCThresholds
    from scpermut.data.samplesheet import SampleSpec
    from scpermut.keys import Keys
    from scpermut.steps.qc import run_qc

    spec = SampleSpec(
        sample=sample,
        path=input_file,
        role=role,
        batch_col=batch_col,
        label_col=label_col,
        unknown_label=unknown_label,
        condition=condition,
        layer=layer,
    )
    keys = Keys(class_key=class_key, batch_key=batch_key, unlabeled_category=unlabeled_category, condition_key=condition_key)
    result = run_qc(spec, outdir, QCThresholds(**thresholds), keys)
    log.info("qc %s: kept %d of %d cells, %d of %d genes -> %s", sample, result["n_cells_after"], result["n_cells_before"], result["n_genes_after"], result["n_genes_before"], outdir)


@main.command()
@click.argument("inputs", metavar="QC_H5AD...", nargs=-1, required=True, type=click.Path(path_type=Path))
@option("outdir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for prepared.h5ad and prepare_summary.json.")
@prepare_options
@seed_option
@reports_errors
def prepare(inputs, outdir, **settings):
    """Merge QC'd samples, align genes, normalise, select batch-aware HVGs and split labelled cells."""
    from scpermut.data.preprocess import PrepareSettings
    from scpermut.steps.prepare import prepare_files

    summary = prepare_files(list(inputs), outdir, PrepareSettings(**settings))
    log.info("prepare: %d cells x %d genes (%d highly variable) -> %s", summary["n_cells"], summary["n_genes"], summary["n_highly_variable"], outdir)


@main.command()
@click.argument("annotated", metavar="ANNOTATED.h5ad", type=click.Path(path_type=Path))
@option("model", required=True, type=click.Path(path_type=Path), help="Model folder used for the prediction.")
@option("outdir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for report.html, metrics and MultiQC files.")
@reports_errors
def report(annotated, model, outdir):
    """Score the predictions and the latent space, and write an HTML report, metrics and MultiQC files."""
    from scpermut.steps.report import write_report

    result = write_report(annotated, model, outdir)
    log.info("report: %s", result["outputs"]["html"])


@main.command()
@click.argument("prepared", metavar="PREPARED.h5ad", type=click.Path(path_type=Path))
@option("out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Model folder to write (refused if it exists, unless --overwrite).")
@seed_option
@declared_options(options.TRAIN_RESUME)
@option("overwrite", is_flag=True, help="Replace an existing model folder.")
@params_option
@declared_options(options.MLFLOW_URI)
@training_options
@reports_errors
def train(prepared, out, mlflow_uri, **flags):
    """Train the model on PREPARED.h5ad (from `scpermut prepare`) and write the model folder."""
    from scpermut.steps.train import train_file
    from scpermut.tracking import log_folder, log_record, tracked_run

    flags = apply_params_file(flags)
    with tracked_run(mlflow_uri, f"train {out.name}", flags) as callbacks:
        model = train_file(prepared, out, callbacks=callbacks, **flags)
        if mlflow_uri:
            log_record(model.record.run, model.record.run.get("validation"))
            log_folder(out, "model")
    run = model.record.run
    log.info("train: %s on %s, epochs %s, validation %s -> %s", run["device"], run["input"]["name"], run["epochs_run"], run.get("validation", "n/a"), out)


@main.command()
@click.argument("input_file", metavar="INPUT.h5ad", type=click.Path(path_type=Path))
@option("model", required=True, type=click.Path(file_okay=False, path_type=Path), help="Model folder written by `scpermut train`.")
@option("out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Annotated .h5ad to write.")
@declared_options(options.PREDICTION, options.UMAP, options.INFERENCE_BATCH_SIZE)
@reports_errors
def predict(input_file, model, out, **options):
    """Annotate INPUT.h5ad (prepared data or a new query) with a trained model: latent, cell types, UMAP."""
    from scpermut.steps.predict import predict_file

    summary = predict_file(input_file, model, out, **options)
    log.info("predict: %d cells, %d model genes missing, predicted %s -> %s", summary["n_cells"], summary["genes_missing"], summary.get("predicted", "n/a"), out)


@main.command()
@click.argument("prepared", metavar="PREPARED.h5ad", type=click.Path(path_type=Path))
@option("out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for study.db, best_params.json, trials.tsv and tune_report.html (an existing study there is continued).")
@declared_options(options.TUNE)
@seed_option
@declared_options(options.MLFLOW_URI)
@training_options
@reports_errors
def tune(prepared, out, trials, mixing_weight, seed, mlflow_uri, **flags):
    """Search training options on PREPARED.h5ad with Optuna (seeded, resumable) and write the best ones.

    Options given on the command line are fixed and left out of the search. Train with the result:
    `scpermut train PREPARED.h5ad --params OUT/best_params.json --out model`.
    """
    from scpermut.constants import TUNE_BEST_PARAMS
    from scpermut.steps.tune import tune_file

    study = tune_file(prepared, out, trials=trials, mixing_weight=mixing_weight, seed=seed, fixed=given_on_command_line(flags), mlflow_uri=mlflow_uri, **flags)
    done = [t for t in study.trials if t.value is not None]
    best = f"best score {study.best_value:.4f} (trial {study.best_trial.number})" if done else "no finished trial"
    log.info("tune: %d trials, %s -> %s", len(study.trials), best, out / TUNE_BEST_PARAMS)



@main.command("tune-plan")
@option("out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for trials/trial_000.json ... (one file per trial).")
@declared_options(options.TUNE, options.TUNE_PIPELINE["tune_fixed"])
@seed_option
@reports_errors
def tune_plan(out, trials, mixing_weight, tune_fixed, seed):
    """Draw the options of every trial of a parallel search up front (seeded): one file per trial.

    Run each file with `scpermut tune-trial`, then pick the best with `scpermut tune-select`.
    """
    from scpermut.steps.tune_parallel import plan_trials

    fixed = tuple(name.strip() for name in (tune_fixed or "").split(",") if name.strip())
    files = plan_trials(out, trials=trials, mixing_weight=mixing_weight, seed=seed, fixed=fixed)
    log.info("tune-plan: %d trials -> %s", len(files), out)


@main.command("tune-trial")
@click.argument("prepared", metavar="PREPARED.h5ad", type=click.Path(path_type=Path))
@click.argument("trial", metavar="TRIAL.json", type=click.Path(path_type=Path))
@option("out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for score.json.")
@seed_option
@declared_options(options.MLFLOW_URI)
@training_options
@reports_errors
def tune_trial(prepared, trial, out, **flags):
    """Train one trial of `scpermut tune-plan` on PREPARED.h5ad and write its score.

    The trial file's options and seed win over the flags; the flags set the others (those of --tune_fixed).
    """
    from scpermut.constants import TUNE_SCORE
    from scpermut.steps.tune_parallel import run_trial

    result = run_trial(prepared, trial, out, **flags)
    log.info("tune-trial %d: score %.4f -> %s", result["number"], result["score"], out / TUNE_SCORE)


@main.command("tune-select")
@click.argument("scores", metavar="SCORE.json...", nargs=-1, required=True, type=click.Path(path_type=Path))
@option("out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for best_params.json, trials.tsv and tune_trials_mqc.tsv.")
@reports_errors
def tune_select(scores, out):
    """Pick the best trial of `scpermut tune-trial` score files (a tie goes to the lowest trial number).

    Train the final model with `scpermut train PREPARED.h5ad --params OUT/best_params.json --out model`.
    """
    from scpermut.constants import TUNE_BEST_PARAMS
    from scpermut.steps.tune_parallel import select_best

    best = select_best(scores, out)
    log.info("tune-select: best score %.4f (trial %d) of %d -> %s", best["score"], best["number"], len(scores), out / TUNE_BEST_PARAMS)

def run_options(umap: Option):
    """What `run` and `label` take: every step's options, and their own: output folder, a ready
    model, prediction, overwriting, resuming, tracking; their faults reported as one sentence."""

    def decorate(func):
        for step_options in (reports_errors, training_options, params_option, seed_option, prepare_options, qc_options, key_options):
            func = step_options(func)
        func = declared_options(options.RESUME, options.MLFLOW_URI, options.QUERY_H5AD)(func)
        func = option("overwrite", is_flag=True, help="Replace the results of an earlier run in --outdir (kept until the new run succeeds).")(func)
        func = declared_options(options.PREDICTION, umap)(func)
        func = option("model", default=None, type=click.Path(file_okay=False, path_type=Path), help="Annotate with this trained model folder instead of training one.")(func)
        func = declared_options(options.LAYER)(func)
        return option("outdir", required=True, type=click.Path(path_type=Path), help="Folder for qc/, prepare/, model/, annotated/ and report/.")(func)

    return decorate


RUN_EXAMPLE = """\b
Example:
  scpermut run --input samplesheet.csv --outdir results --class_key cell_type --batch_key batch
"""

LABEL_EXAMPLE = """\b
Examples:
  # annotate query.h5ad from the labelled reference atlas ref.h5ad
  scpermut label ref.h5ad --query query.h5ad --class_key cell_type --batch_key batch --outdir out
  # complete an atlas whose unlabelled cells have cell_type 'Unknown'
  scpermut label atlas.h5ad --class_key cell_type --batch_key batch --outdir out
  # with a UMAP of the latent space in the report (slower)
  scpermut label ref.h5ad --query query.h5ad --umap --outdir out
"""


@main.command(epilog=RUN_EXAMPLE)
@option("input", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Samplesheet CSV: sample,h5ad[,role,batch_col,label_col,unknown_label,condition,layer].")
@run_options(options.UMAP)
def run(outdir, model, layer, **flags):
    """Run qc -> prepare -> train -> predict -> report on a samplesheet, in one process.

    Writes OUTDIR/qc/, prepare/, model/ (unless --model), annotated/annotated.h5ad and report/.
    --layer applies to the samples whose samplesheet row names no layer.
    """
    from dataclasses import replace

    from scpermut.data.samplesheet import read_samplesheet
    from scpermut.steps.run import options_from_flags, run_steps, summary_text

    apply_params_file(flags)
    specs = read_samplesheet(flags.pop("input"))
    if layer is not None:
        specs = [spec if spec.layer else replace(spec, layer=layer) for spec in specs]
    result = run_steps(specs, outdir, options_from_flags(flags, model_dir=model))
    click.echo(summary_text(result))


@main.command(epilog=LABEL_EXAMPLE)
@click.argument("atlas", metavar="ATLAS.h5ad", type=click.Path(dir_okay=False, path_type=Path))
@option("query", default=None, type=click.Path(dir_okay=False, path_type=Path), help="Annotate this file instead of the atlas's unlabelled cells (its labels, if any, only score the result).")
@run_options(options.LABEL_UMAP)
def label(atlas, query, outdir, model, layer, **flags):
    """Annotate the unlabelled cells of ATLAS.h5ad (or of --query) and write the annotated h5ad and a report.

    ATLAS.h5ad holds raw counts; --class_key names its label column (--unlabeled_category marks
    the cells to annotate) and --batch_key its batch column. Every cell to annotate gets a
    prediction: QC only chooses the cells that train the model.
    """
    from scpermut.steps.label import label_atlas
    from scpermut.steps.run import options_from_flags, summary_text

    apply_params_file(flags)
    result = label_atlas(atlas, outdir, options_from_flags(flags, model_dir=model), query=query, layer=layer)
    click.echo(summary_text(result))


@main.command("options")
@option("nextflow", "pipeline_dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path), help="Pipeline checkout whose nextflow.config params, nextflow_schema.json sections and conf/modules_args.config to write.")
@option("check", is_flag=True, help="Write nothing; exit 1 when a generated file is not up to date.")
@reports_errors
def options_command(pipeline_dir, check):
    """Write the pipeline's params, launch-form sections and step flags from the declared options."""
    from scpermut.pipeline_files import write

    changed = write(pipeline_dir, main.commands, check=check)
    for path in changed:
        log.info("%s: %s", path, "out of date" if check else "written")
    if check and changed:
        sys.exit(1)


if __name__ == "__main__":
    main()
