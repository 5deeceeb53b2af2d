"""The report: every section and figure rendered, self-contained, and MultiQC files MultiQC can parse."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from click.testing import CliRunner

from scpermut import constants
from scpermut.cli import main
from scpermut.report.files import report_outputs
from scpermut.steps.report import write_report

CLASSES = ["B cells", "Monocytes", "NK cells", "T cells", "pDC"]
CLASS_SIZES = [300, 500, 150, 1030, 20]  # pDC is rare: 20 of 2000 cells = 1 %
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = ["annotated", "composition", "summary", "qc", "training", "umap", "mapping", "confusion", "markers", "per_class", "metrics", "unknown"]
FIGURES = [
    "training_curves",
    "composition_scpermut_sample",
    "umap_batch",
    "umap_origin",
    "umap_truth",
    "umap_prediction",
    "umap_confidence",
    "confusion_matrix",
    "marker_dotplot",
    "f1_vs_size",
]


def synthetic_annotated(seed: int = 0) -> ad.AnnData:
    """An AnnData shaped like `scpermut predict` output on a prepared file: 2 reference batches, 1 query."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(CLASSES, CLASS_SIZES)
    n = labels.size
    batches = rng.choice(["ref1", "ref2", "query1"], size=n)
    centres = {c: rng.normal(scale=4, size=8) for c in CLASSES}
    latent = np.stack([centres[c] for c in labels]) + rng.normal(size=(n, 8))
    predictions = labels.copy().astype(object)
    wrong = rng.random(n) < 0.1
    predictions[wrong] = rng.choice(CLASSES, size=wrong.sum())
    confidence = np.where(wrong, rng.uniform(0.2, 0.6, n), rng.uniform(0.6, 1.0, n))
    predictions[confidence < 0.3] = "Unknown"
    probabilities = rng.dirichlet(np.ones(len(CLASSES)), size=n).astype(np.float32)

    role = np.where(batches == "query1", "query", "reference")
    split = np.where(
        role == "query", "query", np.where(rng.random(n) < 0.2, "validation", "train")
    ).astype(object)
    truth = labels.astype(object)
    unlabelled = (role == "reference") & (rng.random(n) < 0.05)
    truth[unlabelled] = "Unknown"
    split[unlabelled] = "unlabelled"

    obs = pd.DataFrame(
        {
            constants.SAMPLE: pd.Categorical(batches),
            "batch": pd.Categorical(batches),
            "cell_type": pd.Categorical(truth),
            constants.ROLE: pd.Categorical(role),
            constants.SPLIT: pd.Categorical(split, categories=list(constants.SPLITS)),
            constants.PREDICTION: pd.Categorical(predictions),
            constants.CONFIDENCE: confidence.astype(np.float32),
            constants.NOVELTY: rng.uniform(0, 1, n).astype(np.float32),
        },
        index=[f"cell{i}" for i in range(n)],
    )
    adata = ad.AnnData(
        sp.random(n, 50, density=0.1, format="csr", dtype=np.float32, random_state=seed), obs=obs
    )
    adata.var_names = [f"gene{i}" for i in range(50)]
    adata.obsm[constants.LATENT] = latent.astype(np.float32)
    adata.obsm[constants.PROBABILITIES] = probabilities
    adata.obsm[constants.UMAP] = latent[:, :2]
    adata.uns[constants.UNS] = {
        "classes": np.array(CLASSES),
        "unknown_label": "Unknown",
        "prediction": {"unknown_threshold": 0.3, "novelty_threshold": 0.9, "umap": True},
        "seed": 0,
        "versions": {"scpermut": "0.1.0"},
    }
    adata.uns[constants.PREPARE_UNS] = {
        "class_key": "cell_type",
        "batch_key": "batch",
        "unlabeled_category": "Unknown",
        "n_top_genes": 50,
        "seed": 0,
    }
    adata.uns[constants.QC_UNS] = {
        name: {
            "sample": name,
            "n_cells_before": 900,
            "n_cells_after": int((batches == name).sum()),
            "n_genes_before": 60,
            "n_genes_after": 50,
            "median_genes": 210.0,
            "median_counts": 900.0,
            "median_pct_mito": 2.5,
            "thresholds": {"min_genes": 200, "max_pct_mito": 20.0},
        }
        for name in ("ref1", "ref2", "query1")
    }
    return adata


