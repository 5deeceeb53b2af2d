"""``scpermut run``: qc -> prepare -> train -> predict -> report in one process.

The outputs follow the layout the Nextflow pipeline publishes::

    OUTDIR/qc/<sample>.qc.h5ad ...      per-sample QC
    OUTDIR/prepare/prepared.h5ad        merged, normalised, split
    OUTDIR/model/                       the trained model folder (not written with --model)
    OUTDIR/annotated/annotated.h5ad     latent, predictions, UMAP
    OUTDIR/report/report.html           report, metrics and MultiQC files

A run either completes or leaves nothing of itself behind: when a step fails, the step
folders this run wrote are removed.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from scpermut.data.preprocess import PrepareSettings
from scpermut.data.qc import QCThresholds
from scpermut.data.samplesheet import SampleSpec
from scpermut.errors import InputError
from scpermut.keys import Keys
from scpermut.steps.predict import predict_file
from scpermut.steps.prepare import PREPARED_FILE, prepare_files
from scpermut.steps.qc import qc_outputs, run_qc
from scpermut.steps.report import write_report

log = logging.getLogger(__name__)

STEP_FOLDERS = ("qc", "prepare", "model", "annotated", "report")
ANNOTATED_FILE = "annotated.h5ad"


@dataclass
class RunOptions:
    """Every setting of the chained steps.

    ``training`` holds the keyword arguments of :func:`scpermut.steps.train.train_file` (device,
    network and training options, named as :class:`scpermut.Model` names them); ``prediction``
    those of :func:`scpermut.annotate` (``unknown_threshold``, ``max_missing_genes``).
    """

    keys: Keys = field(default_factory=Keys)
    qc: QCThresholds = field(default_factory=QCThresholds)
    prepare: PrepareSettings = field(default_factory=PrepareSettings)
    training: dict = field(default_factory=dict)
    prediction: dict = field(default_factory=dict)
    model_dir: Path | None = None  # an already trained model: skip training
    overwrite: bool = False


def options_from_flags(flags: dict, model_dir: Path | None = None) -> RunOptions:
    """Sort the flat keyword arguments of ``scpermut run``/``label`` into each step's settings.

    The arguments carry their Python names (see :mod:`scpermut.options`). The one ``seed`` drives both the validation split and training.
    """
    from scpermut import options as declared

    flags = dict(flags)

    def take(group) -> dict:
        return {name: flags.pop(name) for name in list(group) if name in flags}

    keys, qc = Keys(**take(declared.KEYS)), QCThresholds(**take(declared.QC))
    prepare = PrepareSettings(**take(declared.PREPARE), seed=flags["seed"])
    prediction, overwrite = take(declared.PREDICTION), bool(flags.pop("overwrite", False))
    return RunOptions(keys, qc, prepare, flags, prediction, model_dir, overwrite)


def summary_text(result: dict) -> str:
    """The closing lines of a run: time per step, headline scores and where the report is."""
    seconds = result["seconds"]
    steps = ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items() if name != "total")
    headline = result["headline"]
    lines = [f"scpermut: finished in {seconds['total']:.0f} s ({steps})"]
    if headline["evaluation_set"]:
        lines.append(
            f"  label transfer on {headline['n_cells_evaluated']} labelled {headline['evaluation_set']} cells: "
            f"balanced accuracy {headline['balanced_accuracy']:.3f}, macro F1 {headline['macro_f1']:.3f}, accuracy {headline['accuracy']:.3f}"
        )
    if headline["batch_entropy"] is not None:
        lines.append(
            f"  batch mixing (kNN entropy, 1 = fully mixed): {headline['batch_entropy']:.3f}"
        )
    lines.append(f"  annotated cells: {result['outputs']['annotated']}")
    lines.append(f"  report: {result['outputs']['report']}")
    return "\n".join(lines)


def run_samplesheet(
    samplesheet: str | Path, outdir: str | Path, options: RunOptions | None = None
) -> dict:
    """``scpermut run``: every step on the samples of a samplesheet (default options when None).

    Returns
    -------
    dict
        See :func:`run_steps`.
    """
    from scpermut.data.samplesheet import read_samplesheet

    return run_steps(read_samplesheet(samplesheet), outdir, options or RunOptions())


def run_steps(specs: list[SampleSpec], outdir: str | Path, options: RunOptions) -> dict:
    """Run qc, prepare, train (unless ``options.model_dir``), predict and report into ``outdir``.

    Returns
    -------
    dict
        ``outputs`` (step name to its folder or file), ``seconds`` (per step and ``total``),
        ``headline`` (the report's headline metrics).
    """
    outdir = Path(outdir)
    if options.model_dir is not None and not Path(options.model_dir).is_dir():
        raise InputError(
            f"{options.model_dir}: model folder not found; train one with `scpermut train` or drop --model."
        )
    folders = {name: outdir / name for name in STEP_FOLDERS}
    _claim(outdir, folders, options)
    created_outdir = not outdir.exists()
    try:
        return _run(specs, folders, options)
    except BaseException:
        for folder in folders.values():
            if folder.exists() and not _is_model_input(folder, options):
                shutil.rmtree(folder)
        if created_outdir and outdir.is_dir() and not any(outdir.iterdir()):
            outdir.rmdir()
        log.info("run stopped: the outputs of this run were removed from %s", outdir)
        raise


def _is_model_input(folder: Path, options: RunOptions) -> bool:
    return options.model_dir is not None and folder.resolve() == Path(options.model_dir).resolve()


def _claim(outdir: Path, folders: dict[str, Path], options: RunOptions) -> None:
    """Refuse to mix results with an earlier run's unless ``overwrite``; then clear the earlier ones."""
    earlier = [
        name
        for name, folder in folders.items()
        if folder.exists() and not _is_model_input(folder, options)
    ]
    if earlier and not options.overwrite:
        raise InputError(
            f"{outdir}: already holds results of an earlier run ({', '.join(earlier)}); pass --overwrite to replace them or choose another --outdir."
        )
    for name in earlier:
        shutil.rmtree(folders[name])


def _run(specs: list[SampleSpec], folders: dict[str, Path], options: RunOptions) -> dict:
    train = options.model_dir is None
    steps = ["qc", "prepare"] + (["train"] if train else []) + ["predict", "report"]
    progress = _Progress(steps)

    progress.start("qc")
    for spec in specs:
        summary = run_qc(spec, folders["qc"], options.qc, options.keys)
        log.info(
            "  %s (%s): kept %d of %d cells, %d of %d genes",
            spec.sample,
            spec.role,
            summary["n_cells_after"],
            summary["n_cells_before"],
            summary["n_genes_after"],
            summary["n_genes_before"],
        )
    progress.done("qc", f"{len(specs)} samples -> {folders['qc']}")

    progress.start("prepare")
    summary = prepare_files(
        [qc_outputs(folders["qc"], spec.sample)["h5ad"] for spec in specs],
        folders["prepare"],
        options.prepare,
    )
    prepared = folders["prepare"] / PREPARED_FILE
    splits = ", ".join(f"{n} {name}" for name, n in summary["cells_per_split"].items() if n)
    progress.done(
        "prepare",
        f"{summary['n_cells']} cells ({splits}) x {summary['n_genes']} genes, {summary['n_highly_variable']} highly variable",
    )

    model_dir = Path(options.model_dir) if options.model_dir is not None else folders["model"]
    if train:
        from scpermut.steps.train import train_file  # loads TensorFlow

        progress.start("train")
        model = train_file(prepared, model_dir, **options.training)
        progress.done(
            "train",
            f"{model.record.run.get('device', '')}, epochs {model.record.run.get('epochs_run', {})} -> {model_dir}",
        )

    progress.start("predict")
    annotated = folders["annotated"] / ANNOTATED_FILE
    prediction = predict_file(prepared, model_dir, annotated, **options.prediction)
    progress.done(
        "predict",
        f"{prediction['n_cells']} cells, {prediction['genes_missing']} model genes missing -> {annotated}",
    )

    progress.start("report")
    report = write_report(annotated, model_dir, folders["report"])
    progress.done("report", str(report["outputs"]["html"]))

    outputs = {
        "qc": folders["qc"],
        "prepare": prepared,
        "model": model_dir,
        "annotated": annotated,
        "report": report["outputs"]["html"],
    }
    return {"outputs": outputs, "seconds": progress.seconds, "headline": report["headline"]}


class _Progress:
    """One log line when a step starts and one when it ends, with its rank and duration."""

    def __init__(self, steps: list[str]):
        self.steps = steps
        self.seconds: dict[str, float] = {}
        self._started = time.time()
        self._step_started = self._started

    def start(self, step: str) -> None:
        self._step_started = time.time()
        log.info("[%d/%d] %s ...", self.steps.index(step) + 1, len(self.steps), step)

    def done(self, step: str, message: str) -> None:
        now = time.time()
        self.seconds[step] = round(now - self._step_started, 2)
        self.seconds["total"] = round(now - self._started, 2)
        log.info(
            "[%d/%d] %s done in %.1f s: %s",
            self.steps.index(step) + 1,
            len(self.steps),
            step,
            self.seconds[step],
            message,
        )
