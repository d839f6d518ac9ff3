"""The comparison report: runs read back from MLflow, drawn with plotly, written as one page.

- ``data``: MLflow → plain rows (:class:`Run`, :class:`SweepData`, :class:`Confusion`);
- ``figures``: plain rows → plotly figures (testable without MLflow);
- ``page``: the HTML page and the PNGs (:func:`write_report`).

What it shows: the comparison table (mean ± std over seeds, as ``echoes compare`` prints it);
accuracy vs training time and vs trainable parameters (log axes, Pareto front marked); peak
memory; learning curves per model (mean over seeds, band = seed spread); the confusion matrix of
one run (the best one unless ``run`` is given); for each sweep: objective vs each parameter, and
parameter importances (fANOVA).
"""

from __future__ import annotations

from .data import CURVE, Confusion, ReportData, Run, SweepData, read_report
from .figures import Figures, build_figures, importances, palette, pareto
from .page import render_page, write_report

__all__ = ["CURVE", "Confusion", "Figures", "ReportData", "Run", "SweepData", "build_figures", "importances",
           "palette", "pareto", "read_report", "render_page", "write_report"]
