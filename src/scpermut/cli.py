"""The ``scpermut`` command line: thin click commands, each one call into the package."""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import click

from scpermut import __version__, _keys
from scpermut.errors import ScpermutError

log = logging.getLogger("scpermut")


def option(name: str, **kwargs):
    """A click option accepting both ``--snake_case`` and ``--kebab-case`` spellings."""
    flags = [f"--{name}"]
    if "_" in name:
        flags.append(f"--{name.replace('_', '-')}")
    if kwargs.get("is_flag") and kwargs.pop("negatable", False):
        flags = [f"{flag}/--no-{flag[2:]}" for flag in flags]
    return click.option(*flags, name, **kwargs)


def reports_errors(func):
    """Turn a ``ScpermutError`` into one logged sentence and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ScpermutError as error:
            log.error(str(error))
            sys.exit(1)

    return wrapper


def key_options(func):
    """The AnnData columns every step agrees on."""
    func = option(
        "unlabeled_category",
        default=_keys.DEFAULT_UNLABELED_CATEGORY,
        show_default=True,
        help="Label value that marks a cell as unlabelled.",
    )(func)
    func = option(
        "batch_key",
        default=_keys.DEFAULT_BATCH_KEY,
        show_default=True,
        help="obs column holding the batch (donor, technology, lab...).",
    )(func)
    func = option(
        "class_key",
        default=_keys.DEFAULT_CLASS_KEY,
        show_default=True,
        help="obs column holding the cell-type label.",
    )(func)
    return func


def _option_table(rows):
    """A decorator adding one option per ``(name, default, type, help)`` row, in row order."""

    def decorate(func):
        for name, default, kind, text in reversed(rows):
            func = option(name, default=default, type=kind, show_default=True, help=text)(func)
        return func

    return decorate


qc_options = _option_table(
    [
        ("min_genes", 200, int, "Remove cells with fewer detected genes."),
        ("max_genes", 0, int, "Remove cells with more detected genes (0: no limit)."),
        ("min_counts", 0, int, "Remove cells with fewer total counts."),
        ("max_pct_mito", 20.0, float, "Remove cells with a higher % of mitochondrial counts (100: off)."),
        ("min_cells", 3, int, "Remove genes detected in fewer cells."),
    ]
)

prepare_options = _option_table(
    [
        ("n_top_genes", 2000, int, "Number of batch-aware highly variable genes the model uses."),
        ("target_sum", 1e4, float, "Counts per cell after library-size normalisation."),
        ("min_shared_genes", 200, int, "Stop when the samples share fewer genes than this."),
        ("validation_fraction", 0.2, float, "Fraction of labelled reference cells held out for early stopping."),
    ]
)


def seed_option(func):
    return option("seed", default=0, type=int, show_default=True, help="Random seed: same data and seed give identical results.")(func)


def _int_list(ctx, param, value):
    """Parse ``256,128`` into ``(256, 128)``."""
    try:
        return tuple(int(part) for part in str(value).split(",") if part.strip())
    except ValueError:
        raise click.BadParameter("give comma-separated integers, e.g. 256,128") from None


def training_options(func):
    """Network shape, losses, schedule and device of the model (shared by `train`, `run` and `label`).

    Pass the collected values through ``scpermut.model.settings.options_from_cli`` to get
    ``scpermut.Model`` keyword arguments (plus ``device`` and ``mixed_precision``).
    """
    from scpermut.model.settings import DEVICES, EARLY_STOPPING_METRICS, RECONSTRUCTIONS, cli_defaults

    default = cli_defaults()
    switch = {"is_flag": True, "negatable": True}
    for name, kwargs, text in reversed(
        [
            ("device", {"type": click.Choice(DEVICES), "default": "auto"}, "Where to train: auto uses a GPU when TensorFlow sees one."),
            ("mixed_precision", {"is_flag": True, "default": False}, "float16 mixed precision on a GPU (ignored on the CPU)."),
            ("latent_dim", {"type": int}, "Size of the latent space."),
            ("hidden_layers", {"callback": _int_list, "default": ",".join(map(str, default["hidden_layers"]))}, "Encoder layer widths (the decoder mirrors them)."),
            ("dropout", {"type": float}, "Dropout rate of the hidden layers."),
            ("batch_size", {"type": int}, "Cells per mini-batch."),
            ("learning_rate", {"type": float}, "Adam learning rate."),
            ("epochs_warmup", {"type": int}, "Epochs of autoencoder + DANN warm-up on all cells."),
            ("epochs_full", {"type": int}, "Maximum epochs of the full model (permutation, classifier, DANN)."),
            ("epochs_finetune", {"type": int}, "Maximum epochs of classifier fine-tuning (encoder frozen)."),
            ("patience", {"type": int}, "Epochs without validation improvement before a phase stops early."),
            ("early_stopping_metric", {"type": click.Choice(EARLY_STOPPING_METRICS)}, "Validation score that picks the best epoch."),
            ("rec_weight", {"type": float}, "Weight of the reconstruction loss (0: off)."),
            ("clf_weight", {"type": float}, "Weight of the focal classification loss (0: off)."),
            ("dann_weight", {"type": float}, "Weight of the adversarial batch loss (0: off)."),
            ("focal_gamma", {"type": float}, "Focal loss gamma (0: class-weighted cross-entropy)."),
            ("grl_lambda", {"type": float}, "Gradient-reversal strength."),
            ("grl_ramp", switch, "Ramp the gradient reversal from 0 to its strength over the adversarial epochs."),
            ("dann", switch, "Domain-adversarial batch head (--no-dann: off)."),
            ("classifier", switch, "Cell-type classifier head (--no-classifier: latent space only)."),
            ("permutation", switch, "Labelled cells reconstruct another cell of their type (--no-permutation: themselves)."),
            ("permute_across_batches", switch, "Draw the permutation partner from another batch when the type has cells there."),
            ("reconstruction", {"type": click.Choice(RECONSTRUCTIONS)}, "mse on log-normalised expression, or nb (negative binomial) on raw counts."),
        ]
    ):
        kwargs = {"default": default.get(name), **kwargs}
        func = option(name, show_default=True, help=text, **kwargs)(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="scpermut")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
@option("log_file", type=click.Path(dir_okay=False, path_type=Path), help="Also write the log to this file.")
def main(verbose: bool, quiet: bool, log_file: Path | None):
    """scpermut: cell-type annotation and batch correction for single-cell RNA-seq atlases.

    Steps: qc -> prepare -> train -> predict -> report, or all of them with `scpermut run`.
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    # TensorFlow's C++ start-up chatter (CPU features, absl) is noise unless debugging.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", handlers=handlers, force=True)


