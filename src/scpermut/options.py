"""Every user option of scpermut, declared once: name, flag, default, type, limits, help and section.

The settings dataclasses (:class:`~scpermut.data.qc.QCThresholds`,
:class:`~scpermut.data.preprocess.PrepareSettings`, :class:`~scpermut.model.settings.NetworkConfig`,
:class:`~scpermut.model.settings.TrainingSettings`, :class:`~scpermut.keys.Keys`) take their
defaults from here and check values with :func:`problems`; ``scpermut.cli`` builds every command's
click options and ``--help`` sections from here; ``scpermut.pipeline_files`` writes the Nextflow
params, the launch form's sections (``nextflow_schema.json``) and each step's flags from here
(``scpermut options --nextflow``).

Library code names its arguments in errors as ```name``` (backticks); :func:`flag_text`
turns such a message into the CLI's words (``--name``) for the command line.

This module imports nothing heavy: ``scpermut --help`` reads it.
"""

from __future__ import annotations

import difflib
import numbers
import re
from dataclasses import dataclass
from typing import Any

DEVICES = ("auto", "cpu", "gpu")
DATA_ACCESS = ("auto", "memory", "disk")
EARLY_STOPPING_METRICS = ("balanced_accuracy", "mcc")
RECONSTRUCTIONS = ("mse", "nb")
ADVERSARY_OBJECTIVES = ("reversal", "confusion")

AT_LEAST_0 = {"minimum": 0}
POSITIVE = {"exclusiveMinimum": 0}
FRACTION = {"minimum": 0, "maximum": 1}


@dataclass(frozen=True)
class Option:
    """One user option.

    Parameters
    ----------
    name
        Python argument name (a settings field or a keyword argument).
    default
        Default value (None: no default, or "computed").
    help
        One-line help: ``--help``, and the launch form's description.
    kind
        ``int``, ``float``, ``str``, ``bool`` (an on/off switch), ``"int_list"`` (``256,128``)
        or a tuple of allowed strings.
    flag
        CLI name when it differs from ``name`` (``classifier`` for ``use_classifier``); it is
        also the name of the pipeline param.
    negatable
        A ``bool`` option with a ``--no-<flag>`` form (otherwise a plain on-flag).
    param
        Also a ``params.<flag>`` of the Nextflow pipeline.
    limits
        JSON-schema bounds (``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``),
        checked by the CLI, the settings and the launch form alike.
    advanced
        Hidden in the launch form unless "show hidden" (ablation switches, rarely changed values).
    details
        Longer text for the launch form (its ``help_text``).
    pattern
        Regular expression a text value must match (launch form and CLI).
    """

    name: str
    default: Any
    help: str
    kind: Any = str
    flag: str | None = None
    negatable: bool = False
    param: bool = True
    limits: dict | None = None
    advanced: bool = False
    details: str | None = None
    pattern: str | None = None

    @property
    def cli(self) -> str:
        """The CLI flag (and pipeline param) name."""
        return self.flag or self.name

    def cli_default(self) -> Any:
        """The default as the CLI shows it (a list of integers as ``256,128``)."""
        if self.kind == "int_list" and self.default is not None:
            return ",".join(str(n) for n in self.default)
        return self.default

    def problem(self, value) -> str | None:
        """Why ``value`` is not a valid value of this option (one phrase), or None."""
        if value is None:
            return None if self.default is None else "must not be empty"
        kind = self.kind
        if kind is bool:
            return None if isinstance(value, bool) else f"must be true or false, not {value!r}"
        if isinstance(kind, tuple):
            return None if value in kind else f"must be one of {', '.join(kind)}, not {value!r}"
        if kind == "int_list":
            if not (isinstance(value, (list, tuple)) and value and all(_is_int(n) and n > 0 for n in value)):
                return f"must be positive integers (e.g. 256,128), not {value!r}"
            return None
        if kind is int and not _is_int(value):
            return f"must be a whole number, not {value!r}"
        if kind is float and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            return f"must be a number, not {value!r}"
        if kind is str and not isinstance(value, str):
            return f"must be text, not {value!r}"
        if self.pattern and not re.fullmatch(self.pattern, value if isinstance(value, str) else str(value)):
            return f"must match {self.pattern}, not {value!r}"
        return _limit_problem(value, self.limits or {})


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


