"""Every user option of scpermut, declared once: Python name, CLI flag, default, type and help.

The settings dataclasses (:class:`~scpermut.data.qc.QCThresholds`,
:class:`~scpermut.data.preprocess.PrepareSettings`, :class:`~scpermut.model.settings.NetworkConfig`,
:class:`~scpermut.model.settings.TrainingSettings`, :class:`~scpermut.keys.Keys`) take their
defaults from here, ``scpermut.cli`` builds every command's click options from here, and a test
checks the ``nextflow.config`` params and ``nextflow_schema.json`` defaults against it.

Library code names its arguments in errors as ```name``` (backticks); :func:`flag_text`
turns such a message into the CLI's words (``--name``) for the command line.

This module imports nothing heavy: ``scpermut --help`` reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DEVICES = ("auto", "cpu", "gpu")
EARLY_STOPPING_METRICS = ("balanced_accuracy", "mcc")
RECONSTRUCTIONS = ("mse", "nb")
ADVERSARY_OBJECTIVES = ("reversal", "confusion")
ALIGNMENTS = ("kernel", "centroids")


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
        One-line help shown by ``--help`` and in the pipeline schema.
    kind
        ``int``, ``float``, ``str``, ``bool`` (an on/off switch), ``"int_list"`` (``256,128``)
        or a tuple of allowed strings.
    flag
        CLI name when it differs from ``name`` (``dann`` for ``use_dann``); it is also the
        name of the pipeline param.
    negatable
        A ``bool`` option with a ``--no-<flag>`` form (otherwise a plain on-flag).
    param
        Also a ``params.<flag>`` of the Nextflow pipeline.
    """

    name: str
    default: Any
    help: str
    kind: Any = str
    flag: str | None = None
    negatable: bool = False
    param: bool = True

    @property
    def cli(self) -> str:
        """The CLI flag (and pipeline param) name."""
        return self.flag or self.name

    def cli_default(self) -> Any:
        """The default as the CLI shows it (a list of integers as ``256,128``)."""
        if self.kind == "int_list" and self.default is not None:
            return ",".join(str(n) for n in self.default)
        return self.default


def _group(*options: Option) -> dict[str, Option]:
    return {option.name: option for option in options}


KEYS = _group(
    Option("class_key", "cell_type", "obs column holding the cell-type label."),
    Option("batch_key", "batch", "obs column holding the batch (donor, technology, lab...)."),
    Option("unlabeled_category", "Unknown", "Label value that marks a cell as unlabelled."),
)

QC = _group(
    Option("min_genes", 200, "Cells with fewer detected genes fail QC: they do not train (cells to annotate are kept, flagged).", int),
    Option("max_genes", 0, "Cells with more detected genes fail QC (0: no limit).", int),
    Option("min_counts", 0, "Cells with fewer total counts fail QC.", int),
    Option("max_pct_mito", 20.0, "Cells with a higher % of mitochondrial counts fail QC (100: off).", float),
    Option("min_cells", 3, "Drop reference genes detected in fewer cells (query genes are never dropped).", int),
)

PREPARE = _group(
    Option("n_top_genes", 2000, "Number of batch-aware highly variable genes the model uses.", int),
    Option("target_sum", 1e4, "Counts per cell after library-size normalisation.", float),
    Option("min_shared_genes", 200, "Stop when the samples share fewer genes than this.", int),
    Option("validation_fraction", 0.2, "Fraction of labelled reference cells held out for early stopping.", float),
)

SEED = Option("seed", 0, "Random seed: same data and seed give identical results.", int)

