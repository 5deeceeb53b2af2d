"""``scpermut run``: qc -> prepare -> train -> predict -> report in one process.

The outputs follow the layout the Nextflow pipeline publishes::

    OUTDIR/qc/<sample>.qc.h5ad ...      per-sample QC
    OUTDIR/prepare/prepared.h5ad        merged, normalised, split
    OUTDIR/model/                       the trained model folder (not written with --model)
    OUTDIR/annotated/annotated.h5ad     latent, predictions, UMAP
    OUTDIR/report/report.html           report, metrics and MultiQC files

A run builds its folders in ``OUTDIR/.scpermut-partial/`` and moves them into place only when
every step succeeded, so a failed run (``--overwrite`` or not) never destroys earlier results.
When the input is at fault the partial folder is removed; when the run is interrupted (SIGINT,
SIGKILL, a crash) it is kept, and ``--resume`` continues it: finished steps are reused and
training continues from its last epoch checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from scpermut.data.preprocess import PrepareSettings
from scpermut.data.qc import QCThresholds
from scpermut.data.samplesheet import SampleSpec
from scpermut.errors import InputError, ScpermutError
from scpermut.keys import Keys
from scpermut.steps.predict import predict_file
from scpermut.steps.prepare import PREPARED_FILE, prepare_files
from scpermut.steps.qc import qc_outputs, run_qc
from scpermut.steps.report import write_report
from scpermut.tracking import log_folder, log_record, tracked_run

log = logging.getLogger(__name__)

STEP_FOLDERS = ("qc", "prepare", "model", "annotated", "report")
ANNOTATED_FILE = "annotated.h5ad"
PARTIAL = ".scpermut-partial"  # the folder a run builds in, inside OUTDIR
_DONE_FILE = "done.json"  # in PARTIAL: the finished steps and the options they ran with


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
    resume: bool = False  # continue the interrupted run in OUTDIR
    mlflow_uri: str | None = None  # track the run in MLflow (see scpermut.tracking)


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
    prediction = take(declared.PREDICTION)
    if "umap" in flags:
        prediction["umap"] = flags.pop("umap")
    overwrite, resume = bool(flags.pop("overwrite", False)), bool(flags.pop("resume", False))
    mlflow_uri = flags.pop("mlflow_uri", None)
    return RunOptions(keys, qc, prepare, flags, prediction, model_dir, overwrite, resume, mlflow_uri)


def summary_text(result: dict) -> str:
    """The closing lines of a run: time per step, headline scores and where the report is."""
    seconds = result["seconds"]
    steps = ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items() if name != "total")
    headline = result["headline"]
    lines = [f"scpermut: finished in {seconds['total']:.0f} s ({steps})"]
    if headline.get("n_cells_annotated"):
        flagged = headline.get("n_annotated_failed_qc") or 0
        confidence = headline.get("annotated_mean_confidence")
        lines.append(
            f"  annotated {headline['n_cells_annotated']} cells"
            + (f" ({flagged} failed QC: annotated, flagged obs['scpermut_qc_pass'])" if flagged else "")
            + (f", mean confidence {confidence:.2f}" if confidence is not None else "")
        )
    elif headline.get("n_cells_annotated") == 0:
        lines.append("  no cell to annotate: the scores below are on held-out reference cells")
    if result.get("warnings"):
        lines.append(f"  {len(result['warnings'])} warnings: see the top of the report")
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


def run_steps(specs: list[SampleSpec], outdir: str | Path, options: RunOptions, command: str = "run") -> dict:
    """Run qc, prepare, train (unless ``options.model_dir``), predict and report into ``outdir``.

    With ``options.mlflow_uri`` the run is the MLflow run ``"<command> <outdir name>"``: its
    settings as parameters, the training epochs, the model's run record and the report's
    headline as metrics, and the report folder and trained model folder as artifacts.

    Returns
    -------
    dict
        ``outputs`` (step name to its folder or file), ``seconds`` (per step and ``total``),
        ``headline`` (the report's headline metrics).
    """
    outdir = Path(outdir)
    settings = _settings(options)
    params = {
        **settings["keys"], **settings["qc"], **settings["prepare"], **settings["training"], **settings["prediction"],
        "model": settings["model"],
    }
    with tracked_run(options.mlflow_uri, f"{command} {outdir.name}", params) as callbacks:
        result = _run_published(specs, outdir, options, callbacks)
        if options.mlflow_uri:
            _log_outputs(result, trained=options.model_dir is None)
    return result


def _log_outputs(result: dict, trained: bool) -> None:
    """Log the model's run record, the headline scores, the report folder and a trained model folder."""
    from scpermut.model.persistence import read_model_record

    outputs = result["outputs"]
    log_record(read_model_record(outputs["model"], complete=False).run, result["headline"])
    log_folder(Path(outputs["report"]).parent, "report")
    if trained:
        log_folder(outputs["model"], "model")


def _run_published(specs: list[SampleSpec], outdir: Path, options: RunOptions, callbacks: list) -> dict:
    """:func:`run_steps` without tracking: build in the partial folder, then publish."""
    if options.model_dir is not None and not Path(options.model_dir).is_dir():
        raise InputError(
            f"{options.model_dir}: model folder not found; train one with `scpermut train` or drop --model."
        )
    final = {name: outdir / name for name in STEP_FOLDERS}
    _claim(outdir, final, options)
    created_outdir = not outdir.exists()
    partial = _open_partial(outdir, options)
    folders = {name: partial / name for name in STEP_FOLDERS}
    warnings = _WarningCollector()
    logging.getLogger("scpermut").addHandler(warnings)
    try:
        result = _run(specs, folders, options, partial, warnings.messages, callbacks)
    except ScpermutError:
        # The input is at fault: rerunning needs a fix, not --resume.
        _remove_partial(outdir, partial, created_outdir)
        log.info("run stopped: the outputs of this run were removed; earlier results in %s are untouched", outdir)
        raise
    except BaseException:
        log.warning(
            "run interrupted: its finished steps are kept in %s; rerun the same command with --resume to continue",
            partial,
        )
        raise
    finally:
        logging.getLogger("scpermut").removeHandler(warnings)
    _publish(partial, final, options)
    return _relocated(result, partial, outdir)


def _check_writable(outdir: Path) -> None:
    """Stop before any work when ``outdir`` cannot be created or written (one sentence)."""
    existing = outdir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{outdir}: cannot be created, {existing} is a file; choose another --outdir.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{outdir}: cannot write into {existing} (permission denied); choose another --outdir.")


def _open_partial(outdir: Path, options: RunOptions) -> Path:
    """The folder this run builds in: reused with ``resume``, otherwise fresh."""
    partial = outdir / PARTIAL
    fingerprint = _fingerprint(options)
    if partial.exists():
        done = _read_done(partial)
        if options.resume and done.get("options") == fingerprint:
            log.info("resuming the interrupted run in %s (finished: %s)", outdir, ", ".join(done.get("steps", [])) or "none")
            return partial
        if options.resume:
            log.warning("the interrupted run in %s used other options; starting again", outdir)
        else:
            log.warning("discarding the interrupted run in %s (pass --resume to continue one)", outdir)
        shutil.rmtree(partial)
    elif options.resume:
        log.info("no interrupted run in %s: starting a new one", outdir)
    try:
        partial.mkdir(parents=True)
    except OSError as error:
        raise InputError(f"{outdir}: cannot create the output folder ({error.strerror}); choose another --outdir.") from error
    _write_done(partial, {"options": fingerprint, "steps": []})
    return partial


def _settings(options: RunOptions) -> dict:
    """The options that shape results, per step, and the model folder used (None: trained)."""
    from dataclasses import asdict

    return {
        "keys": options.keys.to_dict(),
        "qc": asdict(options.qc),
        "prepare": asdict(options.prepare),
        "training": options.training,
        "prediction": options.prediction,
        "model": str(options.model_dir),
    }


def _fingerprint(options: RunOptions) -> str:
    """The options that shape results, as text: a resumed run must use the same ones."""
    return json.dumps(_settings(options), sort_keys=True, default=str)


def _read_done(partial: Path) -> dict:
    try:
        return json.loads((partial / _DONE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _write_done(partial: Path, done: dict) -> None:
    from scpermut._atomic import write_json

    write_json(partial / _DONE_FILE, done)


def _mark_done(partial: Path, step: str) -> None:
    done = _read_done(partial)
    done["steps"] = [*done.get("steps", []), step]
    _write_done(partial, done)


def _remove_partial(outdir: Path, partial: Path, created_outdir: bool) -> None:
    shutil.rmtree(partial, ignore_errors=True)
    if created_outdir and outdir.is_dir() and not any(outdir.iterdir()):
        outdir.rmdir()


def _publish(partial: Path, final: dict[str, Path], options: RunOptions) -> None:
    """Move the finished step folders into place, each replacing the earlier one, then drop ``partial``."""
    for name, target in final.items():
        built = partial / name
        if not built.exists():
            continue
        if target.exists() and not _is_model_input(target, options):
            old = partial / f"{name}.replaced"
            os.replace(target, old)
        os.replace(built, target)
    shutil.rmtree(partial)


def _relocated(result: dict, partial: Path, outdir: Path) -> dict:
    """``result`` with its paths under ``partial`` pointing to their published place in ``outdir``."""

    def move(path):
        path = Path(path)
        return outdir / path.relative_to(partial) if path.is_relative_to(partial) else path

    result["outputs"] = {name: move(path) for name, path in result["outputs"].items()}
    return result


def _is_model_input(folder: Path, options: RunOptions) -> bool:
    return options.model_dir is not None and folder.resolve() == Path(options.model_dir).resolve()


def _claim(outdir: Path, folders: dict[str, Path], options: RunOptions) -> None:
    """Check ``outdir`` can be written, and refuse to replace an earlier run's results unless ``overwrite``.

    The earlier results stay in place until this run has succeeded.
    """
    _check_writable(outdir)
    earlier = [
        name
        for name, folder in folders.items()
        if folder.exists() and not _is_model_input(folder, options)
    ]
    if earlier and not options.overwrite:
        raise InputError(
            f"{outdir}: already holds results of an earlier run ({', '.join(earlier)}); pass --overwrite to replace them "
            "(they are kept until the new run succeeds) or choose another --outdir."
        )


class _WarningCollector(logging.Handler):
    """Keeps the text of every warning logged during a run, for its report."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _run(
    specs: list[SampleSpec],
    folders: dict[str, Path],
    options: RunOptions,
    partial: Path,
    warnings: list[str],
    callbacks: list,
) -> dict:
    outdir = partial.parent

    def published(path: Path) -> Path:
        """Where ``path``, built in ``partial``, will be once the run succeeded."""
        return outdir / Path(path).relative_to(partial) if Path(path).is_relative_to(partial) else Path(path)

    train = options.model_dir is None
    steps = ["qc", "prepare"] + (["train"] if train else []) + ["predict", "report"]
    progress = _Progress(steps)
    finished = set(_read_done(partial).get("steps", []))

    def step(name: str) -> bool:
        """Start step ``name``; False when a resumed run finished it already."""
        if name in finished:
            log.info("[%d/%d] %s: reused from the interrupted run", steps.index(name) + 1, len(steps), name)
            return False
        progress.start(name)
        return True

    if step("qc"):
        for spec in specs:
            summary = run_qc(spec, folders["qc"], options.qc, options.keys)
            flagged = f", {summary['n_cells_flagged']} failing QC kept to annotate" if summary.get("n_cells_flagged") else ""
            log.info(
                "  %s (%s): kept %d of %d cells%s, %d of %d genes",
                spec.sample,
                spec.role,
                summary["n_cells_after"],
                summary["n_cells_before"],
                flagged,
                summary["n_genes_after"],
                summary["n_genes_before"],
            )
        _mark_done(partial, "qc")
        progress.done("qc", f"{len(specs)} samples")

    prepared = folders["prepare"] / PREPARED_FILE
    if step("prepare"):
        summary = prepare_files(
            [qc_outputs(folders["qc"], spec.sample)["h5ad"] for spec in specs],
            folders["prepare"],
            options.prepare,
        )
        splits = ", ".join(f"{n} {name}" for name, n in summary["cells_per_split"].items() if n)
        _mark_done(partial, "prepare")
        progress.done(
            "prepare",
            f"{summary['n_cells']} cells ({splits}) x {summary['n_genes']} genes, {summary['n_highly_variable']} highly variable",
        )

    model_dir = Path(options.model_dir) if options.model_dir is not None else folders["model"]
    if train and step("train"):
        from scpermut.model import persistence
        from scpermut.steps.train import train_file  # loads TensorFlow

        resume = options.resume and (model_dir / persistence.CHECKPOINT).is_dir()
        if resume:
            log.info("training continues from its checkpoint in %s", model_dir / persistence.CHECKPOINT)
        model = train_file(
            prepared, model_dir, resume=resume, recorded_input=published(prepared), callbacks=callbacks, **options.training
        )
        _mark_done(partial, "train")
        progress.done(
            "train",
            f"{model.record.run.get('device', '')}, epochs {model.record.run.get('epochs_run', {})}",
        )

    annotated = folders["annotated"] / ANNOTATED_FILE
    if step("predict"):
        prediction = predict_file(
            prepared, model_dir, annotated, recorded_model=published(model_dir), **options.prediction
        )
        _mark_done(partial, "predict")
        progress.done("predict", f"{prediction['n_cells']} cells, {prediction['genes_missing']} model genes missing")

    step("report")  # always rerun: it is quick and names the published paths
    report = write_report(
        annotated,
        model_dir,
        folders["report"],
        recorded_paths={"annotated": str(published(annotated)), "model": str(published(model_dir))},
        warnings=warnings,
    )
    progress.done("report", "report.html")

    outputs = {
        "qc": folders["qc"],
        "prepare": prepared,
        "model": model_dir,
        "annotated": annotated,
        "report": report["outputs"]["html"],
    }
    return {"outputs": outputs, "seconds": progress.seconds, "headline": report["headline"], "warnings": list(warnings)}


class _Progress:
    """One log line when a step starts and one when it ends, with its rank and duration."""

    def __init__(self, steps: list[str]):
        self.steps = steps
        self.seconds: dict[str, float] = {}
        self._started = time.time()
        self._step_started = self._started

    def start(self, step: str) -> None:
        self._step_started = time.time()
        self.seconds.setdefault("total", 0.0)
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