_LIMIT_TESTS = {
    "minimum": (lambda value, bound: value >= bound, "at least"),
    "exclusiveMinimum": (lambda value, bound: value > bound, "above"),
    "maximum": (lambda value, bound: value <= bound, "at most"),
    "exclusiveMaximum": (lambda value, bound: value < bound, "below"),
}


def _limit_problem(value, limits: dict) -> str | None:
    failed = [f"{words} {limits[name]:g}" for name, (test, words) in _LIMIT_TESTS.items() if name in limits and not test(value, limits[name])]
    return f"must be {' and '.join(failed)}, not {value!r}" if failed else None


@dataclass(frozen=True)
class Section:
    """A group of options: one ``--help`` section and one section of the launch form.

    ``key`` names the section in ``nextflow_schema.json``; ``icon`` is its Font Awesome icon.
    """

    key: str
    title: str
    description: str
    icon: str
    options: tuple[Option, ...]

    @property
    def by_name(self) -> dict[str, Option]:
        return {option.name: option for option in self.options}


KEY_SECTION = Section("key_options", "AnnData keys", "The obs columns every step agrees on.", "fas fa-key", (
    Option("class_key", "cell_type", "obs column holding the cell-type label."),
    Option("batch_key", "batch", "obs column holding the batch (donor, technology, lab...)."),
    Option("unlabeled_category", "Unknown", "Label value that marks a cell as unlabelled."),
    Option(
        "condition_key", None, "obs column holding a biological condition (e.g. control/stimulated): batches are aligned only within a condition, so its effect is kept.",
        details="Leave it empty when every batch holds the same biology. A samplesheet column 'condition' can give each sample's value instead.",
    ),
))

QC_SECTION = Section("qc_options", "Quality control", "Per-sample cell and gene filters.", "fas fa-filter", (
    Option("min_genes", 200, "Cells with fewer detected genes fail QC: they do not train (cells to annotate are kept, flagged).", int, limits=AT_LEAST_0),
    Option("max_genes", 0, "Cells with more detected genes fail QC (0: no limit).", int, limits=AT_LEAST_0),
    Option("min_counts", 0, "Cells with fewer total counts fail QC.", int, limits=AT_LEAST_0),
    Option("max_pct_mito", 20.0, "Cells with a higher % of mitochondrial counts fail QC (100: off).", float, limits={"minimum": 0, "maximum": 100}),
    Option("min_cells", 3, "Drop reference genes detected in fewer cells (query genes are never dropped).", int, limits=AT_LEAST_0),
))

KEPT_GENES = ("all", "hvg")

PREPARE_SECTION = Section(
    "prepare_options", "Merging and normalisation",
    "Gene alignment, normalisation, highly variable genes and the validation split.", "fas fa-layer-group", (
        Option("n_top_genes", 2000, "Number of batch-aware highly variable genes the model uses.", int, limits={"minimum": 1}),
        Option("target_sum", 1e4, "Counts per cell after library-size normalisation.", float, limits=POSITIVE, advanced=True),
        Option("min_shared_genes", 200, "Stop when the samples share fewer genes than this.", int, limits={"minimum": 1}, advanced=True),
        Option("validation_fraction", 0.2, "Fraction of labelled reference cells held out for early stopping.", float, limits={"minimum": 0, "exclusiveMaximum": 1}),
        Option(
            "calibration_batches", 1, "Labelled reference batches held out of training to calibrate confidence and novelty (0: the validation cells calibrate).", int,
            limits=AT_LEAST_0,
            details="Held out only when at least 3 batches are labelled; the batches of median size are taken, and a type keeps 10 labelled cells "
            "for training. Their cells still train unlabelled, as a query's do: a held-out batch shows how sure and how novel-looking the model "
            "finds cells of a batch whose labels it never saw.",
        ),
        Option(
            "keep_genes", "all", "Genes the prepared file keeps: all shared genes, or hvg: only the highly variable genes the model trains on (a far smaller file for a large atlas).",
            KEPT_GENES, advanced=True,
            details="With hvg, prediction and the report see only those genes (the report's marker genes are chosen among them). Library sizes "
            "are still summed over every shared gene, as a raw query's are.",
        ),
    ),
)