# In the order `--help` lists them.
TRAINING = _group(
    Option("device", "auto", "Where to train: auto uses a GPU when TensorFlow sees one.", DEVICES, param=False),
    Option("mixed_precision", False, "float16 mixed precision on a GPU (ignored on the CPU).", bool),
    Option("latent_dim", 32, "Size of the latent space.", int),
    Option("hidden_layers", (256, 128), "Encoder layer widths (the decoder mirrors them).", "int_list"),
    Option("dropout", 0.1, "Dropout rate of the hidden layers.", float),
    Option("batch_size", 128, "Cells per mini-batch.", int),
    Option("learning_rate", 1e-3, "Adam learning rate.", float),
    Option("epochs_warmup", 10, "Epochs of autoencoder + DANN warm-up on all cells.", int),
    Option("epochs_full", 40, "Maximum epochs of the full model (permutation, classifier, DANN).", int),
    Option("epochs_finetune", 10, "Maximum epochs of classifier fine-tuning (encoder frozen).", int),
    Option("patience", 8, "Epochs without validation improvement before a phase stops early.", int),
    Option("min_epochs", 30, "Early stopping never ends a phase before this many epochs (a tie keeps the later epoch).", int),
    Option("min_validation_per_class", 5, "Fewer validation cells in some type: they train too, no early stopping.", int),
    Option("early_stopping_metric", "balanced_accuracy", "Validation score that picks the best epoch.", EARLY_STOPPING_METRICS),
    Option("rec_weight", 0.5, "Weight of the reconstruction loss (0: off).", float),
    Option("clf_weight", 1.0, "Weight of the focal classification loss (0: off).", float),
    Option("dann_weight", 0.0, "Weight of the adversarial batch loss (0: no batch head).", float),
    Option("focal_gamma", 2.0, "Focal loss gamma (0: class-weighted cross-entropy).", float),
    Option("grl_lambda", 1.0, "Gradient-reversal strength.", float),
    Option("grl_ramp", True, "Ramp the gradient reversal from 0 to its strength over the adversarial epochs.", bool, negatable=True),
    Option("adversary_objective", "reversal", "Encoder vs batch head: reversal (maximise its loss) or confusion (make it uniform).", ADVERSARY_OBJECTIVES, param=False),
    Option("adversary_steps", 1, "Batch-head updates per mini-batch (extra ones with the encoder held still).", int, param=False),
    Option("align_weight", 1.0, "Weight of the class-batch alignment of the latent (0: off).", float),
    Option("alignment", "kernel", "What the alignment matches: kernel (whole type-batch distributions, MMD) or centroids.", ALIGNMENTS, param=False),
    Option("pseudo_label_threshold", 0.7, "Unlabelled/query cells join the alignment under a predicted type this sure (>1: never).", float),
    Option("pseudo_permutation", True, "Unlabelled/query cells the classifier is sure of reconstruct a labelled cell of that type.", bool, negatable=True),
    Option("conditional_adversary", False, "The batch head also gets the predicted cell type, so it judges the batch within each type.", bool, negatable=True, param=False),
    Option("conditional_decoder", False, "The decoder also gets the batch of the cell it reconstructs (prediction needs no batch).", bool, negatable=True, param=False),
    Option("labelled_share", 0.0, "Minimum share of class-balanced labelled cells in each mini-batch of classifier phases.", float, param=False),
    Option("calibrate", True, "Temperature-scale the class probabilities on the validation cells.", bool, negatable=True),
    Option("use_dann", True, "Domain-adversarial batch head (--no-dann: off).", bool, flag="dann", negatable=True),
    Option("use_classifier", True, "Cell-type classifier head (--no-classifier: latent space only).", bool, flag="classifier", negatable=True),
    Option("use_permutation", True, "Labelled cells reconstruct another cell of their type (--no-permutation: themselves).", bool, flag="permutation", negatable=True),
    Option("permute_across_batches", True, "Draw the permutation partner from another batch when the type has cells there.", bool, negatable=True),
    Option("reconstruction", "mse", "mse on log-normalised expression, or nb (negative binomial) on raw counts.", RECONSTRUCTIONS),
)
# Where the model keeps each training option; device and mixed_precision only shape the run.
NETWORK_FIELDS = ("latent_dim", "hidden_layers", "dropout", "reconstruction", "use_classifier", "use_dann", "conditional_decoder", "conditional_adversary", "grl_lambda")
RUNTIME_FIELDS = ("device", "mixed_precision")

PREDICTION = _group(
    Option("unknown_threshold", 0.0, "Label cells 'Unknown' when their top class probability is below this.", float),
    Option("max_missing_genes", 0.5, "Stop when a larger fraction of the model's genes is missing from the data.", float),
)
UMAP = Option("umap", True, "Compute a UMAP of the latent space.", bool, negatable=True)
INFERENCE_BATCH_SIZE = Option(
    "batch_size", None, "Cells per inference batch [default: 4 x the training batch size].", int, param=False
)

