"""The report page: ``report.html`` — self-contained, plotly's JavaScript inlined, so it opens
offline and can be mailed — and a PNG per figure beside it (plotly's Kaleido export, which
drives the system Chromium)."""

from __future__ import annotations

import html
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..run import Tag
from ..suite import SEEDS, TABLE_IDENTITY, format_cell, table_columns
from ..sweep.outputs import fmt
from ..utils import atomic_write, require
from .data import ReportData, SweepData, read_report
from .figures import FIG_HEIGHT, FIG_WIDTH, Figures, best_point, build_figures

Echo = Callable[[str], None]

CSS = """
body { font-family: -apple-system, 'Segoe UI', Roboto, 'Liberation Sans', Arial, sans-serif; margin: 24px 32px;
       color: #222; background: #fff; }
h1 { margin: 0 0 4px; font-size: 26px; } h2 { margin: 28px 0 10px; font-size: 20px; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: 13px; margin: 0 0 16px; }
table.results { border-collapse: collapse; font-size: 13px; }
table.results th, table.results td { padding: 4px 10px; border-bottom: 1px solid #e5e5e5; text-align: right; }
table.results th { background: #f2f4f8; } table.results td.text, table.results th.text { text-align: left; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; } .fig { border: 1px solid #eee; }
.note { color: #666; font-size: 13px; }
"""


def write_report(out_dir: str | Path, *, uri: str | None = None, experiments: list[str] | None = None,
                 run_ids: list[str] | None = None, confusion_run: str | None = None, png: bool = True,
                 echo: Echo = print) -> Path:
    """Read runs from MLflow and write ``report.html`` (and PNGs) into `out_dir`; return the page."""
    from ..config import TrackingConfig
    from ..tracking import store_uri

    require("plotly", "report")
    data = read_report(uri or store_uri(TrackingConfig()), experiments, run_ids, confusion_run)
    figs = build_figures([r.result() for r in data.runs], data.sweeps, data.confusion)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page = atomic_write(out / "report.html", render_page(data, figs))
    problem = write_pngs(figs.figures, out) if png else None
    if problem:
        echo(problem)
    return page


def render_page(data: ReportData, figs: Figures) -> str:
    """The whole HTML page: the comparison, the confusion matrix, then one section per sweep."""
    import plotly.offline

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>echoes report</title><style>{CSS}</style>",
             f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>",
             "<h1>echoes report</h1>",
             f"<p class='meta'>{time.strftime('%Y-%m-%d %H:%M')} · MLflow {html.escape(data.uri)} · experiments: "
             f"{html.escape(', '.join(data.experiments))} · {len(data.runs)} runs, {len(data.sweeps)} sweeps</p>"]
    if figs.rows:
        parts += ["<h2>Comparison</h2>",
                  "<p class='note'>Mean ± std over seeds; the latest finished run of each dataset × model × "
                  "seed.</p>", table_html(figs.rows, figs.colours),
                  _figure_row(figs, ["accuracy_vs_time", "accuracy_vs_params", "peak_memory", "learning_curves",
                                     "overfitting_gap"])]
    if "confusion_matrix" in figs.figures:
        parts += ["<h2>Confusion matrix</h2>", _figure(figs, "confusion_matrix")]
    for sweep in data.sweeps:
        parts += [f"<h2>Sweep {html.escape(sweep.name)}</h2>", f"<p class='note'>{sweep_line(sweep)}</p>",
                  _figure_row(figs, [f"sweep_{sweep.name}_params", f"sweep_{sweep.name}_importance"])]
        if sweep.name in figs.notes:
            parts.append(f"<p class='note'>{html.escape(figs.notes[sweep.name])}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _figure(figs: Figures, name: str) -> str:
    div = figs.figures[name].to_html(full_html=False, include_plotlyjs=False, div_id=name,
                                     config={"displaylogo": False, "toImageButtonOptions": {"filename": name}})
    return f"<div class='fig'>{div}</div>"


def _figure_row(figs: Figures, names: list[str]) -> str:
    return "<div class='figs'>" + "".join(_figure(figs, n) for n in names if n in figs.figures) + "</div>"


def table_html(rows: list[dict[str, Any]], colours: dict[str, str]) -> str:
    """The comparison table, each model with its colour swatch."""
    out = ['<table class="results" id="comparison"><thead><tr>']
    columns = table_columns(rows)
    headers = TABLE_IDENTITY + [h for _, h, _ in columns]
    out += [f'<th class="{"text" if i < 3 else "num"}">{html.escape(h)}</th>' for i, h in enumerate(headers)]
    out.append("</tr></thead><tbody>")
    for r in rows:
        swatch = f'<span class="swatch" style="background:{colours[r[Tag.LABEL]]}"></span>'
        cells = [f'<td class="text">{html.escape(r[Tag.DATA])}</td>',
                 f'<td class="text">{swatch}{html.escape(r[Tag.LABEL])}</td>',
                 f'<td class="text">{html.escape(r[Tag.LEARNER])}</td>', f'<td>{r[SEEDS]}</td>']
        cells += [f'<td data-key="{k}">{html.escape(format_cell(r, k, f))}</td>' for k, _, f in columns]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def sweep_line(sweep: SweepData) -> str:
    """'N trials: a complete, b pruned. Best: trial i, objective v (params).'"""
    counts = {s: sum(p["state"] == s for p in sweep.points) for s in ("complete", "pruned", "failed", "stopped")}
    text = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    best = best_point(sweep)
    if best is not None:
        params = ", ".join(f"{k}={fmt(v)}" for k, v in best["params"].items())
        text += f". Best: trial {best['trial']}, {sweep.objective} {best['value']:.4f} ({params})"
    return html.escape(f"{len(sweep.points)} trials: {text}.")


def write_pngs(figures: dict[str, Any], out: Path) -> str | None:
    """Every figure as ``<name>.png`` through Kaleido and Chromium; None, or why it could not."""
    import plotly.io as pio

    if not figures:
        return None
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        paths = [Path(tmp) / f"{name}.png" for name in figures]
        try:
            figs = list(figures.values())  # Kaleido's own default size would override the layout's
            pio.write_images(figs, paths, width=[f.layout.width or FIG_WIDTH for f in figs],
                             height=[f.layout.height or FIG_HEIGHT for f in figs], scale=1)
        except Exception as e:  # no Chromium, or Kaleido missing
            return (f"PNG export failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}) — "
                    "install Chromium (apt-get install chromium) for PNGs")
        for p in paths:
            p.replace(out / p.name)
    return None