@main.command()
@click.argument("input_file", metavar="INPUT", type=click.Path(path_type=Path))
@option("sample", required=True, help="Sample id (names the outputs and, by default, the batch).")
@option("outdir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the QC outputs.")
@option("role", type=click.Choice(["reference", "query"]), default="reference", show_default=True, help="Reference cells can carry labels; query cells are annotated.")
@option("batch_col", default=None, help="obs column with the batch in this file (default: the sample id is the batch).")
@option("label_col", default=None, help="obs column with the labels in this file (default: --class_key; absent means unlabelled).")
@option("unknown_label", default=None, help="Label value meaning unlabelled in this file (default: --unlabeled_category).")
@option("layer", default=None, help="Layer holding raw counts ('raw' for .raw); default: detect.")
@key_options
@qc_options
@reports_errors
def qc(input_file, sample, outdir, role, batch_col, label_col, unknown_label, layer, class_key, batch_key, unlabeled_category, **thresholds):
    """Filter one sample's cells and genes and write its QC metrics, plots and summary.

    INPUT is an .h5ad (raw counts in X, a layer or .raw) or a 10x .h5 file.
    """
    from scpermut.data.qc import QCThresholds, run_qc
    from scpermut.data.samplesheet import SampleSpec

    spec = SampleSpec(
        sample=sample,
        path=input_file,
        role=role,
        batch_col=batch_col,
        label_col=label_col,
        unknown_label=unknown_label,
        layer=layer,
    )
    result = run_qc(spec, outdir, QCThresholds(**thresholds), class_key=class_key, batch_key=batch_key, unlabeled_category=unlabeled_category)
    log.info("qc %s: kept %d of %d cells, %d of %d genes -> %s", sample, result["n_cells_after"], result["n_cells_before"], result["n_genes_after"], result["n_genes_before"], outdir)


@main.command()
@click.argument("inputs", metavar="QC_H5AD...", nargs=-1, required=True, type=click.Path(path_type=Path))
@option("outdir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for prepared.h5ad and prepare_summary.json.")
@prepare_options
@seed_option
@reports_errors
def prepare(inputs, outdir, **settings):
    """Merge QC'd samples, align genes, normalise, select batch-aware HVGs and split labelled cells."""
    from scpermut.data.preprocess import PrepareSettings, prepare_files

    summary = prepare_files(list(inputs), outdir, PrepareSettings(**settings))
    log.info("prepare: %d cells x %d genes (%d highly variable) -> %s", summary["n_cells"], summary["n_genes"], summary["n_highly_variable"], outdir)


# Commands added by later steps (train, predict, report, run, label) go below.


@main.command()
@click.argument("annotated", metavar="ANNOTATED.h5ad", type=click.Path(path_type=Path))
@option("model", required=True, type=click.Path(path_type=Path), help="Model folder used for the prediction.")
@option("outdir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for report.html, metrics and MultiQC files.")
@reports_errors
def report(annotated, model, outdir):
    """Score the predictions and the latent space, and write an HTML report, metrics and MultiQC files."""
    from scpermut.report import write_report

    result = write_report(annotated, model, outdir)
    log.info("report: %s", result["outputs"]["html"])


