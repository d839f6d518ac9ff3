"""The comparison report: runs read back from MLflow, drawn with plotly.

``write_report`` writes ``report.html`` — one self-contained page, plotly's JavaScript
inlined, so it opens offline and can be mailed — and a PNG per figure beside it (plotly's
Kaleido export, which drives the system Chromium). What it shows:

- the comparison table (mean ± std over seeds, as ``echoes compare`` prints it);
- accuracy vs training time and vs trainable parameters (log axes, Pareto front marked);
- peak memory; learning curves per model (mean over seeds, band = seed spread);
- the confusion matrix of one run (the best one unless ``run`` is given);
- for each sweep: objective vs each parameter, and parameter importances (fANOVA).

Each model label keeps one colour in every figure. The comparison uses the latest finished
run of each dataset × model × seed; sweep trials appear only in their sweep's section.
"""

from __future__ import annotations

import html
import json
import math
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EchoesError, did_you_mean
from .suite import SUMMARY_COLUMNS, format_cell, summarize
from .utils import atomic_write

Echo = Callable[[str], None]
FIG_WIDTH, FIG_HEIGHT = 740, 440  # two figures side by side on a wide screen
CURVE_METRIC = "epoch/val_accuracy"


@dataclass
class Run:
    """One MLflow run, as much of it as the report needs."""

    run_id: str
    experiment: str
    status: str
    start_time: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    curve: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.tags.get("label", self.tags.get("model", "?"))

    @property
    def data(self) -> str:
        return self.tags.get("data", "?")

    @property
    def seed(self) -> str:
        return self.tags.get("seed", "0")

    def result(self) -> dict[str, Any]:
        """The shape ``suite.summarize`` takes."""
        return {"data": self.data, "label": self.label, "learner": self.tags.get("learner", "?"),
                "seed": self.seed, **self.metrics}


@dataclass
class SweepRuns:
    parent: Run
    trials: list[Run]
    space: dict[str, Any]  # parameter → optuna distribution

    @property
    def name(self) -> str:
        return self.parent.tags["echoes.sweep"]

    @property
    def objective(self) -> str:
        return self.parent.tags.get("sweep.objective", "val_accuracy")

    @property
    def maximize(self) -> bool:
        return self.parent.tags.get("sweep.direction", "maximize") == "maximize"


# --- reading MLflow ------------------------------------------------------------------------


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    from .tracking import ensure_store

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise EchoesError(f"no MLflow store at {uri} — run `echoes train` or `echoes compare` first, "
                          "or pass --uri")
    ensure_store(uri)
    return MlflowClient(uri)


def _experiments(client: Any, names: list[str] | None) -> dict[str, str]:
    """experiment id → name, for the names asked for, or every experiment with runs."""
    from mlflow.entities import ViewType

    known = {e.name: e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)}
    if names:
        for name in names:
            if name not in known:
                raise EchoesError(f"unknown experiment '{name}' — {did_you_mean(name, known)}")
        return {known[n]: n for n in names}
    return {i: n for n, i in known.items() if n != "Default"}


