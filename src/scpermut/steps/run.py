"""``scpermut run``: qc -> prepare -> train -> predict -> report in one process.

The outputs follow the layout the Nextflow pipeline publishes::

    OUTDIR/qc/<sample>.qc.h5ad ...      per-sample QC
    OUTDIR/prepare/prepared.h5ad        merged, normalised, split
    OUTDIR/model/                       the trained model folder (not written with --model)
    OUTDIR/annotated/annotated.h5ad     latent, predictions, UMAP
    OUTDIR/report/report.html           report, metrics and MultiQC files

The folder is locked, built aside and published at once (:class:`scpermut.steps.outdir.RunFolder`);
``--resume`` continues an interrupted run: finished steps are reused and training continues
from its last epoch checkpoint.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from scpermut import constants
from scpermut.data.preprocess import PrepareSettings
from scpermut.data.qc import QCThresholds
from scpermut.data.samplesheet import SampleSpec
from scpermut.errors import InputError, ScpermutError
from scpermut.keys import Keys
from scpermut.steps.outdir import RunFolder
from scpermut.steps.predict import predict_file
from scpermut.steps.prepare import prepare_files
from scpermut.steps.progress import Progress, WarningCollector
from scpermut.steps.qc import qc_outputs, run_qc
from scpermut.steps.report import write_report
from scpermut.tracking import log_folder, log_record, tracked_run

log = logging.getLogger(__name__)


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
    query_h5ad: bool = False  # also write the annotated cells alone, on their own files' genes


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
    mlflow_uri, query_h5ad = flags.pop("mlflow_uri", None), bool(flags.pop("query_h5ad", False))
    return RunOptions(keys, qc, prepare, flags, prediction, model_dir, overwrite, resume, mlflow_uri, query_h5ad)


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
    for name, title in (("labels", "labels (barcode, sample, label, confidence)"), ("query", "query cells on their own genes")):
        if name in result["outputs"]:
            lines.append(f"  {title}: {result['outputs'][name]}")
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
    if options.model_dir is None and options.training.get("device") == "gpu":
        # Loads TensorFlow, so only when a GPU is demanded: stops before QC when there is none.
        from scpermut.model.train import select_device

        select_device("gpu", bool(options.training.get("mixed_precision")))
    folder = RunFolder(outdir, _fingerprint(options), overwrite=options.overwrite, resume=options.resume, model_input=options.model_dir)
    folder.open()
    with WarningCollector() as warnings:
        try:
            _warn_query_is_reference(specs)
            result = _ChainedSteps(specs, folder, options, warnings.messages, callbacks).run()
        except ScpermutError:
            # The input is at fault: rerunning needs a fix, not --resume.
            folder.discard()
            kept = f"earlier results in {outdir} are untouched" if folder.earlier else "nothing was written"
            log.info("run stopped: the outputs of this run were removed; %s", kept)
            raise
        except BaseException:
            folder.keep_for_resume()
            log.warning(
                "run interrupted: its finished steps are kept in %s; rerun the same command with --resume to continue",
                folder.partial,
            )
            raise
    folder.publish()
    result["outputs"] = {name: folder.published(path) for name, path in result["outputs"].items()}
    return result


def _warn_query_is_reference(specs: list[SampleSpec]) -> None:
    """Warn when a query holds the same cells as a reference file: its scores would be on training cells."""
    from scpermut.data.io import read_h5ad

    def barcodes(spec: SampleSpec):
        if spec.path.suffix.lower() != ".h5ad":
            return None
        adata = read_h5ad(spec.path, backed="r")
        names = adata.obs_names.copy()
        adata.file.close()
        return names

    references = [(spec, barcodes(spec)) for spec in specs if spec.role == "reference"]
    for query in (spec for spec in specs if spec.role == "query"):
        cells = barcodes(query)
        for reference, known in references:
            same = query.path.resolve() == reference.path.resolve() or (
                cells is not None and known is not None and len(cells) == len(known) and cells.equals(known)
            )
            if same:
                log.warning(
                    "%s: the query holds the same cells as the reference %s; the model trains on them, so their "
                    "scores say how well it fits its training cells, not how it annotates new data",
                    query.path, reference.path,
                )


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


class _ChainedSteps:
    """The steps of one run into a :class:`RunFolder`, each skipped when a resumed run finished it."""

    def __init__(self, specs: list[SampleSpec], folder: RunFolder, options: RunOptions, warnings: list[str], callbacks: list):
        self.specs, self.folder, self.options = specs, folder, options
        self.warnings, self.callbacks = warnings, callbacks
        self.folders = folder.folders
        self.train = options.model_dir is None
        self.progress = Progress(["qc", "prepare"] + (["train"] if self.train else []) + ["predict", "report"])
        self.finished = folder.finished_steps()
        self.prepared = self.folders["prepare"] / constants.PREPARED_FILE
        self.model_dir = Path(options.model_dir) if options.model_dir is not None else self.folders["model"]
        self.annotated = self.folders["annotated"] / constants.ANNOTATED_FILE

    def run(self) -> dict:
        for name, step in (("qc", self.qc), ("prepare", self.prepare), ("train", self.fit), ("predict", self.predict)):
            if name not in self.progress.steps:
                continue
            if name in self.finished:
                self.progress.reused(name)
                continue
            self.progress.start(name)
            message = step()
            self.folder.mark_done(name)
            self.progress.done(name, message)
        self.progress.start("report")  # always rerun: it is quick and names the published paths
        report = write_report(
            self.annotated,
            self.model_dir,
            self.folders["report"],
            recorded_paths={"annotated": str(self.folder.published(self.annotated)), "model": str(self.folder.published(self.model_dir))},
            warnings=self.warnings,
        )
        self.progress.done("report", constants.REPORT_HTML)
        outputs = {
            "qc": self.folders["qc"],
            "prepare": self.prepared,
            "model": self.model_dir,
            "annotated": self.annotated,
            "report": report["outputs"]["html"],
        }
        for name, file_name in (("labels", constants.LABELS_FILE), ("query", constants.QUERY_FILE)):
            if (self.annotated.parent / file_name).is_file():
                outputs[name] = self.annotated.parent / file_name
        return {"outputs": outputs, "seconds": self.progress.seconds, "headline": report["headline"], "warnings": list(self.warnings)}

    def qc(self) -> str:
        for spec in self.specs:
            summary = run_qc(spec, self.folders["qc"], self.options.qc, self.options.keys)
            flagged = f", {summary['n_cells_flagged']} failing QC kept to annotate" if summary.get("n_cells_flagged") else ""
            log.info(
                "  %s (%s): kept %d of %d cells%s, %d of %d genes",
                spec.sample, spec.role, summary["n_cells_after"], summary["n_cells_before"], flagged,
                summary["n_genes_after"], summary["n_genes_before"],
            )
        return f"{len(self.specs)} samples"

    def prepare(self) -> str:
        inputs = [qc_outputs(self.folders["qc"], spec.sample)["h5ad"] for spec in self.specs]
        summary = prepare_files(
            inputs, self.folders["prepare"], self.options.prepare, recorded_inputs=[self.folder.published(path) for path in inputs]
        )
        self.check_query_genes()
        if self.train and self.options.training.get("use_classifier", True) and summary["n_classes"] < 2:
            references = ", ".join(str(spec.path) for spec in self.specs if spec.role == "reference")
            raise InputError(
                f"{references}: the labelled reference cells hold {summary['n_classes']} cell type (`class_key` "
                f"'{self.options.keys.class_key}'); the classifier needs two or more (or pass `use_classifier=False`)."
            )
        splits = ", ".join(f"{n} {name}" for name, n in summary["cells_per_split"].items() if n)
        return f"{summary['n_cells']} cells ({splits}) x {summary['n_genes']} genes, {summary['n_highly_variable']} highly variable"

    def check_query_genes(self) -> None:
        """Stop before training when a query lacks too many of the model's genes (as ``predict`` would
        after it), naming the user's file: the prepared file zero-fills a query's missing genes."""
        from scpermut.data.align import check_missing_genes
        from scpermut.data.io import read_h5ad
        from scpermut.model.persistence import read_model_record
        from scpermut.options import default

        if self.train:
            prepared = read_h5ad(self.prepared, backed="r")
            genes = prepared.var_names[prepared.var["highly_variable"].to_numpy(bool)]
            prepared.file.close()
        else:
            genes = read_model_record(self.model_dir).genes
        limit = self.options.prediction.get("max_missing_genes", default("max_missing_genes"))
        for spec in self.specs:
            if spec.role == "query":
                qc = read_h5ad(qc_outputs(self.folders["qc"], spec.sample)["h5ad"], backed="r")
                var = qc.var.copy()
                qc.file.close()
                check_missing_genes(genes, var.index, max_missing_genes=limit, source=str(spec.path), var=var)

    def fit(self) -> str:
        from scpermut.steps.train import train_file  # loads TensorFlow

        checkpoint = self.model_dir / constants.CHECKPOINT_FOLDER
        resume = self.options.resume and checkpoint.is_dir()
        if resume:
            log.info("training continues from its checkpoint in %s", checkpoint)
        model = train_file(
            self.prepared, self.model_dir, resume=resume, recorded_input=self.folder.published(self.prepared),
            callbacks=self.callbacks, **self.options.training,
        )
        return f"{model.record.run.get('device', '')}, epochs {model.record.run.get('epochs_run', {})}"

    def predict(self) -> str:
        prediction = predict_file(
            self.prepared, self.model_dir, self.annotated, recorded_model=self.folder.published(self.model_dir),
            recorded_input=self.folder.published(self.prepared), **self.options.prediction
        )
        written = ""
        if self.options.query_h5ad:
            from scpermut.data.io import read_h5ad
            from scpermut.steps.outputs import write_query_cells

            n_cells = write_query_cells(read_h5ad(self.annotated), self.specs, self.annotated.parent / constants.QUERY_FILE)
            written = f"; {n_cells} annotated cells on their own genes -> {constants.QUERY_FILE}"
        return f"{prediction['n_cells']} cells, {prediction['genes_missing']} model genes missing{written}"