@main.command()
@click.argument("prepared", metavar="PREPARED.h5ad", type=click.Path(path_type=Path))
@option("out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Model folder to write (refused if it exists, unless --overwrite).")
@seed_option
@option("resume", is_flag=True, help="Continue the training checkpointed in MODEL_DIR/checkpoint/.")
@option("overwrite", is_flag=True, help="Replace an existing model folder.")
@training_options
@reports_errors
def train(prepared, out, **flags):
    """Train the model on PREPARED.h5ad (from `scpermut prepare`) and write the model folder."""
    from scpermut.model.api import train_file
    from scpermut.model.settings import options_from_cli

    model = train_file(prepared, out, **options_from_cli(flags))
    run = model.record.run
    log.info("train: %s on %s, epochs %s, validation %s -> %s", run["device"], run["input"]["name"], run["epochs_run"], run.get("validation", "n/a"), out)


@main.command()
@click.argument("input_file", metavar="INPUT.h5ad", type=click.Path(path_type=Path))
@option("model", required=True, type=click.Path(file_okay=False, path_type=Path), help="Model folder written by `scpermut train`.")
@option("out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Annotated .h5ad to write.")
@option("unknown_threshold", default=0.0, type=float, show_default=True, help="Label cells 'Unknown' when their top class probability is below this.")
@option("max_missing_genes", default=0.5, type=float, show_default=True, help="Stop when a larger fraction of the model's genes is missing from INPUT.")
@option("umap", is_flag=True, negatable=True, default=True, show_default=True, help="Compute a UMAP of the latent space.")
@option("batch_size", default=None, type=int, help="Cells per inference batch [default: 4 x the training batch size].")
@reports_errors
def predict(input_file, model, out, **options):
    """Annotate INPUT.h5ad (prepared data or a new query) with a trained model: latent, cell types, UMAP."""
    from scpermut.annotate import predict_file

    summary = predict_file(input_file, model, out, **options)
    log.info("predict: %d cells, %d model genes missing, predicted %s -> %s", summary["n_cells"], summary["genes_missing"], summary.get("predicted", "n/a"), out)


def run_options(func):
    """Options `run` and `label` add to the step options: output folder, a ready model, prediction, overwriting."""
    func = option("overwrite", is_flag=True, help="Replace the results of an earlier run in --outdir.")(func)
    func = option("max_missing_genes", default=0.5, type=float, show_default=True, help="Stop when a larger fraction of the model's genes is missing from the data.")(func)
    func = option("unknown_threshold", default=0.0, type=float, show_default=True, help="Label cells 'Unknown' when their top class probability is below this.")(func)
    func = option("model", default=None, type=click.Path(file_okay=False, path_type=Path), help="Annotate with this trained model folder instead of training one.")(func)
    return option("outdir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for qc/, prepare/, model/, annotated/ and report/.")(func)


@main.command()
@option("input", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Samplesheet CSV: sample,h5ad[,role,batch_col,label_col,unknown_label,layer].")
@run_options
@key_options
@qc_options
@prepare_options
@seed_option
@training_options
@reports_errors
def run(outdir, model, **flags):
    """Run qc -> prepare -> train -> predict -> report on a samplesheet, in one process.

    Writes OUTDIR/qc/, prepare/, model/ (unless --model), annotated/annotated.h5ad and report/.
    """
    from scpermut.pipeline import options_from_flags, run_samplesheet, summary_text

    samplesheet = flags.pop("input")
    result = run_samplesheet(samplesheet, outdir, options_from_flags(flags, model_dir=model))
    click.echo(summary_text(result))


@main.command()
@click.argument("atlas", metavar="ATLAS.h5ad", type=click.Path(dir_okay=False, path_type=Path))
@option("query", default=None, type=click.Path(dir_okay=False, path_type=Path), help="Annotate this file instead of the atlas's unlabelled cells (its labels, if any, only score the result).")
@run_options
@key_options
@qc_options
@prepare_options
@seed_option
@training_options
@reports_errors
def label(atlas, query, outdir, model, **flags):
    """Annotate the unlabelled cells of ATLAS.h5ad (or of --query) and write the annotated h5ad and a report.

    ATLAS.h5ad holds raw counts; --class_key names its label column (--unlabeled_category marks
    the cells to annotate) and --batch_key its batch column.
    """
    from scpermut.pipeline import label_atlas, options_from_flags, summary_text

    result = label_atlas(atlas, outdir, options_from_flags(flags, model_dir=model), query=query)
    click.echo(summary_text(result))


if __name__ == "__main__":
    main()