def _search(client: Any, exp_ids: list[str]) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs(exp_ids, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def load_runs(client: Any, experiments: list[str] | None = None,
              run_ids: list[str] | None = None) -> tuple[list[Run], list[SweepRuns]]:
    """Finished comparison runs (latest per dataset × label × seed) and the sweeps."""
    names = _experiments(client, experiments)
    if not names:
        return [], []
    raw = _search(client, list(names))
    runs = [Run(r.info.run_id, names[r.info.experiment_id], r.info.status, r.info.start_time or 0,
                dict(r.data.tags), dict(r.data.params), dict(r.data.metrics)) for r in raw]
    if run_ids is not None:
        wanted = set(run_ids)
        runs = [r for r in runs if r.run_id in wanted or r.tags.get("mlflow.parentRunId") in wanted]
    parents = {r.run_id: r for r in runs if "echoes.sweep" in r.tags}
    latest: dict[tuple[str, str, str], Run] = {}
    for r in runs:
        if r.status != "FINISHED" or "label" not in r.tags or "sweep" in r.tags or r.run_id in parents:
            continue
        key = (r.data, r.label, r.seed)
        if key not in latest or r.start_time > latest[key].start_time:
            latest[key] = r
    comparison = sorted(latest.values(), key=lambda r: (r.data, r.label, r.seed))
    for r in comparison:
        r.curve = [m.value for m in sorted(client.get_metric_history(r.run_id, CURVE_METRIC), key=lambda m: m.step)]
    sweeps = []
    for parent in sorted(parents.values(), key=lambda r: r.start_time):
        trials = [r for r in runs if r.tags.get("mlflow.parentRunId") == parent.run_id]
        sweeps.append(SweepRuns(parent, sorted(trials, key=lambda r: int(r.tags.get("sweep.trial", 0))),
                                _space(client, parent.run_id)))
    return comparison, sweeps


def _artifact_json(client: Any, run_id: str, name: str) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, name, tmp)
        except Exception:
            return None
        return json.loads(Path(path).read_text())


def _space(client: Any, run_id: str) -> dict[str, Any]:
    from optuna.distributions import json_to_distribution

    data = _artifact_json(client, run_id, "space.json") or {}
    return {k: json_to_distribution(json.dumps(v)) for k, v in data.items()}


# --- colours and helpers --------------------------------------------------------------------


