"""Suites: models × datasets × seeds from one YAML file, run and summarised.

```yaml
name: quick
base: {train: {epochs: 30}}          # settings shared by every run
models:
  - lstm                             # a model name
  - {name: gru, hidden_size: 64}     # model options; may add label, learner, train
datasets: [uea:BasicMotions, {source: synthetic:motion, n_train: 200, train: {batch_size: 64}}]
seeds: [0, 1]
```
Overrides: ``seeds=[0]``, ``models=[lstm]``, ``datasets=[...]`` replace the lists;
any other ``KEY=VALUE`` applies to every run (e.g. ``train.epochs=5``).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import ExperimentConfig, build_config, deep_merge, parse_overrides, read_yaml
from .errors import EchoesError
from .run import Metric, Tag
from .utils import atomic_write, find_config, packaged_configs

DEFAULT_SUITE = "quick"
SUITE_KEYS = {"name", "experiment", "base", "models", "datasets", "seeds", "description"}
LIST_KEYS = ("models", "datasets", "seeds")


@dataclass
class Suite:
    name: str
    experiment: str
    runs: list[ExperimentConfig] = field(default_factory=list)


def _model_entry(entry: Any) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"model": {"name": entry}}
    if not isinstance(entry, dict) or "name" not in entry:
        raise EchoesError(f"suite model entry {entry!r} must be a name or a mapping with 'name'")
    entry = dict(entry)
    out: dict[str, Any] = {}
    for key in ("learner", "train", "data", "tracking"):
        if key in entry:
            out[key] = entry.pop(key)
    if "label" in entry:
        out["name"] = entry.pop("label")
    out["model"] = entry
    return out


def _data_entry(entry: Any) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"data": entry}
    if isinstance(entry, dict):  # data options, plus per-dataset train settings
        entry = dict(entry)
        return {"train": entry.pop("train")} | {"data": entry} if "train" in entry else {"data": entry}
    raise EchoesError(f"suite dataset entry {entry!r} must be a source like uea:BasicMotions or a mapping")


def load_suite(path: str | None, overrides: list[str]) -> Suite:
    p = find_config("suites", path or DEFAULT_SUITE)
    if not p.is_file():
        raise EchoesError(f"suite '{path}' not found — give a YAML path or one of: "
                          + ", ".join(packaged_configs("suites")))
    raw = read_yaml(p)
    unknown_keys = set(raw) - SUITE_KEYS
    if unknown_keys:
        from .errors import did_you_mean

        key = sorted(unknown_keys)[0]
        raise EchoesError(f"suite {p}: unknown key '{key}' — {did_you_mean(key, SUITE_KEYS)}")
    parsed = parse_overrides(overrides)
    for key in LIST_KEYS:
        if key in parsed:
            value = parsed.pop(key)
            raw[key] = value if isinstance(value, list) else [value]
    base = deep_merge(raw.get("base") or {}, parsed)
    name = str(raw.get("name") or p.stem)
    models, datasets, seeds = raw.get("models") or [], raw.get("datasets") or [], raw.get("seeds") or [0]
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise EchoesError(f"suite {p}: seeds must be a list of integers, got {seeds!r}")
    runs = []
    for d in datasets:
        for m in models:
            for s in seeds:
                # base < dataset entry < model entry: the most specific setting wins
                merged = deep_merge(deep_merge(deep_merge(base, _data_entry(d)), _model_entry(m)), {"seed": s})
                runs.append(build_config(merged))
    return Suite(name=name, experiment=str(raw.get("experiment") or f"echoes-{name}"), runs=runs)


# --- summarising -------------------------------------------------------------

SEEDS = "seeds"  # a summary row: how many seeds its means and stds cover
SUMMARY_COLUMNS = [
    (Metric.TEST_ACCURACY, "test acc", "{:.3f}"),
    (Metric.TRAIN_SECONDS, "train s", "{:.2f}"),
    (Metric.INFERENCE_SECONDS_PER_SAMPLE, "infer ms/seq", None),
    (Metric.TRAINABLE_PARAMS, "trainable", "{:,.0f}"),
    (Metric.PEAK_MEMORY_MB, "peak MB", "{:.0f}"),
]


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, label): mean and std over seeds of each measurement."""
    groups: OrderedDict[tuple[str, str], list[dict[str, Any]]] = OrderedDict()
    for r in results:
        groups.setdefault((r[Tag.DATA], r[Tag.LABEL]), []).append(r)
    rows = []
    for (data, label), rs in groups.items():
        row: dict[str, Any] = {Tag.DATA: data, Tag.LABEL: label, Tag.LEARNER: rs[0][Tag.LEARNER], SEEDS: len(rs),
                               Tag.FRAMEWISE: bool(rs[0].get(Tag.FRAMEWISE))}
        for key, _, _ in SUMMARY_COLUMNS + [(Metric.VAL_ACCURACY, "", ""), (Metric.TOTAL_PARAMS, "", ""),
                                           (Metric.TEST_TOP5, "", ""), (Metric.TRAIN_ACCURACY, "", "")]:
            values = [r[key] for r in rs if r.get(key) is not None]
            if values:
                row[key] = float(np.mean(values))
                row[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def format_cell(row: dict[str, Any], key: str, fmt: str | None) -> str:
    """One summary cell as the table shows it: mean, with ± std over seeds where it matters."""
    if key not in row:
        return "—"
    mean, std = row[key], row.get(f"{key}_std", 0.0)
    if key == Metric.INFERENCE_SECONDS_PER_SAMPLE:
        mean, std, fmt = mean * 1e3, std * 1e3, "{:.3f}"
    text = fmt.format(mean)
    if row[SEEDS] > 1 and key in (Metric.TEST_ACCURACY, Metric.TRAIN_SECONDS, Metric.PEAK_MEMORY_MB):
        text += " ± " + fmt.format(std)
    return text


def format_table(rows: list[dict[str, Any]]) -> str:
    headers = ["dataset", "model", "learner", "seeds"] + [h for _, h, _ in SUMMARY_COLUMNS]
    body = [
        [r[Tag.DATA] + (" [frames]" if r.get(Tag.FRAMEWISE) else ""), r[Tag.LABEL], r[Tag.LEARNER], str(r[SEEDS])]
        + [format_cell(r, k, f) for k, _, f in SUMMARY_COLUMNS]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    numeric = set(range(3, len(headers)))

    def line(cells: list[str]) -> str:
        cols = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in cols)

    out = [line(headers), "  ".join("-" * w for w in widths)]
    previous = None
    for r, b in zip(rows, body, strict=True):
        if previous is not None and r[Tag.DATA] != previous:
            out.append("")
        previous = r[Tag.DATA]
        out.append(line(b))
    if any(r.get(Tag.FRAMEWISE) for r in rows):
        out.append("\n[frames]: test acc is framewise accuracy over labelled frames (frame error rate = 1 − acc)")
    return "\n".join(out)


CSV_KEYS = [
    Tag.DATA, Tag.LABEL, Tag.MODEL, Tag.LEARNER, Tag.SEED, Metric.TEST_ACCURACY, Metric.TEST_TOP5,
    Metric.VAL_ACCURACY, Metric.TRAIN_ACCURACY, Metric.OVERFIT_GAP, Metric.TRAIN_SECONDS,
    Metric.TRAIN_SECONDS_PER_EPOCH, Metric.EPOCHS, Metric.CONVERGENCE_EPOCH, Metric.INFERENCE_SECONDS_PER_BATCH,
    Metric.INFERENCE_SECONDS_PER_SAMPLE, Metric.PEAK_MEMORY_MB, Metric.TRAINABLE_PARAMS, Metric.TOTAL_PARAMS,
    Tag.RUN_ID,
]


def _jsonable(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return [{k: clean(v) for k, v in r.items() if k != "history"} for r in results]


def write_outputs(out: Path, suite: Suite, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Write runs.csv, runs.json, summary.json, table.txt; each file replaced atomically."""
    rows = summarize(results)
    summary = {"suite": suite.name, "experiment": suite.experiment, "rows": rows,
               "runs": _jsonable(results), "table": format_table(rows), "out_dir": str(out)}

    from io import StringIO

    buf = StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_KEYS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(results)
    atomic_write(out / "runs.csv", buf.getvalue())
    atomic_write(out / "runs.json", json.dumps(_jsonable(results), indent=2, default=str))
    atomic_write(out / "summary.json", json.dumps(summary, indent=2, default=str))
    atomic_write(out / "table.txt", summary["table"] + "\n")
    return summary


def run_suite(suite: Suite, *, out_dir: str | None = None, echo: Any = print) -> dict[str, Any]:
    from .run import load_data, run_experiment
    from .tracking import ensure_store, store_uri

    first = suite.runs[0]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(out_dir) if out_dir else Path(first.tracking.results_dir) / "compare" / f"{suite.name}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    if first.tracking.enabled:
        ensure_store(store_uri(first.tracking))
    datasets: dict[str, Any] = {}
    results: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for i, cfg in enumerate(suite.runs, 1):
        key = json.dumps(cfg.data.model_dump(), sort_keys=True)
        if key not in datasets:
            datasets[key] = load_data(cfg)
            echo(f"data  {datasets[key].describe()}")
        result = run_experiment(cfg, datasets[key], experiment=suite.experiment)
        results.append(result.row())
        echo(f"[{i}/{len(suite.runs)}] {result.label:<16} {cfg.data.source:<22} seed {cfg.seed}  "
             f"test acc {result[Metric.TEST_ACCURACY]:.3f}  train {result[Metric.TRAIN_SECONDS]:.2f}s")
        summary = write_outputs(out, suite, results)  # after every run: nothing finished is lost
    summary["tracking_uri"] = store_uri(first.tracking) if first.tracking.enabled else None  # for the report
    return summary
