import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution
from PIL import Image

from echoes.cli import main
from echoes.errors import EchoesError
from echoes.report import (
    CURVE,
    Confusion,
    SweepData,
    build_figures,
    importances,
    palette,
    pareto,
    read_report,
    write_report,
)
from echoes.report.figures import fig_accuracy_vs, fig_curves, fig_memory
from echoes.run import Metric, Tag
from echoes.suite import summarize
from echoes.sweep import load_sweep, run_sweep

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
FIGURES = ["comparison_table", "accuracy_vs_time", "accuracy_vs_params", "peak_memory", "learning_curves",
           "overfitting_gap", "confusion_matrix"]


@pytest.fixture(scope="module")
def store(tmp_path_factory, migrated_store):
    """One small MLflow store: a sweep, then a 2-model × 2-seed compare (which writes its report),
    then `echoes report` over everything."""
    root = tmp_path_factory.mktemp("report")
    (root / "echoes-runs").mkdir()
    shutil.copyfile(migrated_store, root / "echoes-runs" / "mlflow.db")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 8, 3)).astype(np.float32)
    y = (x[:, 0, 0] > 0).astype(int)
    np.savez(root / "tiny.npz", X_train=x[:40], y_train=y[:40], X_test=x[40:], y_test=y[40:])
    base = {"data": "npz:tiny.npz", "train": {"epochs": 3, "batch_size": 16, "lr": 0.02, "patience": None}}
    (root / "suite.yaml").write_text(yaml.safe_dump({
        "name": "mini", "base": base, "seeds": [0, 1], "datasets": ["npz:tiny.npz"],
        "models": [{"name": "gru", "hidden_size": 8}, {"name": "rnn", "hidden_size": 8}]}))
    (root / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "lr", "base": {**base, "model": {"name": "gru", "hidden_size": 8}}, "sampler": "grid",
        "space": {"train.lr": [0.003, 0.03, 0.3]}}))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        run_sweep(load_sweep("sweep.yaml"), echo=lambda _: None)
        printed = []
        mp.setattr("builtins.print", lambda *a, **k: printed.append(" ".join(map(str, a))))
        assert main(["compare", "suite.yaml", "--out", "cmp"]) == 0
        assert main(["report", "--out", "all", "--no-png"]) == 0
    return {"root": root, "printed": printed, "uri": f"sqlite:///{root / 'echoes-runs' / 'mlflow.db'}"}