def palette(labels: list[str]) -> dict[str, str]:
    """One fixed colour per model label, the same in every figure."""
    from plotly.colors import qualitative

    colours = qualitative.Plotly + qualitative.D3 + qualitative.Dark24
    return {label: colours[i % len(colours)] for i, label in enumerate(sorted(set(labels)))}


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other beats on both cost (x, lower is better) and accuracy (y)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _grid(n: int, titles: list[str], **kwargs: Any) -> tuple[Any, Callable[[int], dict[str, int]]]:
    """A figure with n panels (up to 3 a row; 4 as 2×2) and where panel i sits."""
    from plotly.subplots import make_subplots

    cols = 2 if n == 4 else min(n, 3)
    rows = math.ceil(n / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, **kwargs)
    fig.update_layout(width=FIG_WIDTH, height=max(FIG_HEIGHT, 340 * rows), template="plotly_white",
                      margin={"l": 60, "r": 20, "t": 70, "b": 50})
    return fig, lambda i: {"row": i // cols + 1, "col": i % cols + 1}


# --- figures --------------------------------------------------------------------------------


def fig_table(rows: list[dict[str, Any]]) -> Any:
    import plotly.graph_objects as go

    headers = ["dataset", "model", "learner", "seeds"] + [h for _, h, _ in SUMMARY_COLUMNS]
    cells = [[r["data"] for r in rows], [r["label"] for r in rows], [r["learner"] for r in rows],
             [str(r["seeds"]) for r in rows]] + [[format_cell(r, k, f) for r in rows] for k, _, f in SUMMARY_COLUMNS]
    widths = [max(len(h), *(len(c) for c in col)) + 2 for h, col in zip(headers, cells, strict=True)]
    fig = go.Figure(go.Table(columnwidth=widths, header={"values": headers, "fill_color": "#e8ecf3", "align": "left"},
                             cells={"values": cells, "align": "left", "height": 26}))
    fig.update_layout(width=min(1600, 9 * sum(widths)), height=110 + 27 * len(rows),
                      margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      title="Comparison (mean ± std over seeds)")
    return fig


def fig_accuracy_vs(rows: list[dict[str, Any]], colours: dict[str, str], key: str, title: str) -> Any:
    """Test accuracy against a cost (log x) per dataset; the Pareto front dashed and ringed."""
    import plotly.graph_objects as go

    datasets = list(OrderedDict.fromkeys(r["data"] for r in rows))
    fig, cell = _grid(len(datasets), datasets)
    shown: set[str] = set()
    for i, data in enumerate(datasets):
        pts = [r for r in rows if r["data"] == data and r.get(key, 0) > 0 and "test_accuracy" in r]
        for r in pts:
            fig.add_trace(go.Scatter(
                x=[r[key]], y=[r["test_accuracy"]], mode="markers", name=r["label"], legendgroup=r["label"],
                showlegend=r["label"] not in shown, marker={"color": colours[r["label"]], "size": 11},
                error_y={"type": "data", "array": [r.get("test_accuracy_std", 0)], "thickness": 1},
                hovertemplate=f"{r['label']}<br>{title} %{{x:.3g}}<br>test acc %{{y:.3f}}<extra></extra>",
            ), **cell(i))
            shown.add(r["label"])
        front = [pts[j] for j in pareto([(r[key], r["test_accuracy"]) for r in pts])]
        if front:
            fig.add_trace(go.Scatter(
                x=[r[key] for r in front], y=[r["test_accuracy"] for r in front], mode="lines+markers",
                line={"dash": "dash", "color": "#555", "shape": "hv", "width": 1}, name="Pareto front",
                legendgroup="pareto", showlegend=i == 0, hoverinfo="skip",
                marker={"size": 18, "color": "rgba(0,0,0,0)", "line": {"color": "#333", "width": 1.5}},
            ), **cell(i))
        fig.update_xaxes(type="log", title_text=title, **cell(i))
        fig.update_yaxes(title_text="test accuracy" if cell(i)["col"] == 1 else None, **cell(i))
    fig.update_layout(title=f"Accuracy vs {title}")
    return fig


def fig_memory(rows: list[dict[str, Any]], colours: dict[str, str]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for label in sorted({r["label"] for r in rows}):
        rs = [r for r in rows if r["label"] == label and "peak_memory_mb" in r]
        fig.add_trace(go.Bar(x=[r["data"] for r in rs], y=[r["peak_memory_mb"] for r in rs], name=label,
                             marker_color=colours[label],
                             error_y={"type": "data", "array": [r.get("peak_memory_mb_std", 0) for r in rs]}))
    fig.update_layout(title="Peak memory while training", barmode="group", yaxis_title="MB", width=FIG_WIDTH,
                      height=FIG_HEIGHT, template="plotly_white")
    return fig


def fig_curves(runs: list[Run], colours: dict[str, str]) -> Any | None:
    """Validation accuracy per epoch: mean over seeds, band from the lowest to the highest seed."""
    import plotly.graph_objects as go

    with_curves = [r for r in runs if len(r.curve) > 1]
    if not with_curves:
        return None
    datasets = list(OrderedDict.fromkeys(r.data for r in with_curves))
    fig, cell = _grid(len(datasets), datasets)
    shown: set[str] = set()
    for i, data in enumerate(datasets):
        for label in sorted({r.label for r in with_curves if r.data == data}):
            curves = [r.curve for r in with_curves if r.data == data and r.label == label]
            epochs = max(len(c) for c in curves)
            stats = [[c[e] for c in curves if len(c) > e] for e in range(epochs)]
            x = list(range(1, epochs + 1))
            lo, hi = [min(s) for s in stats], [max(s) for s in stats]
            colour = colours[label]
            fig.add_trace(go.Scatter(x=x + x[::-1], y=hi + lo[::-1], mode="lines", fill="toself", fillcolor=colour,
                                     opacity=0.18,
                                     line={"width": 0}, hoverinfo="skip", showlegend=False, legendgroup=label),
                          **cell(i))
            fig.add_trace(go.Scatter(x=x, y=[float(np.mean(s)) for s in stats], mode="lines", name=label,
                                     legendgroup=label, showlegend=label not in shown, line={"color": colour}),
                          **cell(i))
            shown.add(label)
        fig.update_xaxes(title_text="epoch", **cell(i))
        fig.update_yaxes(title_text="val accuracy" if cell(i)["col"] == 1 else None, **cell(i))
    fig.update_layout(title="Learning curves (mean over seeds; band: seed spread)")
    return fig


def fig_confusion(cm: list[list[int]], classes: list[str], title: str) -> Any:
    import plotly.graph_objects as go

    m = np.asarray(cm, dtype=float)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig = go.Figure(go.Heatmap(z=norm, x=classes, y=classes, colorscale="Blues", zmin=0, zmax=1,
                               text=m.astype(int), texttemplate="%{text}" if len(classes) <= 20 else None,
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{text} (%{z:.0%})<extra></extra>"))
    size = min(900, 260 + 28 * len(classes))
    fig.update_layout(title=title, xaxis_title="predicted", yaxis_title="true", width=max(FIG_WIDTH, size + 120),
                      height=max(FIG_HEIGHT, size),
                      yaxis={"autorange": "reversed"}, template="plotly_white")
    return fig


def _param_value(raw: str | None, dist: Any) -> Any:
    import optuna.distributions as od

    if raw is None:
        return None
    if isinstance(dist, od.CategoricalDistribution):
        for c in dist.choices:
            if str(c) == raw:
                return c
        return None
    value = float(raw)
    return int(value) if isinstance(dist, od.IntDistribution) else value


def sweep_points(sweep: SweepRuns) -> list[dict[str, Any]]:
    """Per trial: state, objective (last epoch's value for a pruned one), parameter values."""
    out = []
    for r in sweep.trials:
        state = {"FINISHED": "complete", "KILLED": "pruned", "FAILED": "failed"}.get(r.status, r.status.lower())
        if state == "pruned" and not r.tags.get("stopped", "").startswith("pruned"):
            state = "stopped"
        value = r.metrics.get(sweep.objective) if state == "complete" else r.metrics.get(f"epoch/{sweep.objective}")
        params = {k: _param_value(r.params.get(k), d) for k, d in sweep.space.items()}
        out.append({"trial": int(r.tags.get("sweep.trial", -1)), "state": state, "value": value,
                    "params": params, "label": r.label})
    return out


def importances(sweep: SweepRuns, points: list[dict[str, Any]]) -> dict[str, float] | None:
    """fANOVA importance of each parameter over the complete trials (None: too few to say)."""
    import optuna

    done = [p for p in points if p["state"] == "complete" and p["value"] is not None
            and all(v is not None for v in p["params"].values())]
    varied = [k for k in sweep.space if len({repr(p["params"][k]) for p in done}) > 1]
    if len(done) < 3 or not varied:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if sweep.maximize else "minimize")
    for p in done:
        study.add_trial(optuna.trial.create_trial(params=p["params"], distributions=sweep.space, value=p["value"]))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator, params=varied))


def fig_sweep_params(sweep: SweepRuns, points: list[dict[str, Any]], colours: dict[str, str]) -> Any:
    import optuna.distributions as od
    import plotly.graph_objects as go

    keys = list(sweep.space)
    fig, cell = _grid(len(keys), keys, shared_yaxes=True)
    valued = [p for p in points if p["value"] is not None]
    best = None
    done = [p for p in valued if p["state"] == "complete"]
    if done:
        best = (max if sweep.maximize else min)(done, key=lambda p: p["value"])
    for i, key in enumerate(keys):
        dist = sweep.space[key]
        for state, symbol in (("complete", "circle"), ("pruned", "x"), ("stopped", "x")):
            ps = [p for p in valued if p["state"] == state]
            if not ps:
                continue
            colour = [colours.get(p["label"], "#1f77b4") if state == "complete" else "#999" for p in ps]
            fig.add_trace(go.Scatter(
                x=[p["params"][key] if not isinstance(dist, od.CategoricalDistribution) else str(p["params"][key])
                   for p in ps],
                y=[p["value"] for p in ps], mode="markers", name=state, legendgroup=state, showlegend=i == 0,
                marker={"color": colour, "symbol": symbol, "size": 9, "opacity": 0.85},
                text=[f"trial {p['trial']}" for p in ps], hovertemplate="%{text}<br>%{x}: %{y:.4f}<extra></extra>",
            ), **cell(i))
        if best is not None:
            bx = best["params"][key]
            fig.add_trace(go.Scatter(
                x=[str(bx) if isinstance(dist, od.CategoricalDistribution) else bx], y=[best["value"]],
                mode="markers", name=f"best (trial {best['trial']})", legendgroup="best", showlegend=i == 0,
                marker={"symbol": "star", "size": 16, "color": "gold", "line": {"color": "#333", "width": 1}},
            ), **cell(i))
        if getattr(dist, "log", False):
            fig.update_xaxes(type="log", **cell(i))
        if isinstance(dist, od.CategoricalDistribution):
            fig.update_xaxes(type="category", **cell(i))
        fig.update_yaxes(title_text=sweep.objective if cell(i)["col"] == 1 else None, **cell(i))
    fig.update_layout(title=f"Sweep {sweep.name}: {sweep.objective} per parameter value")
    return fig


def fig_importance(sweep: SweepRuns, imp: dict[str, float]) -> Any:
    import plotly.graph_objects as go

    keys = sorted(imp, key=imp.get)
    fig = go.Figure(go.Bar(x=[imp[k] for k in keys], y=keys, orientation="h", marker_color="#4c78a8",
                           text=[f"{imp[k]:.2f}" for k in keys], textposition="auto"))
    fig.update_layout(title=f"Sweep {sweep.name}: parameter importance for {sweep.objective} (fANOVA)",
                      xaxis_title="importance", width=FIG_WIDTH, height=max(260, 80 + 50 * len(keys)),
                      template="plotly_white", margin={"l": 160})
    return fig


# --- the page --------------------------------------------------------------------------------

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


def _table_html(rows: list[dict[str, Any]], colours: dict[str, str]) -> str:
    heads = ["dataset", "model", "learner", "seeds"] + [h for _, h, _ in SUMMARY_COLUMNS]
    out = ['<table class="results" id="comparison"><thead><tr>']
    out += [f'<th class="{"text" if i < 3 else "num"}">{html.escape(h)}</th>' for i, h in enumerate(heads)]
    out.append("</tr></thead><tbody>")
    for r in rows:
        swatch = f'<span class="swatch" style="background:{colours[r["label"]]}"></span>'
        cells = [f'<td class="text">{html.escape(r["data"])}</td>',
                 f'<td class="text">{swatch}{html.escape(r["label"])}</td>',
                 f'<td class="text">{html.escape(r["learner"])}</td>', f'<td>{r["seeds"]}</td>']
        cells += [f'<td data-key="{k}">{html.escape(format_cell(r, k, f))}</td>' for k, _, f in SUMMARY_COLUMNS]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


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


def write_report(out_dir: str | Path, *, uri: str | None = None, experiments: list[str] | None = None,
                 run_ids: list[str] | None = None, confusion_run: str | None = None, png: bool = True,
                 echo: Echo = print) -> Path:
    """Read runs from MLflow and write ``report.html`` (and PNGs) into `out_dir`; return the page."""
    import plotly.offline

    from .config import TrackingConfig
    from .tracking import store_uri

    uri = uri or store_uri(TrackingConfig())
    client = _client(uri)
    runs, sweeps = load_runs(client, experiments, run_ids)
    if not runs and not sweeps:
        where = ", ".join(experiments) if experiments else "any experiment"
        raise EchoesError(f"no finished runs in {where} of {uri} — run `echoes compare` or `echoes sweep` first")
    rows = summarize([r.result() for r in runs])
    sweep_data = [(s, sweep_points(s)) for s in sweeps]
    colours = palette([r.label for r in runs] + [p["label"] for _, pts in sweep_data for p in pts])

    figures: dict[str, Any] = {}
    if rows:
        figures["comparison_table"] = fig_table(rows)
        figures["accuracy_vs_time"] = fig_accuracy_vs(rows, colours, "train_seconds", "training time (s)")
        figures["accuracy_vs_params"] = fig_accuracy_vs(rows, colours, "trainable_params", "trainable parameters")
        figures["peak_memory"] = fig_memory(rows, colours)
        curves = fig_curves(runs, colours)
        if curves is not None:
            figures["learning_curves"] = curves
    chosen = _confusion_run(client, runs, sweeps, confusion_run)
    if chosen is not None:
        run, cm = chosen
        title = f"{run.label} · {run.data} · seed {run.seed} (run {run.run_id[:8]})"
        figures["confusion_matrix"] = fig_confusion(cm["matrix"], cm["classes"], title)
    notes: dict[str, str] = {}
    for sweep, points in sweep_data:
        if not sweep.space:
            continue
        figures[f"sweep_{sweep.name}_params"] = fig_sweep_params(sweep, points, colours)
        imp = importances(sweep, points)
        if imp:
            figures[f"sweep_{sweep.name}_importance"] = fig_importance(sweep, imp)
        else:
            notes[sweep.name] = "Parameter importances need at least 3 complete trials and a parameter that varies."

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>echoes report</title><style>{CSS}</style>",
             f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>",
             "<h1>echoes report</h1>",
             f"<p class='meta'>{time.strftime('%Y-%m-%d %H:%M')} · MLflow {html.escape(uri)} · experiments: "
             f"{html.escape(', '.join(sorted({r.experiment for r in runs} | {s.parent.experiment for s in sweeps})))}"
             f" · {len(runs)} runs, {len(sweeps)} sweeps</p>"]

    def figure(name: str) -> str:
        fig = figures[name]
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=name,
                          config={"displaylogo": False, "toImageButtonOptions": {"filename": name}})
        return f"<div class='fig'>{div}</div>"

    if rows:
        parts += ["<h2>Comparison</h2>",
                  "<p class='note'>Mean ± std over seeds; the latest finished run of each dataset × model × "
                  "seed.</p>", _table_html(rows, colours), "<div class='figs'>"]
        parts += [figure(n) for n in ("accuracy_vs_time", "accuracy_vs_params", "peak_memory", "learning_curves")
                  if n in figures]
        parts.append("</div>")
    if "confusion_matrix" in figures:
        parts += ["<h2>Confusion matrix</h2>", figure("confusion_matrix")]
    for sweep, points in sweep_data:
        parts.append(f"<h2>Sweep {html.escape(sweep.name)}</h2>")
        parts.append(f"<p class='note'>{_sweep_line(sweep, points)}</p>")
        parts += ["<div class='figs'>"] + [figure(n) for n in (f"sweep_{sweep.name}_params",
                                                               f"sweep_{sweep.name}_importance") if n in figures]
        parts.append("</div>")
        if sweep.name in notes:
            parts.append(f"<p class='note'>{html.escape(notes[sweep.name])}</p>")
    parts.append("</body></html>")
    page = out / "report.html"
    atomic_write(page, "\n".join(parts))
    if png:
        problem = write_pngs(figures, out)
        if problem:
            echo(problem)
    return page


