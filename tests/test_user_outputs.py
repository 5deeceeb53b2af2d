"""What a biologist takes away and what stops a silent wrong answer (issue 26): labels.tsv, the query
cells on their own genes, composition per sample, readable marker names, the gene rule and its hints,
single-cell types, merged warnings."""

from __future__ import annotations

import logging
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import make_counts

from scpermut import constants
from scpermut.annotation import labels_table
from scpermut.data.align import check_missing_genes, namespace
from scpermut.data.preprocess import PrepareSettings, prepare_anndata
from scpermut.data.samplesheet import SampleSpec
from scpermut.errors import InputError
from scpermut.keys import Keys
from scpermut.report.composition import composition_section
from scpermut.report.tables import readable_gene_names
from scpermut.steps.outputs import write_labels, write_query_cells
from scpermut.steps.progress import WarningCollector


def _annotated(n_ref=20, n_query=30, seed=0) -> ad.AnnData:
    """An annotated file as `run` writes it: reference then query cells, with prediction's fields."""
    rng = np.random.default_rng(seed)
    n = n_ref + n_query
    obs = pd.DataFrame(
        {
            constants.SAMPLE: ["ref"] * n_ref + ["stim"] * n_query,
            "batch": ["ref"] * n_ref + ["stim"] * n_query,
            "condition": ["ctrl"] * n_ref + ["stim"] * n_query,
            constants.SPLIT: [constants.SPLIT_TRAIN] * n_ref + [constants.SPLIT_QUERY] * n_query,
            constants.PREDICTION: pd.Categorical(rng.choice(["T", "B"], n)),
            constants.CONFIDENCE: rng.uniform(0.3, 1.0, n).astype(np.float32),
        },
        index=[f"c{i}" for i in range(n)],
    )
    obs[constants.LABEL] = obs[constants.PREDICTION]
    adata = ad.AnnData(X=sp.csr_matrix(rng.poisson(1.0, (n, 5)).astype(np.float32)), obs=obs)
    adata.obsm[constants.LATENT] = rng.normal(size=(n, 3)).astype(np.float32)
    return adata


def test_labels_tsv_lists_every_cell_with_its_label_and_confidence(tmp_path):
    adata = _annotated()
    adata.obs[constants.NOVELTY] = np.linspace(0, 1, adata.n_obs)
    path = write_labels(adata, tmp_path / "annotated.h5ad")
    table = pd.read_csv(path, sep="\t")
    assert path.name == constants.LABELS_FILE
    assert list(table.columns) == ["barcode", "sample", "label", "confidence", "annotated", "novelty"]
    assert table["barcode"].tolist() == list(adata.obs_names)
    assert table["annotated"].sum() == 30 and not table["annotated"][:20].any()
    assert np.allclose(table["confidence"], adata.obs[constants.CONFIDENCE], atol=1e-4)


def test_labels_tsv_names_the_files_own_barcodes():
    adata = _annotated()
    adata.obs["barcode"] = [f"AAAC-{i}" for i in range(adata.n_obs)]
    assert labels_table(adata)["barcode"].iloc[3] == "AAAC-3"
    assert "novelty" not in labels_table(adata)


def test_query_cells_are_written_on_their_own_genes_and_counts(tmp_path):
    own = make_counts(n_cells=30, n_genes=12, prefix="c")
    own.obs_names = [f"c{20 + i}" for i in range(30)]  # the query's barcodes in the annotated file
    own.layers["spliced"] = own.X.copy()
    own.write_h5ad(tmp_path / "stim.h5ad")
    annotated = _annotated()
    out = tmp_path / constants.QUERY_FILE
    n_cells = write_query_cells(annotated, [SampleSpec("ref", tmp_path / "ref.h5ad"), SampleSpec("stim", tmp_path / "stim.h5ad", role="query")], out)
    cells = ad.read_h5ad(out)
    assert n_cells == cells.n_obs == 30
    assert list(cells.var_names) == list(own.var_names) and "spliced" in cells.layers
    assert (cells.X != own.X).nnz == 0
    assert cells.obs[constants.PREDICTION].tolist() == annotated.obs[constants.PREDICTION].iloc[20:].tolist()
    assert np.array_equal(cells.obsm[constants.LATENT], annotated.obsm[constants.LATENT][20:])
    assert "cell_type" in cells.obs  # the file's own columns are kept


def test_composition_per_sample_and_condition_and_the_least_confident_cells():
    adata = _annotated()
    section = composition_section(adata, Keys(condition_key="condition"))
    markup = "".join(section.parts)
    found = set(re.findall(r'data-(?:table|figure)="([^"]+)"', markup))
    assert {"composition_by_scpermut_sample", "composition_by_condition", "confidence_per_type", "least_confident_cells"} <= found
    least = adata.obs.loc[adata.obs[constants.SPLIT] == constants.SPLIT_QUERY, constants.CONFIDENCE].idxmin()
    assert markup.index(f">{least}<") < markup.index("least_confident") + 2000
    assert ">c0<" not in markup.split('data-table="least_confident_cells"')[1]  # a reference cell is not listed


