"""Metrics, a self-contained HTML report and MultiQC files for an annotated AnnData.

- :mod:`~scpermut.report.files`: every file's path and text;
- :mod:`~scpermut.report.tables`: what the report computes (marker genes, QC summaries, the
  long metrics table);
- :mod:`~scpermut.report.sections`, :mod:`~scpermut.report.result_sections` and
  :mod:`~scpermut.report.mapping` (the query on the reference's UMAP): the HTML sections; :mod:`~scpermut.report.html` and :mod:`~scpermut.report.plots` their pieces;
- :mod:`~scpermut.report.multiqc`: MultiQC custom content; :mod:`~scpermut.report.tune`: the
  tuning report.
"""
