"""Every AnnData field and file name that scpermut reads or writes, declared once.

(The user's own columns — which ``obs`` column holds the labels or the batches — are the
:class:`scpermut.keys.Keys` record, chosen per run.)
"""

# -- AnnData fields ----------------------------------------------------------------------------

# Results written by prediction (scanpy-style: embeddings under obsm["X_<name>"]).
LATENT = "X_scpermut"
PREDICTION = "scpermut_prediction"
CONFIDENCE = "scpermut_confidence"
NOVELTY = "scpermut_novelty"  # obs column: neighbourhood novelty, 0 (typical) to 1 (unlike every known type)
LABEL = "scpermut_label"  # obs column: the given label where known, else the prediction
PROBABILITIES = "scpermut_probabilities"
NOVELTY = "scpermut_novelty"  # obs column: how unlike every reference type a cell is (when the model scores it)
UMAP = "X_scpermut_umap"  # obsm: UMAP of the latent (never the user's own X_umap)
NEIGHBORS = "scpermut_neighbors"  # uns/obsp key of the kNN graph the UMAP is built on
UNS = "scpermut"  # uns["scpermut"]: parameters, seed, versions, class names

# Written by `scpermut prepare`.
PREPARE_UNS = "scpermut_prepare"  # uns entry: keys, normalisation, HVG and split parameters
COUNTS_LAYER = "counts"
SAMPLE = "scpermut_sample"  # obs column: samplesheet id of the cell's sample (the user's "sample" is kept)
ROLE = "scpermut_role"  # obs column: "reference" or "query"
SPLIT = "scpermut_split"  # obs column: one of SPLITS
SPLIT_TRAIN = "train"
SPLIT_VALIDATION = "validation"
SPLIT_UNLABELLED = "unlabelled"  # reference cells without a label
SPLIT_QUERY = "query"  # query cells: never used as labelled, whatever their label
# A labelled reference batch held out of training; its labels fit the temperature and the
# novelty scale (cells of a batch the model never saw labelled, as a query's are).
SPLIT_CALIBRATION = "calibration"
SPLITS = (SPLIT_TRAIN, SPLIT_VALIDATION, SPLIT_CALIBRATION, SPLIT_UNLABELLED, SPLIT_QUERY)
LABELLED_SPLITS = (SPLIT_TRAIN, SPLIT_VALIDATION, SPLIT_CALIBRATION)

# Written by `scpermut qc`.
QC_UNS = "scpermut_qc"
QC_PASS = "scpermut_qc_pass"  # obs column: False for a cell to annotate that failed QC (kept, never trained on)

# -- Files -------------------------------------------------------------------------------------

# `scpermut qc`, per sample: <sample><suffix>.
QC_FILE_SUFFIXES = {
    "h5ad": ".qc.h5ad",
    "metrics": ".qc_metrics.tsv",
    "summary": ".qc_summary.json",
    "violin": ".qc_violin.png",
    "scatter": ".qc_scatter.png",
}

# `scpermut prepare`.
PREPARED_FILE = "prepared.h5ad"
PREPARE_SUMMARY_FILE = "prepare_summary.json"

# The model folder (`scpermut train`).
MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = "model.weights.h5"
MODEL_GENES = "genes.txt"
MODEL_CLASSES = "classes.json"
MODEL_BATCHES = "batches.json"
MODEL_PREPROCESS = "preprocess.json"
MODEL_HISTORY = "history.csv"
MODEL_RUN = "run.json"
# Optional (models before 0.1.0's novelty, or without a classifier, have none).
MODEL_NOVELTY = "novelty.npz"
# Optional (older folders, negative-binomial decoders and models without a classifier lack it):
# the reconstruction novelty (scpermut.model.novelty.ReconstructionNovelty) of cells of new batches.
MODEL_RECONSTRUCTION_NOVELTY = "reconstruction_novelty.npz"
# Optional (older folders lack it): a sample of the reference's latent, labels and batches, what
# query adaptation maps new batches onto (scpermut.model.adapt).
MODEL_REFERENCE_SAMPLE = "reference_latent.npz"
MODEL_FILES = (MODEL_CONFIG, MODEL_WEIGHTS, MODEL_GENES, MODEL_CLASSES, MODEL_BATCHES, MODEL_PREPROCESS, MODEL_HISTORY, MODEL_RUN)
CHECKPOINT_FOLDER = "checkpoint"  # inside the model folder while training runs
CHECKPOINT_STATE = "state.json"
CHECKPOINT_ARRAYS = "variables.npz"

# `scpermut predict` (in `run`/`label`: OUTDIR/annotated/).
ANNOTATED_FILE = "annotated.h5ad"
LABELS_FILE = "labels.tsv"  # beside the annotated h5ad: barcode, sample, label, confidence[, novelty]
QUERY_FILE = "query.h5ad"  # `run`/`label --query_h5ad`: the annotated cells alone, on their file's own genes

# `scpermut report`.
REPORT_HTML = "report.html"
METRICS_JSON = "metrics.json"
METRICS_TSV = "metrics.tsv"
MQC_METRICS = "scpermut_metrics_mqc.tsv"
MQC_PER_CLASS = "scpermut_per_class_mqc.tsv"
MQC_QC = "scpermut_qc_mqc.tsv"
MQC_ANNOTATED = "scpermut_annotated_mqc.tsv"

# `scpermut tune` and the parallel search.
TUNE_STUDY = "study.db"
TUNE_BEST_PARAMS = "best_params.json"
TUNE_TRIALS = "trials.tsv"
TUNE_REPORT_HTML = "tune_report.html"
TUNE_SCORE = "score.json"
MQC_TUNE_TRIALS = "tune_trials_mqc.tsv"

# `scpermut run` / `label`: OUTDIR/<step folder>, built in OUTDIR/PARTIAL_FOLDER first.
RUN_STEP_FOLDERS = ("qc", "prepare", "model", "annotated", "report")
PARTIAL_FOLDER = ".scpermut-partial"
RUN_DONE_FILE = "done.json"  # in PARTIAL_FOLDER: the finished steps and the options they ran with