def test_marker_names_are_readable_when_var_names_carry_ensembl_ids():
    var = pd.DataFrame(index=["CD3E_ENSG00000198851", "ENSG00000156738_MS4A1", "ENSG00000000001"])
    assert readable_gene_names(var).tolist() == ["CD3E", "MS4A1", "ENSG00000000001"]
    var["gene_symbols"] = ["CD3E", "MS4A1", None]
    assert readable_gene_names(var).tolist() == ["CD3E", "MS4A1", "ENSG00000000001"]


def test_missing_gene_rule_hints_at_another_namespace_and_at_the_var_column_holding_the_ids():
    genes = [f"GENE{i}" for i in range(10)]
    ensembl = [f"ENSG{i:011d}" for i in range(10)]
    assert namespace(ensembl) == "Ensembl ids" and namespace(genes) == "gene symbols"
    with pytest.raises(InputError, match="the model's genes are gene symbols, the data's Ensembl ids"):
        check_missing_genes(genes, ensembl[:8] + genes[:2], max_missing_genes=0.5, source="q.h5ad")
    var = pd.DataFrame({"symbol": genes}, index=ensembl)
    with pytest.raises(InputError, match=r"q\.h5ad: none of .*var column 'symbol' holds the model's gene names"):
        check_missing_genes(genes, ensembl, max_missing_genes=0.9, source="q.h5ad", var=var)
    present = check_missing_genes(genes, genes[:6], max_missing_genes=0.5, source="q.h5ad")
    assert present.sum() == 6


def test_a_type_with_one_labelled_cell_is_named_and_kept_out_of_the_classes(caplog):
    adata = make_counts(n_cells=60, n_genes=40)
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str)
    adata.obs.iloc[7, adata.obs.columns.get_loc("cell_type")] = "Megakaryocyte"
    with caplog.at_level(logging.WARNING, logger="scpermut"):
        settings = PrepareSettings(min_shared_genes=10, n_top_genes=20)
        prepared = prepare_anndata(adata, keys=Keys(), settings=settings)
    assert "'Megakaryocyte'" in caplog.text and "single labelled cell" in caplog.text
    split = prepared.obs[constants.SPLIT].astype(str)
    assert split.iloc[7] == constants.SPLIT_UNLABELLED
    assert prepared.obs["cell_type"].iloc[7] == "Megakaryocyte"  # the user's label is kept
    labelled = split.isin([constants.SPLIT_TRAIN, constants.SPLIT_VALIDATION])
    assert "Megakaryocyte" not in set(prepared.obs.loc[labelled, "cell_type"])


def test_the_same_warning_about_several_files_is_one_line():
    log = logging.getLogger("scpermut.test")
    with WarningCollector() as collector:
        for name in ("a.h5ad", "b.h5ad", "a.h5ad"):
            log.warning("%s: no mitochondrial gene", name)
        log.warning("no validation cells")
        log.warning("no validation cells")
    assert collector.messages == ["a.h5ad, b.h5ad: no mitochondrial gene", "no validation cells"]


def test_predict_before_fit_is_one_clear_error():
    from scpermut import Model

    with pytest.raises(InputError, match="not trained yet"):
        Model().predict(make_counts())


def test_query_labels_of_another_vocabulary_are_explained(caplog):
    """Scores of 0.000 by construction get a sentence saying why."""
    from scpermut.steps.report import _warn_foreign_labels

    adata = _annotated()
    adata.obs["cell_type"] = ["T"] * 20 + ["t-cell"] * 30
    with caplog.at_level(logging.WARNING, logger="scpermut"):
        _warn_foreign_labels(adata, ["B", "T"], Keys(), "annotated.h5ad")
    assert "none of the query's labels (cell_type: 't-cell' (30 cells)) is a type of the model ('B', 'T')" in caplog.text
    caplog.clear()
    adata.obs["cell_type"] = ["T"] * 20 + ["T"] * 10 + ["NK"] * 20
    with caplog.at_level(logging.WARNING, logger="scpermut"):
        _warn_foreign_labels(adata, ["B", "T"], Keys(), "annotated.h5ad")
    assert "query labels that are not types of the model ('NK' (20 cells)" in caplog.text


def test_query_cells_of_two_files_with_clashing_barcodes_and_duplicated_genes_are_joined(tmp_path):
    specs = []
    for name in ("q1", "q2"):
        own = make_counts(n_cells=10, n_genes=6, prefix="bc")
        own.var_names = ["G0", "G0", "G2", "G3", "G4", "G5"]  # a duplicated gene, as files have
        own.write_h5ad(tmp_path / f"{name}.h5ad")
        specs.append(SampleSpec(name, tmp_path / f"{name}.h5ad", role="query"))
    annotated = _annotated(n_ref=0, n_query=20)
    annotated.obs[constants.SAMPLE] = ["q1"] * 10 + ["q2"] * 10
    annotated.obs["barcode"] = [f"bc{i}" for i in range(10)] * 2
    annotated.obs_names = [f"{s}_bc{i % 10}" for i, s in enumerate(annotated.obs[constants.SAMPLE])]
    write_query_cells(annotated, specs, tmp_path / "query.h5ad")
    cells = ad.read_h5ad(tmp_path / "query.h5ad")
    assert list(cells.obs_names) == list(annotated.obs_names)
    assert cells.obs["barcode"].tolist() == annotated.obs["barcode"].tolist()
    assert cells.n_vars == 6 and cells.var_names.is_unique
