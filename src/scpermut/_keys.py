"""Every AnnData key and file name that scpermut reads or writes, defined once."""

# Results written by prediction (scanpy-style: embedding under X_<name>).
LATENT = "X_scpermut"
PREDICTION = "scpermut_prediction"
CONFIDENCE = "scpermut_confidence"
LABEL = "scpermut_label"  # obs column: the given label where known, else the prediction
PROBABILITIES = "scpermut_probabilities"
UMAP = "X_umap"
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
SPLITS = (SPLIT_TRAIN, SPLIT_VALIDATION, SPLIT_UNLABELLED, SPLIT_QUERY)

# Written by `scpermut qc`.
QC_UNS = "scpermut_qc"
QC_PASS = "scpermut_qc_pass"  # obs column: False for a cell to annotate that failed QC (kept, never trained on)