ALIGNMENTS = ("kernel", "centroids", "memory")

SEED = Option("seed", 0, "Random seed: same data and seed give identical results.", int, limits=AT_LEAST_0)

# In the order `--help` lists them.
MODEL_SECTION = Section("model_options", "Model", "The network and its loss terms (ignored with --model).", "fas fa-project-diagram", (
    Option("latent_dim", 32, "Size of the latent space.", int, limits={"minimum": 2}),
    Option("hidden_layers", (256, 128), "Encoder layer widths (the decoder mirrors them).", "int_list", pattern=r"\d+(,\d+)*"),
    Option("dropout", 0.1, "Dropout rate of the hidden layers.", float, limits={"minimum": 0, "exclusiveMaximum": 1}),
    Option("reconstruction", "mse", "mse on log-normalised expression, or nb (negative binomial) on raw counts.", RECONSTRUCTIONS),
    Option("rec_weight", 0.5, "Weight of the reconstruction loss (0: off).", float, limits=AT_LEAST_0, advanced=True),
    Option("clf_weight", 1.0, "Weight of the focal classification loss (0: off).", float, limits=AT_LEAST_0, advanced=True),
    Option("align_weight", 1.0, "Weight of the class-batch alignment of the latent (0: off).", float, limits=AT_LEAST_0),
    Option("dann_weight", 0.0, "Weight of the adversarial batch head behind gradient reversal (0: no batch head).", float, limits=AT_LEAST_0),
    Option("focal_gamma", 2.0, "Focal loss gamma (0: class-weighted cross-entropy).", float, limits=AT_LEAST_0, advanced=True),
    Option("pseudo_label_threshold", 0.7, "Unlabelled/query cells join the alignment under a predicted type this sure, re-predicted every epoch (>1: never).", float, limits=AT_LEAST_0),
    Option(
        "pseudo_label_novelty", 0.8, "Unlabelled/query cells more novel than this get no pseudo-label: they are neither aligned nor permuted (1: no gate).", float,
        limits=FRACTION, advanced=True,
        details="Novelty is the share of held-out labelled cells that lie closer to a known type (scpermut_novelty). A batch whose median "
        "novelty is above the gate is gated by nothing: its cells look novel because its batch effect is not removed yet.",
    ),
    Option("pseudo_permutation", True, "Unlabelled/query cells the classifier is sure of reconstruct a labelled cell of that type.", bool, negatable=True, advanced=True),
    Option("use_classifier", True, "Cell-type classifier head (--no-classifier: latent space only).", bool, flag="classifier", negatable=True, advanced=True),
    Option("use_permutation", True, "Labelled cells reconstruct another cell of their type (--no-permutation: themselves).", bool, flag="permutation", negatable=True, advanced=True),
    Option("permute_across_batches", True, "Draw the permutation partner from another batch when the type has cells there.", bool, negatable=True, advanced=True),
    Option(
        "alignment", "kernel", "What the alignment matches: kernel (type-batch distributions in the mini-batch, MMD), centroids, or memory (against each type's remembered cells).",
        ALIGNMENTS, advanced=True,
        details="memory compares each cell with its type's cells remembered from earlier mini-batches, in its own batch and in the others "
        "(cost independent of the mini-batch's composition, for atlases with many types and batches); on the shipped sets it mixed "
        "less than kernel (docs/usage.md, Batch correction).",
    ),
    Option(
        "alignment_memory", 512, "Latent coordinates remembered per cell type by --alignment memory.", int,
        limits={"minimum": 2}, advanced=True,
        details="Each cell is compared with the remembered cells of its type in its own batch and in the others, so the alignment "
        "works whatever the mini-batch holds; more slots see more batches per type, fewer follow the training more closely.",
    ),
    Option("grl_lambda", 1.0, "Gradient-reversal strength of the batch head.", float, limits=AT_LEAST_0, advanced=True),
    Option("grl_ramp", True, "Ramp the gradient reversal from 0 to its strength over the epochs that train the batch head.", bool, negatable=True, advanced=True),
    Option("adversary_objective", "reversal", "Encoder vs batch head: reversal (maximise its loss) or confusion (make it uniform).", ADVERSARY_OBJECTIVES, param=False),
    Option("adversary_steps", 1, "Batch-head updates per mini-batch (extra ones with the encoder held still).", int, param=False, limits={"minimum": 1}),
    Option("conditional_adversary", False, "The batch head also gets the predicted cell type, so it judges the batch within each type.", bool, negatable=True, param=False),
    Option("conditional_decoder", False, "The decoder also gets the batch of the cell it reconstructs (prediction needs no batch).", bool, negatable=True, param=False),
))

