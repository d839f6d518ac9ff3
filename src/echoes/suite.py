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

DEFAULT_SUITE = Path("configs/suites/quick.yaml")
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


def find_suite(path: str | None) -> Path:
    if path is None:
        return DEFAULT_SUITE
    p = Path(path)
    if not p.exists() and not p.suffix:
        named = Path("configs/suites") / f"{path}.yaml"
        if named.exists():
            return named
    return p


def load_suite(path: str | None, overrides: list[str]) -> Suite:
    p = find_suite(path)
    if path is None and not p.exists():
        raise EchoesError(f"default suite {p} not found — run from the echoes checkout or pass a suite file")
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

SUMMARY_COLUMNS = [
    ("test_accuracy", "test acc", "{:.3f}"),
    ("train_seconds", "train s", "{:.2f}"),
    ("inference_seconds_per_sample", "infer ms/seq", None),
    ("trainable_params", "trainable", "{:,.0f}"),
    ("peak_memory_mb", "peak MB", "{:.0f}"),
]


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, label): mean and std over seeds of each measurement."""
    groups: OrderedDict[tuple[str, str], list[dict[str, Any]]] = OrderedDict()
    for r in results:
        groups.setdefault((r["data"], r["label"]), []).append(r)
    rows = []
    for (data, label), rs in groups.items():
        row: dict[str, Any] = {"data": data, "label": label, "learner": rs[0]["learner"], "seeds": len(rs),
                               "framewise": bool(rs[0].get("framewise"))}
        for key, _, _ in SUMMARY_COLUMNS + [("val_accuracy", "", ""), ("total_params", "", ""),
                                           ("test_top5", "", ""), ("train_accuracy", "", "")]:
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
    if key == "inference_seconds_per_sample":
        mean, std, fmt = mean * 1e3, std * 1e3, "{:.3f}"
    text = fmt.format(mean)
    if row["seeds"] > 1 and key in ("test_accuracy", "train_seconds", "peak_memory_mb"):
        text += " ± " + fmt.format(std)
    return text


def format_table(rows: list[dict[str, Any]]) -> str:
    headers = ["dataset", "model", "learner", "seeds"] + [h for _, h, _ in SUMMARY_COLUMNS]
    body = [
        [r["data"] + (" [frames]" if r.get("framewise") else ""), r["label"], r["learner"], str(r["seeds"])]
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
        if previous is not None and r["data"] != previous:
            out.append("")
        previous = r["data"]
        out.append(line(b))
    if any(r.get("framewise") for r in rows):
        out.append("\n[frames]: test acc is framewise accuracy over labelled frames (frame error rate = 1 − acc)")
    return "\n".join(out)


CSV_KEYS = [
    "data", "label", "model", "learner", "seed", "test_accuracy", "test_top5", "val_accuracy",
    "train_accuracy", "overfit_gap", "train_seconds", "train_seconds_per_epoch", "epochs",
    "convergence_epoch", "inference_seconds_per_batch", "inference_seconds_per_sample",
    "peak_memory_mb", "trainable_params", "total_params", "mlflow_run_id",
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

    def atomic(name: str, text: str) -> None:
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)

    from io import StringIO

    buf = StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_KEYS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(results)
    atomic("runs.csv", buf.getvalue())
    atomic("runs.json", json.dumps(_jsonable(results), indent=2, default=str))
    atomic("summary.json", json.dumps(summary, indent=2, default=str))
    atomic("table.txt", summary["table"] + "\n")
    return summary


def run_suite(suite: Suite, *, out_dir: str | None = None, echo: Any = print) -> dict[str, Any]:
    from .api import load_data, train
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
            datasets[key] = load_data(cfg.data)
            echo(f"data  {datasets[key].describe()}")
        result = train(cfg, dataset=datasets[key], experiment=suite.experiment)
        results.append(result)
        echo(f"[{i}/{len(suite.runs)}] {result['label']:<16} {cfg.data.source:<22} seed {cfg.seed}  "
             f"test acc {result['test_accuracy']:.3f}  train {result['train_seconds']:.2f}s")
        summary = write_outputs(out, suite, results)  # after every run: nothing finished is lost
    summary["tracking_uri"] = store_uri(first.tracking) if first.tracking.enabled else None  # for the report
    return summary