class Tables(HTMLParser):
    """The rows of <table id="comparison"> as lists of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.rows, self.inside, self.cell = [], False, None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and ("id", "comparison") in attrs:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th"):
            self.rows[-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def test_compare_writes_its_report_and_prints_the_path(store):
    out = store["root"] / "cmp" / "report"
    assert f"report: {Path('cmp') / 'report' / 'report.html'}" in store["printed"]
    page = (out / "report.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing fetched: plotly.js is inlined
    assert "Plotly.newPlot" in page and len(page) > 1_000_000
    for name in FIGURES:
        img = Image.open(out / f"{name}.png").convert("L")
        pixels = np.asarray(img)
        assert img.width >= 600 and pixels.std() > 10, name  # drawn, not blank
        assert (pixels < 128).mean() > 0.002, name  # has dark ink (text, markers)


def test_numbers_in_the_page_table_equal_mlflow(store):
    parser = Tables()
    parser.feed((store["root"] / "cmp" / "report" / "report.html").read_text())
    header, *rows = parser.rows
    assert header[:5] == ["dataset", "model", "learner", "seeds", "test acc"]
    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("echoes-mini")
    runs = client.search_runs([exp.experiment_id])
    assert {r[1] for r in rows} == {"gru", "rnn"} and len(runs) == 4
    for row in rows:
        cell = dict(zip(header, row, strict=True))
        mine = [r for r in runs if r.data.tags["label"] == cell["model"]]
        assert cell["seeds"] == "2" and len(mine) == 2

        def mean_std(key, scale=1.0):
            values = np.array([r.data.metrics[key] for r in mine]) * scale  # noqa: B023
            return values.mean(), values.std(ddof=1)

        acc, acc_sd = mean_std("test_accuracy")
        assert cell["test acc"] == f"{acc:.3f} ± {acc_sd:.3f}"
        secs, secs_sd = mean_std("train_seconds")
        assert cell["train s"] == f"{secs:.2f} ± {secs_sd:.2f}"
        assert cell["infer ms/seq"] == f"{mean_std('inference_seconds_per_sample', 1e3)[0]:.3f}"
        assert cell["trainable"] == f"{mean_std('trainable_params')[0]:,.0f}"
        mem, mem_sd = mean_std("peak_memory_mb")
        assert cell["peak MB"] == f"{mem:.0f} ± {mem_sd:.0f}"


def test_page_renders_in_headless_chromium(store, tmp_path):
    page = store["root"] / "all" / "report.html"
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--hide-scrollbars"]
    shot = tmp_path / "page.png"
    dom = subprocess.run([*flags, "--window-size=1600,2400", f"--screenshot={shot}", "--dump-dom", page.as_uri()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.std() > 20 and (pixels.sum(2) < 300).mean() > 0.005  # not blank: text and lines
    gru = tuple(int(palette(["gru", "rnn"])["gru"][i: i + 2], 16) for i in (1, 3, 5))
    assert (np.abs(pixels - gru).sum(2) < 30).sum() > 2000  # the model's colour fills plots, not just a swatch
    divs = dict(re.findall(r'<div id="([a-z_0-9.-]+)" class="(plotly-graph-div[^"]*)"', dom))
    assert {"accuracy_vs_time", "accuracy_vs_params", "peak_memory", "learning_curves", "overfitting_gap",
            "confusion_matrix", "sweep_lr_params", "sweep_lr_importance"} == set(divs)
    assert all("js-plotly-plot" in cls for cls in divs.values())  # plotly.js drew every figure


def test_one_colour_per_model_in_every_figure(store):
    runs = read_report(store["uri"], ["echoes-mini"]).runs
    results = [r.result() for r in runs]
    rows = summarize(results)
    colours = palette([r.label for r in runs])
    assert len(set(colours.values())) == 2
    figs = [fig_accuracy_vs(rows, colours, "train_seconds", "s"), fig_memory(rows, colours),
            fig_curves(results, colours)]
    seen = {}
    for fig in figs:
        for trace in fig.data:
            if trace.legendgroup in colours and trace.name == trace.legendgroup:
                colour = trace.marker.color if trace.type == "bar" or trace.mode == "markers" else trace.line.color
                seen.setdefault(trace.name, set()).add(colour)
    assert seen == {label: {c} for label, c in colours.items()}


def test_sweep_section_has_every_trial_and_importances(store):
    (sweep,) = read_report(store["uri"], ["sweep-lr"]).sweeps
    points = sweep.points
    assert sorted(p["params"]["train.lr"] for p in points) == [0.003, 0.03, 0.3]
    assert all(p["state"] == "complete" and 0 <= p["value"] <= 1 for p in points)
    assert set(importances(sweep)) == {"train.lr"}
    page = (store["root"] / "all" / "report.html").read_text()
    assert "Sweep lr" in page and "3 trials: 3 complete" in page


def test_figures_from_plain_rows_without_mlflow():
    def result(label, seed, acc, seconds, params, curve):
        return {Tag.DATA: "npz:toy", Tag.LABEL: label, Tag.LEARNER: "gradient", Tag.SEED: seed,
                Metric.TEST_ACCURACY: acc, Metric.TRAIN_SECONDS: seconds, Metric.TRAINABLE_PARAMS: params,
                Metric.PEAK_MEMORY_MB: 100.0 + seed, Metric.INFERENCE_SECONDS_PER_SAMPLE: 1e-4, CURVE: curve,
                Metric.TRAIN_ACCURACY: min(1.0, acc + 0.2), Metric.VAL_ACCURACY: acc - 0.05}

    results = [result("gru", 0, 0.8, 2.0, 500, [0.5, 0.7]), result("gru", 1, 0.9, 4.0, 500, [0.6, 0.9]),
               result("esn", 0, 0.7, 0.5, 50, [0.7]), result("big", 0, 0.75, 9.0, 9000, [0.4, 0.5, 0.6])]
    space = {"train.lr": FloatDistribution(1e-3, 1e-1, log=True), "model.hidden_size": CategoricalDistribution([4, 8])}
    points = [{"trial": i, "state": "complete", "value": v, "params": {"train.lr": lr, "model.hidden_size": h},
               "label": "gru"} for i, (v, lr, h) in enumerate([(0.6, 0.001, 4), (0.9, 0.01, 8), (0.7, 0.05, 4)])]
    points.append({"trial": 3, "state": "pruned", "value": 0.2, "params": {"train.lr": 0.09, "model.hidden_size": 8},
                   "label": "gru"})
    sweep = SweepData("lr", Metric.VAL_ACCURACY, True, "sweep-lr", space, points)
    figs = build_figures(results, [sweep], Confusion("gru", [[3, 1], [0, 4]], ["a", "b"]))

    assert set(figs.figures) == {*FIGURES, "sweep_lr_params", "sweep_lr_importance"} and not figs.notes
    assert [(r[Tag.LABEL], r["seeds"], r[Metric.TEST_ACCURACY]) for r in figs.rows] == [
        ("gru", 2, pytest.approx(0.85)), ("esn", 1, 0.7), ("big", 1, 0.75)]
    front = next(t for t in figs.figures["accuracy_vs_params"].data if t.name == "Pareto front")
    assert list(front.x) == [50, 500] and list(front.y) == [0.7, pytest.approx(0.85)]  # big: costlier, worse
    curves = {t.name: list(t.y) for t in figs.figures["learning_curves"].data if t.showlegend is not False}
    assert curves == {"big": [0.4, 0.5, 0.6], "gru": [pytest.approx(0.55), pytest.approx(0.8)]}  # esn: 1 epoch
    heat = figs.figures["confusion_matrix"].data[0]
    assert np.allclose(heat.z, [[0.75, 0.25], [0, 1]]) and heat.text.tolist() == [[3, 1], [0, 4]]
    panels = figs.figures["sweep_lr_params"].data
    star = next(t for t in panels if t.name == "best (trial 1)")
    assert list(star.x) == [0.01] and list(star.y) == [0.9]
    assert [list(t.x) for t in panels if t.name == "pruned"] == [[0.09], ["8"]]  # categorical: as text
    assert set(importances(sweep)) == {"train.lr", "model.hidden_size"}
    assert figs.colours == palette(["big", "esn", "gru"])
    gap = {t.name: (t.x[0], t.y[0]) for t in figs.figures["overfitting_gap"].data if t.name != "no gap"}
    assert gap == {"gru": (pytest.approx(1.0), pytest.approx(0.8)), "esn": (pytest.approx(0.9), pytest.approx(0.65)),
                   "big": (pytest.approx(0.95), pytest.approx(0.7))}


def test_tables_show_each_label_head_and_the_action():
    from echoes.suite import format_table

    def result(label, seed, verb, noun, action):
        return {Tag.DATA: "epic100:/data", Tag.LABEL: label, Tag.LEARNER: "gradient", Tag.SEED: seed,
                Tag.HEADS: "verb,noun", Metric.TEST_ACCURACY: action, "test_action_accuracy": action,
                "test_verb_accuracy": verb, "test_noun_accuracy": noun, "test_verb_top5": 0.9,
                "test_noun_top5": 0.8, "test_action_top5": 0.7}

    rows = summarize([result("lstm", 0, 0.6, 0.4, 0.3), result("lstm", 1, 0.7, 0.5, 0.35)])
    table = format_table(rows).splitlines()
    assert table[0].split()[4:11] == ["test", "acc", "verb", "top1", "verb", "top5", "noun"]
    assert "0.650" in table[2] and "0.450" in table[2] and "0.325" in table[2] and "0.700" in table[2]
    assert "action's (every head right)" in "\n".join(table)


def test_pareto_front():
    # cost (lower is better), accuracy (higher is better)
    points = [(10, 0.9), (1, 0.5), (2, 0.4), (5, 0.9), (3, 0.7), (20, 0.95)]
    assert pareto(points) == [1, 4, 3, 5]


def test_report_errors_say_what_to_fix(store, tmp_path, capsys):
    with pytest.raises(EchoesError, match="unknown experiment 'echoes-mni' — did you mean 'echoes-mini'"):
        write_report(tmp_path, uri=store["uri"], experiments=["echoes-mni"])
    with pytest.raises(EchoesError, match="no MLflow store"):
        write_report(tmp_path, uri=f"sqlite:///{tmp_path / 'none.db'}")
    assert main(["report", "--uri", store["uri"], "--run", "nope", "--out", str(tmp_path), "--no-png"]) == 2
    assert "run 'nope' is not among" in capsys.readouterr().err