def synthetic_model_dir(path):
    """A model folder with the records the report reads."""
    path.mkdir()
    phases = ["warmup"] * 3 + ["full"] * 5 + ["finetune"] * 2
    epochs = list(range(3)) + list(range(5)) + list(range(2))
    steps = np.arange(len(phases))
    pd.DataFrame(
        {
            "epoch": epochs,
            "phase": phases,
            "loss": 3 / (steps + 1),
            "reconstruction_loss": 1 / (steps + 1),
            "classifier_loss": 2 / (steps + 1),
            "dann_loss": np.full(len(steps), 1.1),
            "val_balanced_accuracy": np.linspace(0.3, 0.9, len(steps)),
        }
    ).to_csv(path / "history.csv", index=False)
    (path / "run.json").write_text(
        json.dumps(
            {
                "seed": 0,
                "device": "cpu",
                "duration_seconds": 12.5,
                "versions": {"tensorflow": "2.21", "scpermut": "0.1.0"},
                "epochs_run": {"warmup": 3, "full": 5, "finetune": 2},
            }
        )
    )
    (path / "config.json").write_text(
        json.dumps(
            {
                "network": {"latent_dim": 8, "hidden_layers": [256, 128]},
                "training": {"focal_gamma": 2.0, "seed": 0},
            }
        )
    )
    (path / "preprocess.json").write_text(
        json.dumps(
            {
                "class_key": "cell_type",
                "batch_key": "batch",
                "unlabeled_category": "Unknown",
                "target_sum": 10000.0,
            }
        )
    )
    (path / "genes.txt").write_text("\n".join(f"gene{i}" for i in range(50)) + "\n")
    return path


class _Collector(HTMLParser):
    """Section ids, figure names with their image sources, table names and external references."""

    def __init__(self):
        super().__init__()
        self.sections, self.figures, self.tables, self.external = [], {}, [], []
        self._figure = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        elif tag == "figure":
            self._figure = attrs["data-figure"]
        elif tag == "img":
            self.figures[self._figure] = attrs["src"]
        elif tag == "table":
            self.tables.append(attrs.get("data-table"))
        for name in ("src", "href"):
            if name in attrs and not attrs[name].startswith(("data:", "#")):
                self.external.append(attrs[name])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    annotated = root / "annotated.h5ad"
    synthetic_annotated().write_h5ad(annotated)
    model = synthetic_model_dir(root / "model")
    result = CliRunner().invoke(
        main, ["report", str(annotated), "--model", str(model), "--outdir", str(root / "out")]
    )
    assert result.exit_code == 0, result.output
    return root / "out"


def test_report_has_every_section_and_embedded_figure(rendered):
    parser = _Collector()
    parser.feed((rendered / "report.html").read_text())
    assert parser.sections == SECTIONS
    assert sorted(parser.figures) == sorted(FIGURES)
    for name, source in parser.figures.items():
        assert source.startswith("data:image/png;base64,"), name
        assert base64.b64decode(source.split(",", 1)[1]).startswith(PNG_MAGIC), name
    assert parser.external == []  # opens offline
    for table in (
        "data",
        "run",
        "config",
        "qc",
        "per_class",
        "by_rarity",
        "classification",
        "integration",
        "unknown_by_batch",
        "unknown_by_true_label",
        "unknown_nearest_types",
        "prediction_counts",
        "composition",
        "confidence",
        "per_batch",
    ):
        assert table in parser.tables


def test_metrics_files_agree_with_the_html(rendered):
    record = json.loads((rendered / "metrics.json").read_text())
    assert record["evaluation_set"] == "query"
    assert set(record["sets"]) == {"query", "validation"}
    headline = record["headline"]
    assert (
        0.5 < headline["balanced_accuracy"] < 1.0
    )  # 10 % of the synthetic predictions are shuffled
    assert headline["batch_entropy"] > 0.8  # batches are drawn at random, so they mix
    assert {row["rarity"] for row in record["sets"]["query"]["by_rarity"]} >= {
        "common (>=10%)",
        "uncommon (1-10%)",
    }
    table = pd.read_csv(rendered / "metrics.tsv", sep="\t")
    value = table.query("scope == 'query' and metric == 'balanced_accuracy'")["value"].item()
    assert value == pytest.approx(headline["balanced_accuracy"], rel=1e-5)
    assert f"{value:.3f}" in (rendered / "report.html").read_text()