# CLI-only options of the chained commands (`run`, `label`); not pipeline params.
LAYER = Option("layer", None, "Layer holding raw counts ('raw' for .raw); default: X if it holds counts, else layers['counts'], else .raw.", param=False)
RESUME = Option(
    "resume", False, "Continue the interrupted run in --outdir: finished steps are reused, training continues from its checkpoint.", bool, param=False
)

# `label` is the quick first result: its UMAP (a few seconds, plus ~20 s of numba compilation
# the first time in a process) is asked for with --umap.
LABEL_UMAP = Option(
    "umap", False, "Compute a UMAP of the latent space (adds numba's start-up, ~20 s on 2 cores).", bool, negatable=True, param=False
)
# Options only the command line has (no pipeline param), beside those in ALL.
TRAIN_RESUME = Option("resume", False, "Continue the training checkpointed in MODEL_DIR/checkpoint/.", bool, param=False)
PARAMS = Option(
    "params", None, "JSON file of option values (keys: option names, e.g. tune's best_params.json); flags given on the command line win.", param=False
)
# `scpermut tune` (hyper-parameter search); see scpermut.steps.tune for the searched ranges.
TUNE = _group(
    Option("trials", 20, "Total number of trials of the study (a resumed study runs only the missing ones).", int, param=False),
    Option("mixing_weight", 0.3, "Weight w of batch mixing in the score (1-w)*balanced_accuracy + w*mixing.", float, param=False),
)
# The pipeline's parallel search (`scpermut tune-plan` -> tune-trial per trial -> tune-select).
TUNE_PIPELINE = _group(
    Option("tune", 0, "Search training options with this many trials, run in parallel; the best trial's options train the model (0: no search).", int),
    Option(
        "tune_fixed", None, "Training options the parallel search leaves at their given values (comma-separated, e.g. epochs_full,hidden_layers)."
    ),
)
MLFLOW_URI = Option(
    "mlflow_uri", None, "Log parameters, per-epoch metrics, the run record and the outputs (model folder, report) to this MLflow "
    "tracking URI (a folder such as file:/path/mlruns works offline).",
    param=False,
)
CLI_ONLY = (LAYER, RESUME, TRAIN_RESUME, LABEL_UMAP, INFERENCE_BATCH_SIZE, PARAMS, *TUNE.values(), MLFLOW_URI)

ALL = {**KEYS, **QC, **PREPARE, "seed": SEED, **TRAINING, **PREDICTION, "umap": UMAP, **TUNE_PIPELINE}


def default(name: str) -> Any:
    """The default of option ``name`` (for the settings dataclasses' fields)."""
    return ALL[name].default


def pipeline_params() -> dict[str, Any]:
    """``params.<flag>`` -> default, for every option that is also a pipeline param."""
    return {option.cli: option.cli_default() for option in ALL.values() if option.param}


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

    ``allowed`` maps Python names to the options the command takes. Raises ``InputError`` naming
    the file and the key for an unknown key or a file that is not a JSON object.
    """
    from scpermut.errors import InputError

    data = read_json_file(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object of option names and values.")
    by_flag = {option.cli: name for name, option in allowed.items()}
    values = {}
    for key, value in data.items():
        name = key if key in allowed else by_flag.get(key)
        if name is None:
            raise InputError(f"{path}: unknown option '{key}' (not an option of this command).")
        if allowed[name].kind == "int_list" and isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        values[name] = tuple(int(n) for n in value) if allowed[name].kind == "int_list" else value
    return values


def flag_text(message: str, options: dict[str, Option] = ALL) -> str:
    """A library message in CLI words: ```batch_size``` -> ``--batch_size``, ```use_dann=False``` -> ``--no-dann``."""

    def replace(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        option = options.get(name)
        if option is None:
            return match.group(0)
        if option.kind is bool and value in ("False", "True"):
            return f"--{option.cli}" if value == "True" else f"--no-{option.cli}"
        return f"--{option.cli}" + (f" {value}" if value else "")

    return re.sub(r"`(\w+)(?:=([^`]+))?`", replace, message)