TRAINING_SECTION = Section("training_options", "Training", "How the model is trained (ignored with --model).", "fas fa-brain", (
    SEED,
    Option("device", "auto", "Where to train: auto uses a GPU when TensorFlow sees one.", DEVICES, param=False),
    Option("mixed_precision", False, "float16 mixed precision on a GPU (ignored on the CPU).", bool),
    Option(
        "data_access", "auto", "Hold the model genes' matrix in memory, or read it from prepared.h5ad as training goes (disk: an atlas larger than memory); auto reads from disk when it would fill more than half the free memory.",
        DATA_ACCESS,
        details="From disk, each pass takes the cells in blocks of 1,024 consecutive cells of the file in a shuffled order, and cells are "
        "shuffled (and permutation partners drawn) within buffers of 65,536 cells, so training holds a few buffers and the validation "
        "cells. The same seed gives the same model, but not the model the in-memory order gives. --labelled_share needs memory.",
    ),
    Option("batch_size", 128, "Cells per mini-batch.", int, limits={"minimum": 2}),
    Option("learning_rate", 1e-3, "Adam learning rate.", float, limits=POSITIVE),
    Option("epochs_warmup", 10, "Epochs of autoencoder warm-up on all cells (every cell reconstructs itself).", int, limits=AT_LEAST_0),
    Option("epochs_full", 40, "Maximum epochs of the full model (permutation, classifier, alignment).", int, limits=AT_LEAST_0),
    Option("epochs_finetune", 10, "Maximum epochs of classifier fine-tuning (encoder frozen).", int, limits=AT_LEAST_0),
    Option(
        "epoch_cells", 50_000, "Cells per epoch at most: a larger atlas gets more, shorter epochs, each cell once per pass (0: every cell every epoch).",
        int, limits=AT_LEAST_0,
        details="Epochs, patience and min_epochs then count epochs of this many cells, so early stopping decides on a large atlas as on a "
        "small one. Data sets with fewer cells are unaffected.",
    ),
    Option("patience", 8, "Epochs without validation improvement before a phase stops early.", int, limits=AT_LEAST_0),
    Option(
        "min_epochs", 30, "Early stopping never ends a phase before this many epochs, nor before its last `patience` epochs (a tie keeps the later epoch).",
        int, limits=AT_LEAST_0,
    ),
    Option("min_validation_per_class", 5, "Fewer validation cells in some type: they train too, no early stopping.", int, limits=AT_LEAST_0, advanced=True),
    Option("early_stopping_metric", "balanced_accuracy", "Validation score that picks the best epoch.", EARLY_STOPPING_METRICS, advanced=True),
    Option("labelled_share", 0.0, "Minimum share of class-balanced labelled cells in each mini-batch of classifier phases.", float, param=False, limits={"minimum": 0, "exclusiveMaximum": 1}),
    Option("calibrate", True, "Temperature-scale the class probabilities on the calibration batch (else the validation cells).", bool, negatable=True, advanced=True),
))

