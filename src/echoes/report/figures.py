"""The report's figures, drawn with plotly from plain data: result rows (``Run.result()`` or
``RunResult.row()`` plus a ``curve``), :class:`SweepData` and :class:`Confusion` — no MLflow.

Each model label keeps one colour in every figure.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..run import Metric, Tag
from ..suite import SEEDS, TABLE_IDENTITY, format_cell, summarize, table_columns
from .data import CURVE, Confusion, SweepData

FIG_WIDTH, FIG_HEIGHT = 740, 440  # two figures side by side on a wide screen
IMPORTANCE_NOTE = "Parameter importances need at least 3 complete trials and a parameter that varies."


@dataclass
class Figures:
    """What the page shows: summary rows, one colour per label, the figures by name, notes per sweep."""

    rows: list[dict[str, Any]]
    colours: dict[str, str]
    figures: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def build_figures(results: list[dict[str, Any]], sweeps: list[SweepData], confusion: Confusion | None) -> Figures:
    """Every figure of the report, from plain result rows, sweeps and a confusion matrix."""
    rows = summarize(results)
    colours = palette([r[Tag.LABEL] for r in results] + [p["label"] for s in sweeps for p in s.points])
    out = Figures(rows, colours)
    if rows:
        out.figures["comparison_table"] = fig_table(rows)
        out.figures["accuracy_vs_time"] = fig_accuracy_vs(rows, colours, Metric.TRAIN_SECONDS, "training time (s)")
        out.figures["accuracy_vs_params"] = fig_accuracy_vs(rows, colours, Metric.TRAINABLE_PARAMS,
                                                            "trainable parameters")
        out.figures["peak_memory"] = fig_memory(rows, colours)
        gap = fig_overfitting(rows, colours)
        if gap is not None:
            out.figures["overfitting_gap"] = gap
        curves = fig_curves(results, colours)
        if curves is not None:
            out.figures["learning_curves"] = curves
    if confusion is not None:
        out.figures["confusion_matrix"] = fig_confusion(confusion)
    for sweep in sweeps:
        if not sweep.space:
            continue
        out.figures[f"sweep_{sweep.name}_params"] = fig_sweep_params(sweep, colours)
        imp = importances(sweep)
        if imp:
            out.figures[f"sweep_{sweep.name}_importance"] = fig_importance(sweep, imp)
        else:
            out.notes[sweep.name] = IMPORTANCE_NOTE
    return out


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


def best_point(sweep: SweepData) -> dict[str, Any] | None:
    """The complete trial with the best objective, or None."""
    done = [p for p in sweep.points if p["state"] == "complete" and p["value"] is not None]
    return (max if sweep.maximize else min)(done, key=lambda p: p["value"]) if done else None


def _grid(n: int, titles: list[str], **kwargs: Any) -> tuple[Any, Callable[[int], dict[str, int]]]:
    """A figure with n panels (up to 3 a row; 4 as 2×2) and where panel i sits."""
    from plotly.subplots import make_subplots

    cols = 2 if n == 4 else min(n, 3)
    rows = math.ceil(n / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, **kwargs)
    fig.update_layout(width=FIG_WIDTH, height=max(FIG_HEIGHT, 340 * rows), template="plotly_white",
                      margin={"l": 60, "r": 20, "t": 70, "b": 50})
    return fig, lambda i: {"row": i // cols + 1, "col": i % cols + 1}


def _datasets(rows: list[dict[str, Any]]) -> list[str]:
    return list(OrderedDict.fromkeys(r[Tag.DATA] for r in rows))


def fig_table(rows: list[dict[str, Any]]) -> Any:
    import plotly.graph_objects as go

    columns = table_columns(rows)
    headers = TABLE_IDENTITY + [h for _, h, _ in columns]
    cells = [[r[Tag.DATA] for r in rows], [r[Tag.LABEL] for r in rows], [r[Tag.LEARNER] for r in rows],
             [str(r[SEEDS]) for r in rows]] + [[format_cell(r, k, f) for r in rows] for k, _, f in columns]
    widths = [max(len(h), *(len(c) for c in col)) + 2 for h, col in zip(headers, cells, strict=True)]
    fig = go.Figure(go.Table(columnwidth=widths, cells={"values": cells, "align": "left", "height": 26},
                             header={"values": headers, "fill_color": "#e8ecf3", "align": "left"}))
    fig.update_layout(width=min(1600, 9 * sum(widths)), height=110 + 27 * len(rows),
                      margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      title="Comparison (mean ± std over seeds)")
    return fig


def fig_accuracy_vs(rows: list[dict[str, Any]], colours: dict[str, str], key: str, title: str) -> Any:
    """Test accuracy against a cost (log x) per dataset; the Pareto front dashed and ringed."""
    import plotly.graph_objects as go

    acc = Metric.TEST_ACCURACY
    datasets = _datasets(rows)
    fig, cell = _grid(len(datasets), datasets)
    shown: set[str] = set()
    for i, data in enumerate(datasets):
        pts = [r for r in rows if r[Tag.DATA] == data and r.get(key, 0) > 0 and acc in r]
        for r in pts:
            label = r[Tag.LABEL]
            fig.add_trace(go.Scatter(
                x=[r[key]], y=[r[acc]], mode="markers", name=label, legendgroup=label,
                showlegend=label not in shown, marker={"color": colours[label], "size": 11},
                error_y={"type": "data", "array": [r.get(f"{acc}_std", 0)], "thickness": 1},
                hovertemplate=f"{label}<br>{title} %{{x:.3g}}<br>test acc %{{y:.3f}}<extra></extra>",
            ), **cell(i))
            shown.add(label)
        front = [pts[j] for j in pareto([(r[key], r[acc]) for r in pts])]
        if front:
            fig.add_trace(go.Scatter(
                x=[r[key] for r in front], y=[r[acc] for r in front], mode="lines+markers",
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

    mem = Metric.PEAK_MEMORY_MB
    fig = go.Figure()
    for label in sorted({r[Tag.LABEL] for r in rows}):
        rs = [r for r in rows if r[Tag.LABEL] == label and mem in r]
        fig.add_trace(go.Bar(x=[r[Tag.DATA] for r in rs], y=[r[mem] for r in rs], name=label,
                             marker_color=colours[label],
                             error_y={"type": "data", "array": [r.get(f"{mem}_std", 0) for r in rs]}))
    fig.update_layout(title="Peak memory while training", barmode="group", yaxis_title="MB", width=FIG_WIDTH,
                      height=FIG_HEIGHT, template="plotly_white")
    return fig


def fig_overfitting(rows: list[dict[str, Any]], colours: dict[str, str]) -> Any | None:
    """Training against validation accuracy per model (the action's with several label heads): the gap
    is the distance below the diagonal — the diagnostic that tells overfitting from underfitting."""
    import plotly.graph_objects as go

    train, val = Metric.TRAIN_ACCURACY, Metric.VAL_ACCURACY
    with_both = [r for r in rows if r.get(train) is not None and r.get(val) is not None]
    if not with_both:
        return None
    datasets = _datasets(with_both)
    fig, cell = _grid(len(datasets), datasets)
    shown: set[str] = set()
    for i, data in enumerate(datasets):
        pts = [r for r in with_both if r[Tag.DATA] == data]
        lo = min(0.0, *(min(r[train], r[val]) for r in pts))
        fig.add_trace(go.Scatter(x=[lo, 1], y=[lo, 1], mode="lines", line={"dash": "dot", "color": "#999"},
                                 name="no gap", legendgroup="diag", showlegend=i == 0, hoverinfo="skip"), **cell(i))
        for r in pts:
            label = r[Tag.LABEL]
            fig.add_trace(go.Scatter(
                x=[r[train]], y=[r[val]], mode="markers", name=label, legendgroup=label,
                showlegend=label not in shown, marker={"color": colours[label], "size": 11},
                hovertemplate=f"{label}<br>train %{{x:.3f}}<br>val %{{y:.3f}}<br>gap {r[train] - r[val]:+.3f}"
                              "<extra></extra>"), **cell(i))
            shown.add(label)
        fig.update_xaxes(title_text="train accuracy", **cell(i))
        fig.update_yaxes(title_text="val accuracy" if cell(i)["col"] == 1 else None, **cell(i))
    fig.update_layout(title="Overfitting gap: train vs validation accuracy (below the diagonal: overfitting)")
    return fig


def fig_curves(results: list[dict[str, Any]], colours: dict[str, str]) -> Any | None:
    """Validation accuracy per epoch: mean over seeds, band from the lowest to the highest seed."""
    import plotly.graph_objects as go

    with_curves = [r for r in results if len(r.get(CURVE) or ()) > 1]
    if not with_curves:
        return None
    datasets = _datasets(with_curves)
    fig, cell = _grid(len(datasets), datasets)
    shown: set[str] = set()
    for i, data in enumerate(datasets):
        for label in sorted({r[Tag.LABEL] for r in with_curves if r[Tag.DATA] == data}):
            curves = [r[CURVE] for r in with_curves if r[Tag.DATA] == data and r[Tag.LABEL] == label]
            epochs = max(len(c) for c in curves)
            stats = [[c[e] for c in curves if len(c) > e] for e in range(epochs)]
            x = list(range(1, epochs + 1))
            lo, hi = [min(s) for s in stats], [max(s) for s in stats]
            fig.add_trace(go.Scatter(x=x + x[::-1], y=hi + lo[::-1], mode="lines", fill="toself", opacity=0.18,
                                     fillcolor=colours[label], line={"width": 0}, hoverinfo="skip",
                                     showlegend=False, legendgroup=label), **cell(i))
            fig.add_trace(go.Scatter(x=x, y=[float(np.mean(s)) for s in stats], mode="lines", name=label,
                                     legendgroup=label, showlegend=label not in shown,
                                     line={"color": colours[label]}), **cell(i))
            shown.add(label)
        fig.update_xaxes(title_text="epoch", **cell(i))
        fig.update_yaxes(title_text="val accuracy" if cell(i)["col"] == 1 else None, **cell(i))
    fig.update_layout(title="Learning curves (mean over seeds; band: seed spread)")
    return fig


def fig_confusion(confusion: Confusion) -> Any:
    """Rows normalised to the true class; counts written in the cells."""
    import plotly.graph_objects as go

    m, classes = np.asarray(confusion.matrix, dtype=float), confusion.classes
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig = go.Figure(go.Heatmap(z=norm, x=classes, y=classes, colorscale="Blues", zmin=0, zmax=1,
                               text=m.astype(int), texttemplate="%{text}" if len(classes) <= 20 else None,
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{text} (%{z:.0%})<extra></extra>"))
    size = min(900, 260 + 28 * len(classes))
    fig.update_layout(title=confusion.title, xaxis_title="predicted", yaxis_title="true",
                      width=max(FIG_WIDTH, size + 120), height=max(FIG_HEIGHT, size),
                      yaxis={"autorange": "reversed"}, template="plotly_white")
    return fig


def importances(sweep: SweepData) -> dict[str, float] | None:
    """fANOVA importance of each parameter over the complete trials (None: too few to say)."""
    import optuna

    done = [p for p in sweep.points if p["state"] == "complete" and p["value"] is not None
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


def fig_sweep_params(sweep: SweepData, colours: dict[str, str]) -> Any:
    """The objective against each parameter: one panel per parameter, the best trial starred."""
    import optuna.distributions as od
    import plotly.graph_objects as go

    keys = list(sweep.space)
    fig, cell = _grid(len(keys), keys, shared_yaxes=True)
    valued = [p for p in sweep.points if p["value"] is not None]
    best = best_point(sweep)
    for i, key in enumerate(keys):
        categorical = isinstance(sweep.space[key], od.CategoricalDistribution)

        def x(p: dict[str, Any]) -> Any:
            return str(p["params"][key]) if categorical else p["params"][key]  # noqa: B023

        for state, symbol in (("complete", "circle"), ("pruned", "x"), ("stopped", "x")):
            ps = [p for p in valued if p["state"] == state]
            if ps:
                fig.add_trace(go.Scatter(
                    x=[x(p) for p in ps], y=[p["value"] for p in ps], mode="markers", name=state,
                    legendgroup=state, showlegend=i == 0, text=[f"trial {p['trial']}" for p in ps],
                    marker={"symbol": symbol, "size": 9, "opacity": 0.85,
                            "color": [colours.get(p["label"], "#1f77b4") if state == "complete" else "#999"
                                      for p in ps]},
                    hovertemplate="%{text}<br>%{x}: %{y:.4f}<extra></extra>"), **cell(i))
        if best is not None:
            fig.add_trace(go.Scatter(
                x=[x(best)], y=[best["value"]], mode="markers", name=f"best (trial {best['trial']})",
                legendgroup="best", showlegend=i == 0,
                marker={"symbol": "star", "size": 16, "color": "gold", "line": {"color": "#333", "width": 1}},
            ), **cell(i))
        if categorical or sweep.space[key].log:
            fig.update_xaxes(type="category" if categorical else "log", **cell(i))
        fig.update_yaxes(title_text=sweep.objective if cell(i)["col"] == 1 else None, **cell(i))
    fig.update_layout(title=f"Sweep {sweep.name}: {sweep.objective} per parameter value")
    return fig


def fig_importance(sweep: SweepData, imp: dict[str, float]) -> Any:
    import plotly.graph_objects as go

    keys = sorted(imp, key=imp.get)
    fig = go.Figure(go.Bar(x=[imp[k] for k in keys], y=keys, orientation="h", marker_color="#4c78a8",
                           text=[f"{imp[k]:.2f}" for k in keys], textposition="auto"))
    fig.update_layout(title=f"Sweep {sweep.name}: parameter importance for {sweep.objective} (fANOVA)",
                      xaxis_title="importance", width=FIG_WIDTH, height=max(260, 80 + 50 * len(keys)),
                      template="plotly_white", margin={"l": 160})
    return fig