def _sweep_line(sweep: SweepRuns, points: list[dict[str, Any]]) -> str:
    counts = {s: sum(p["state"] == s for p in points) for s in ("complete", "pruned", "failed", "stopped")}
    text = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    done = [p for p in points if p["state"] == "complete" and p["value"] is not None]
    if done:
        best = (max if sweep.maximize else min)(done, key=lambda p: p["value"])
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        text += f". Best: trial {best['trial']}, {sweep.objective} {best['value']:.4f} ({params})"
    return html.escape(f"{len(points)} trials: {text}.")


def _confusion_run(client: Any, runs: list[Run], sweeps: list[SweepRuns],
                   chosen: str | None) -> tuple[Run, dict[str, Any]] | None:
    """The run asked for, else the comparison's best test accuracy, with its confusion matrix."""
    candidates = runs + [t for s in sweeps for t in s.trials if t.status == "FINISHED"]
    if chosen:
        match = [r for r in candidates if r.run_id.startswith(chosen)]
        if not match:
            raise EchoesError(f"run '{chosen}' is not among the report's finished runs — pass one of its run ids")
        run = match[0]
    elif candidates:
        run = max(candidates, key=lambda r: r.metrics.get("test_accuracy", -1))
    else:
        return None
    cm = _artifact_json(client, run.run_id, "confusion_matrix.json")
    return (run, cm) if cm else None


__all__ = ["Run", "SweepRuns", "load_runs", "palette", "pareto", "write_report"]