TUNING_SECTION = Section(
    "tuning_options", "Hyper-parameter search", "Search training options in parallel trials before training the model.", "fas fa-sliders-h", (
        Option(
            "tune", 0, "Search training options with this many trials, run in parallel; the best trial's options train the model (0: no search).", int,
            limits=AT_LEAST_0,
            details="The trials' options are drawn up front from --seed (random search), each trial is one task (its own GPU under -profile gpu "
            "on grid and cloud executors; local trials share the GPU of CUDA_VISIBLE_DEVICES), and the best score (balanced accuracy and batch "
            "mixing) wins; ties go to the lowest trial number. Skipped when --model is given. Results in <outdir>/tune.",
        ),
        Option(
            "tune_fixed", None, "Training options the parallel search leaves at their given values (comma-separated, e.g. epochs_full,hidden_layers).",
            pattern="[a-z_]+(,[a-z_]+)*", details="docs/usage.md lists the searched options; the others always keep their values.",
        ),
    ),
)

PREDICTION_SECTION = Section("prediction_options", "Label transfer", "How cells are annotated.", "fas fa-tags", (
    Option("unknown_threshold", 0.0, "Label cells 'Unknown' when their top class probability is below this.", float, limits=FRACTION),
    Option(
        "novelty_threshold", 0.98, "Label cells 'Unknown' when their neighbourhood's novelty is above this (1: never).", float, limits=FRACTION,
        details="A cell's novelty is the share of held-out labelled reference cells that lie closer to a known type than it does; "
        "scpermut_novelty is its median over the cell's 15 nearest annotated cells, so a cluster of a type the reference never saw is "
        "called Unknown, a lone atypical cell of a known type is not.",
    ),
    Option(
        "adapt", True, "Map batches the model never trained on with a small per-batch latent adapter fitted to the saved reference (the model unchanged); --no-adapt: frozen.", bool, negatable=True,
        details="Each new batch's adapter trains a few hundred steps on that batch alone (seconds) against the reference latent sample in the model folder. "
        "Batches the model trained on are never changed, so after training in the same run it changes nothing; a model folder from an earlier version maps frozen.",
    ),
    Option("max_missing_genes", 0.5, "Stop when a larger fraction of the model's genes is missing from the data.", float, limits=FRACTION),
    Option("umap", True, "Compute a UMAP of the latent space.", bool, negatable=True),
))

SECTIONS = (KEY_SECTION, QC_SECTION, PREPARE_SECTION, MODEL_SECTION, TRAINING_SECTION, TUNING_SECTION, PREDICTION_SECTION)

# The option groups the commands and settings take, by Python name.
KEYS = KEY_SECTION.by_name
QC = QC_SECTION.by_name
PREPARE = PREPARE_SECTION.by_name
TRAINING = {**MODEL_SECTION.by_name, **TRAINING_SECTION.by_name}
del TRAINING["seed"]  # its own group: prepare and training both take it
PREDICTION = {name: option for name, option in PREDICTION_SECTION.by_name.items() if name != "umap"}
UMAP = PREDICTION_SECTION.by_name["umap"]
TUNE_PIPELINE = TUNING_SECTION.by_name

# CLI-only options (no pipeline param, no launch-form section): `--help` lists them with the
# command's own input and output options.
INFERENCE_BATCH_SIZE = Option(
    "batch_size", None, "Cells per inference batch [default: 4 x the training batch size].", int, param=False, limits={"minimum": 1}
)
LAYER = Option("layer", None, "Layer holding raw counts ('raw' for .raw); default: X if it holds counts, else layers['counts'], else .raw.", param=False)
RESUME = Option(
    "resume", False, "Continue the interrupted run in --outdir: finished steps are reused, training continues from its checkpoint.", bool, param=False
)
# `label` is the quick first result: its UMAP (a few seconds, plus ~20 s of numba compilation
# the first time in a process) is asked for with --umap.
LABEL_UMAP = Option(
    "umap", False, "Compute a UMAP of the latent space (adds numba's start-up, ~20 s on 2 cores).", bool, negatable=True, param=False
)
QUERY_H5AD = Option(
    "query_h5ad", False, "Also write annotated/query.h5ad: the annotated cells alone, on their own file's genes, counts and obs, "
    "plus scpermut's obs and obsm fields.", bool, param=False
)
TRAIN_RESUME = Option("resume", False, "Continue the training checkpointed in MODEL_DIR/checkpoint/.", bool, param=False)
PARAMS = Option(
    "params", None, "JSON file of option values (keys: option names, e.g. tune's best_params.json); flags given on the command line win.", param=False
)
# `scpermut tune` (hyper-parameter search); see scpermut.steps.tune for the searched ranges.
TUNE = {
    option.name: option
    for option in (
        Option("trials", 20, "Total number of trials of the study (a resumed study runs only the missing ones).", int, param=False, limits={"minimum": 1}),
        Option("mixing_weight", 0.3, "Weight w of batch mixing in the score (1-w)*balanced_accuracy + w*mixing.", float, param=False, limits=FRACTION),
    )
}
MLFLOW_URI = Option(
    "mlflow_uri", None, "Log parameters, per-epoch metrics, the run record and the outputs (model folder, report) to this MLflow "
    "tracking URI (a folder such as file:/path/mlruns works offline).",
    param=False,
)