@pytest.mark.parametrize(
    "name,section_id,first_column,rows",
    [
        (
            "scpermut_metrics_mqc.tsv",
            "scpermut_metrics",
            "Evaluated cells",
            {"query cells", "validation cells"},
        ),
        ("scpermut_per_class_mqc.tsv", "scpermut_per_class", "Cell type", set(CLASSES)),
        ("scpermut_qc_mqc.tsv", "scpermut_qc", "Sample", {"ref1", "ref2", "query1"}),
    ],
)
def test_multiqc_files_have_a_yaml_header_and_a_table(
    rendered, name, section_id, first_column, rows
):
    lines = (rendered / name).read_text().splitlines()
    header = yaml.safe_load("\n".join(line[2:] for line in lines if line.startswith("# ")))
    assert header["id"] == section_id and header["plot_type"] == "table"
    assert header["section_name"].startswith("scpermut: ")
    table = pd.read_csv(rendered / name, sep="\t", comment="#")
    assert table.columns[0] == first_column
    assert set(table[first_column].astype(str)) == rows
    assert set(table.columns[1:]) <= set(header["headers"])


def test_report_without_labels_umap_or_history_still_renders(tmp_path):
    adata = synthetic_annotated()
    adata.obs["cell_type"] = "Unknown"
    del adata.obsm[constants.UMAP]
    model = synthetic_model_dir(tmp_path / "model")
    (model / "history.csv").unlink()
    result = write_report(adata, model, tmp_path / "out")
    assert result["headline"]["evaluation_set"] is None
    assert "mqc_per_class" not in result["outputs"]
    parser = _Collector()
    parser.feed((tmp_path / "out" / "report.html").read_text())
    assert parser.sections == SECTIONS
    assert list(parser.figures) == ["composition_scpermut_sample"]  # the composition needs no label nor UMAP


def test_report_of_a_model_without_classifier_scores_the_latent_only(tmp_path):
    adata = synthetic_annotated()
    del adata.obs[constants.PREDICTION], adata.obs[constants.CONFIDENCE], adata.obsm[constants.PROBABILITIES]
    result = write_report(adata, synthetic_model_dir(tmp_path / "model"), tmp_path / "out")
    assert result["headline"]["evaluation_set"] is None
    assert result["headline"]["batch_entropy"] > 0.8
    parser = _Collector()
    parser.feed((tmp_path / "out" / "report.html").read_text())
    assert parser.sections == SECTIONS
    assert sorted(parser.figures) == ["training_curves", "umap_batch", "umap_origin", "umap_truth"]