ALL = {option.name: option for section in SECTIONS for option in section.options}
# Options of earlier versions, and what replaced them (a --params file may still name them).
RETIRED = {"dann": "`dann_weight` > 0 builds the batch head, 0 none", "use_dann": "`dann_weight` > 0 builds the batch head, 0 none"}


def default(name: str) -> Any:
    """The default of option ``name`` (for the settings dataclasses' fields)."""
    return ALL[name].default


def problems(values: dict, declared: dict[str, Option] = ALL) -> list[str]:
    """One phrase per value that is not valid for its declared option (``batch_size`` must be ...).

    Values whose name is not declared are not checked.
    """
    found = []
    for name, value in values.items():
        option = declared.get(name)
        if option is not None and (problem := option.problem(value)) is not None:
            found.append(f"`{name}` {problem}")
    return found


def check(values: dict, declared: dict[str, Option] = ALL) -> None:
    """Raise one ``InputError`` listing every invalid value (see :func:`problems`)."""
    from scpermut.errors import InputError

    found = problems(values, declared)
    if found:
        raise InputError("; ".join(found) + ".")


def read_json_file(path) -> Any:
    """The JSON value in the file ``path``; a missing file or invalid JSON is an ``InputError`` naming it."""
    import json
    from pathlib import Path

    from scpermut.errors import InputError

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found.") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error}).") from None


def read_params_file(path, allowed: dict[str, Option]) -> dict[str, Any]:
    """The option values in the JSON file ``path``, by Python name (keys may be names or CLI flags).

    ``allowed`` maps Python names to the options the command takes. Raises one ``InputError``
    naming the file and every unknown key (with the closest option name) and invalid value.
    """
    from scpermut.errors import InputError

    data = read_json_file(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object of option names and values.")
    by_flag = {option.cli: name for name, option in allowed.items()}
    values, unknown = {}, []
    for key, value in data.items():
        name = key if key in allowed else by_flag.get(key)
        if name is None:
            close = difflib.get_close_matches(key, [*allowed, *by_flag], n=1)
            hint = f"retired: {RETIRED[key]}" if key in RETIRED else f"did you mean '{close[0]}'?" if close else ""
            unknown.append(f"'{key}'" + (f" ({hint})" if hint else ""))
            continue
        if allowed[name].kind == "int_list" and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
            value = [int(part) if part.isdigit() else part for part in value]
        values[name] = tuple(value) if allowed[name].kind == "int_list" and isinstance(value, list) else value
    found = [f"not an option of this command: {', '.join(unknown)}"] if unknown else []
    found += problems(values, allowed)
    if found:
        raise InputError(f"{path}: " + "; ".join(found) + ".")
    return values


def flag_text(message: str, options: dict[str, Option] = ALL) -> str:
    """A library message in CLI words: ```batch_size``` -> ``--batch_size``, ```use_classifier=False``` -> ``--no-classifier``."""

    def replace(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        option = options.get(name)
        if option is None:
            return match.group(0)
        if option.kind is bool and value in ("False", "True"):
            return f"--{option.cli}" if value == "True" else f"--no-{option.cli}"
        return f"--{option.cli}" + (f" {value}" if value else "")

    return re.sub(r"`(\w+)(?:=([^`]+))?`", replace, message)