def test_report_on_a_file_without_predictions_fails_with_one_sentence_before_any_write(tmp_path):
    # An input check, before any output is opened; a failure *during* a write is tested in test_atomic.py.
    adata = synthetic_annotated()
    del adata.obs[constants.PREDICTION], adata.obsm[constants.LATENT]
    adata.write_h5ad(tmp_path / "plain.h5ad")
    model = synthetic_model_dir(tmp_path / "model")
    result = CliRunner().invoke(
        main,
        [
            "report",
            str(tmp_path / "plain.h5ad"),
            "--model",
            str(model),
            "--outdir",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 1
    assert "run `scpermut predict` on it first" in result.output
    assert not any(path.exists() for path in report_outputs(tmp_path / "out").values())


def test_report_samples_cells_with_the_runs_seed_and_takes_the_keys_from_the_model(tmp_path):
    model = synthetic_model_dir(tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    config["training"]["seed"] = 7
    (model / "config.json").write_text(json.dumps(config))
    adata = synthetic_annotated()
    del adata.uns[constants.PREPARE_UNS]  # the keys come from the model folder, not the annotated file
    write_report(adata, model, tmp_path / "out")
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["settings"]["seed"] == 7
    assert record["settings"]["class_key"] == "cell_type"


def test_the_annotated_cells_are_summarised_for_the_user(tmp_path):
    from scpermut import metrics

    adata = synthetic_annotated()
    adata.obs[constants.QC_PASS] = True
    adata.obs.iloc[:5, adata.obs.columns.get_loc(constants.QC_PASS)] = False
    result = metrics.evaluate(adata)
    annotated = result["annotated"]
    chosen = adata.obs[constants.SPLIT].astype(str).isin(["query", "unlabelled"])
    assert annotated["n_cells"] == int(chosen.sum())
    assert annotated["n_failed_qc"] == int((chosen & ~adata.obs[constants.QC_PASS]).sum())
    assert sum(annotated["composition"].values()) == annotated["n_cells"]
    assert 0 < annotated["confidence"]["q10"] <= annotated["confidence"]["q50"] <= annotated["confidence"]["q90"] <= 1
    query = chosen & (adata.obs["batch"] == "query1")
    truth = adata.obs.loc[query, "cell_type"].astype(str)
    accuracy = float((truth == adata.obs.loc[query, constants.PREDICTION].astype(str)).mean())
    assert annotated["per_batch"]["query1"]["accuracy"] == pytest.approx(accuracy)
    assert "accuracy" not in annotated["per_batch"]["ref1"]  # unlabelled reference cells: no truth
    assert metrics.headline(result)["n_cells_annotated"] == annotated["n_cells"]


def test_the_confusion_caption_says_rows_are_normalised(rendered):
    text = (rendered / "report.html").read_text()
    assert "Each row sums to 1" in text and "column-normalised" not in text
    assert (rendered / "scpermut_annotated_mqc.tsv").is_file()


def test_the_unknown_cells_are_explained_by_rule_and_nearest_known_type(rendered):
    text = (rendered / "report.html").read_text()
    assert "(novelty above 0.9 or confidence below 0.3)" in text
    assert "Their nearest known types" in text


def test_a_report_of_one_sample_names_its_multiqc_rows_by_the_sample(tmp_path):
    """Samples mapped in tasks of their own make distinct rows of one MultiQC table."""
    adata = synthetic_annotated()
    query = adata[adata.obs[constants.SAMPLE].astype(str) == "query1"].copy()
    model = synthetic_model_dir(tmp_path / "model")
    (model / constants.MODEL_CLASSES).write_text(json.dumps([*CLASSES, "never called"]))
    write_report(query, model, tmp_path / "out")
    for name in ("scpermut_metrics_mqc.tsv", "scpermut_per_class_mqc.tsv", "scpermut_annotated_mqc.tsv"):
        table = pd.read_csv(tmp_path / "out" / name, sep="\t", comment="#")
        rows = table.iloc[:, 0].astype(str)
        assert rows.str.startswith("query1: ").all(), (name, list(rows))
    # MultiQC keeps the columns of the file it reads last: every sample's file names them all,
    # a type no cell of this sample was called included.
    unlabelled = query.copy()
    unlabelled.obs["cell_type"] = "Unknown"
    write_report(unlabelled, tmp_path / "model", tmp_path / "unlabelled")
    for name in ("scpermut_metrics_mqc.tsv", "scpermut_annotated_mqc.tsv", "scpermut_qc_mqc.tsv"):
        labelled_table = pd.read_csv(tmp_path / "out" / name, sep="\t", comment="#")
        unlabelled_table = pd.read_csv(tmp_path / "unlabelled" / name, sep="\t", comment="#")
        assert list(unlabelled_table.columns) == list(labelled_table.columns), name
    annotated = pd.read_csv(tmp_path / "unlabelled" / "scpermut_annotated_mqc.tsv", sep="\t", comment="#")
    assert annotated["predicted never called"].dropna().tolist() == [0]


def test_a_query_mapped_onto_a_saved_reference_is_drawn_on_the_reference_sample(tmp_path):
    """The cells of a batch the model never trained on share one UMAP with the folder's reference
    sample; a model folder without the sample (older versions) says so instead."""
    adata = synthetic_annotated()
    older = synthetic_model_dir(tmp_path / "older")
    write_report(adata, older, tmp_path / "without")
    parser = _Collector()
    parser.feed((tmp_path / "without" / "report.html").read_text())
    assert "mapping_origin" not in parser.figures

    model = synthetic_model_dir(tmp_path / "model")
    (model / constants.MODEL_BATCHES).write_text(json.dumps(["ref1", "ref2"]))
    (model / constants.MODEL_CLASSES).write_text(json.dumps(list(CLASSES)))
    reference = adata.obs[constants.ROLE].astype(str).to_numpy() == "reference"
    truth = adata.obs["cell_type"].astype(str).to_numpy()
    labelled = np.flatnonzero(reference & (truth != "Unknown"))
    np.savez(
        model / constants.MODEL_REFERENCE_SAMPLE,
        latent=adata.obsm[constants.LATENT][labelled],
        classes=np.array([list(CLASSES).index(name) for name in truth[labelled]], dtype=np.int32),
        batches=np.zeros(labelled.size, dtype=np.int32),
    )
    write_report(adata, model, tmp_path / "out")
    parser = _Collector()
    text = (tmp_path / "out" / "report.html").read_text()
    parser.feed(text)
    assert {"mapping_origin", "mapping_label"} <= set(parser.figures)
    n_query = int((~reference).sum())
    assert f"{labelled.size:,} reference cells" in text and f"{n_query:,} cells of new batches" in text
