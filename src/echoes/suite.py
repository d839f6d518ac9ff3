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

A compare writes one folder, named from the suite and a hash of its resolved runs, and records
each run there as it ends (``runs.json``). The same command run again finds that folder and runs
only what is not finished; a failed run is recorded with its reason and the others go on.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import multiprocessing
import os
import re
import traceback
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import ExperimentConfig, build_config, deep_merge, parse_overrides, read_config_file
from .errors import EchoesError
from .run import Metric, Tag, resolved_config
from .utils import atomic_write

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
    p, raw = read_config_file("suites", path or DEFAULT_SUITE, SUITE_KEYS)
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


def head_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """With several label heads (EPIC's verb + noun): top-1 and top-5 of each head and of the action."""
    names = dict.fromkeys(h for r in rows for h in str(r.get(Tag.HEADS) or "").split(",") if h)
    tasks = [*names, "action"] if names else []
    return [(f"test_{t}_{m}", f"{t} {label}", "{:.3f}") for t in tasks for m, label in
            (("accuracy", "top1"), ("top5", "top5"))]


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, label): mean and std over seeds of each measurement."""
    groups: OrderedDict[tuple[str, str], list[dict[str, Any]]] = OrderedDict()
    for r in results:
        groups.setdefault((r[Tag.DATA], r[Tag.LABEL]), []).append(r)
    rows = []
    for (data, label), rs in groups.items():
        row: dict[str, Any] = {Tag.DATA: data, Tag.LABEL: label, Tag.LEARNER: rs[0][Tag.LEARNER], SEEDS: len(rs),
                               Tag.FRAMEWISE: bool(rs[0].get(Tag.FRAMEWISE)), Tag.HEADS: rs[0].get(Tag.HEADS) or ""}
        extra = [(Metric.VAL_ACCURACY, "", ""), (Metric.TOTAL_PARAMS, "", ""), (Metric.TEST_TOP5, "", ""),
                 (Metric.TRAIN_ACCURACY, "", "")]
        for key, _, _ in SUMMARY_COLUMNS + extra + head_columns(rs):
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


def table_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    """(key, header, format) of the measurement columns: the summary's, with each head's after test acc."""
    return SUMMARY_COLUMNS[:1] + head_columns(rows) + SUMMARY_COLUMNS[1:]


TABLE_IDENTITY = ["dataset", "model", "learner", "seeds"]  # the first columns of every comparison table


def format_table(rows: list[dict[str, Any]]) -> str:
    columns = table_columns(rows)
    headers = TABLE_IDENTITY + [h for _, h, _ in columns]
    body = [
        [r[Tag.DATA] + (" [frames]" if r.get(Tag.FRAMEWISE) else ""), r[Tag.LABEL], r[Tag.LEARNER], str(r[SEEDS])]
        + [format_cell(r, k, f) for k, _, f in columns]
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
    if head_columns(rows):
        out.append("\ntest acc: the action's (every head right); action top-k as EPIC-KITCHENS-100 scores it")
    if any(r.get(Tag.FRAMEWISE) for r in rows):
        out.append("\n[frames]: test acc is framewise accuracy over labelled frames (frame error rate = 1 − acc)")
    return "\n".join(out)


# --- the compare folder: its record, its lock ----------------------------------------------------------------------

STATUS, ERROR, RUN_KEY = "status", "error", "run_key"  # record columns: how a run ended, why it failed, which run
FINISHED, FAILED = "finished", "failed"
COMPARE_TAG, RUN_KEY_TAG = "compare_dir", "compare_run"  # MLflow tags: the folder a run belongs to, and its key

CSV_KEYS = [
    Tag.DATA, Tag.LABEL, Tag.MODEL, Tag.LEARNER, Tag.SEED, STATUS, Metric.TEST_ACCURACY, Metric.TEST_TOP5,
    Metric.VAL_ACCURACY, Metric.TRAIN_ACCURACY, Metric.OVERFIT_GAP, Metric.TRAIN_SECONDS,
    Metric.TRAIN_SECONDS_PER_EPOCH, Metric.EPOCHS, Metric.CONVERGENCE_EPOCH, Metric.INFERENCE_SECONDS_PER_BATCH,
    Metric.INFERENCE_SECONDS_PER_SAMPLE, Metric.PEAK_MEMORY_MB, Metric.TRAINABLE_PARAMS, Metric.TOTAL_PARAMS,
    Tag.RUN_ID, RUN_KEY, ERROR,
]


def run_key(cfg: ExperimentConfig) -> str:
    """A run's identity in its compare folder: a hash of its resolved config (defaults filled in)."""
    text = json.dumps(resolved_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def suite_key(suite: Suite) -> str:
    """The same suite with the same settings gets the same key, so the same command finds its folder."""
    text = json.dumps([suite.experiment, [run_key(c) for c in suite.runs]])
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _lock(folder: Path) -> int | None:
    """An exclusive lock on the folder, held until the process ends (or is killed); None if another holds it."""
    fd = os.open(folder / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def claim_folder(suite: Suite, out_dir: str | None, fresh: bool) -> tuple[Path, int]:
    """The folder this compare writes, locked: ``--out DIR``, else ``<results_dir>/compare/<name>-<key>``
    (the latest of ``-2``, ``-3``... when there are several) to resume, or a new one when ``fresh`` or when
    another compare holds the latest. A new folder is made with an exclusive mkdir, so no two compares share one."""
    key = suite_key(suite)
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        fd = _lock(out)
        if fd is None:
            raise EchoesError(f"another echoes compare is writing to {out} — wait for it, or choose another --out")
        manifest = out / "suite.json"
        other = json.loads(manifest.read_text()).get("key") if manifest.is_file() else None
        problem = ("holds the results of another suite or other settings" if other not in (None, key)
                   else "already holds results and --fresh starts over" if fresh and (out / "runs.json").exists()
                   else None)
        if problem:
            os.close(fd)
            raise EchoesError(f"--out {out} {problem} — choose an empty folder for --out")
        return out, fd
    root = Path(suite.runs[0].tracking.results_dir) / "compare"
    root.mkdir(parents=True, exist_ok=True)

    def folder(n: int) -> Path:
        return root / (f"{suite.name}-{key}" if n == 1 else f"{suite.name}-{key}-{n}")

    latest = 0
    while folder(latest + 1).is_dir():
        latest += 1
    n = latest if latest and not fresh else latest + 1
    while True:
        out = folder(n)
        try:
            out.mkdir(exist_ok=n == latest)
        except FileExistsError:  # made meanwhile by a compare started at the same moment
            n += 1
            continue
        fd = _lock(out)
        if fd is not None:
            return out, fd
        n += 1


def _recorded(out: Path, keys: set[str]) -> dict[str, dict[str, Any]]:
    """The finished runs this folder's record holds (failed ones run again)."""
    path = out / "runs.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    return {r[RUN_KEY]: r for r in rows if r.get(STATUS) == FINISHED and r.get(RUN_KEY) in keys}


def _close_unrecorded(uri: str, experiment: str, out: Path, recorded_ids: set[str]) -> None:
    """MLflow runs of this folder that the record does not hold (the compare was killed during or just
    after them) end KILLED, so each run of the suite is FINISHED in MLflow exactly once."""
    from mlflow.tracking import MlflowClient

    from .tracking import STOPPED_TAG

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return
    where = str(out.resolve()).replace("'", "\\'")
    for run in client.search_runs([exp.experiment_id], f"tags.{COMPARE_TAG} = '{where}'", max_results=50000):
        if run.info.run_id not in recorded_ids and run.info.status in ("RUNNING", "FINISHED"):
            client.set_tag(run.info.run_id, STOPPED_TAG, "its compare was interrupted before recording it; run again")
            client.set_terminated(run.info.run_id, "KILLED")


def write_outputs(out: Path, suite: Suite, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Write runs.csv, runs.json (the record a rerun resumes from), summary.json, table.txt; each file
    replaced atomically. The table summarises the finished runs; failed ones are listed apart."""
    rows = summarize([r for r in results if r.get(STATUS, FINISHED) == FINISHED])
    failures = [{k: r.get(k) for k in (Tag.DATA, Tag.LABEL, Tag.SEED, ERROR, "log")}
                for r in results if r.get(STATUS) == FAILED]
    summary = {"suite": suite.name, "experiment": suite.experiment, "rows": rows, "runs": results,
               "failures": failures, "table": format_table(rows), "out_dir": str(out)}

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_KEYS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(results)
    atomic_write(out / "runs.csv", buf.getvalue())
    atomic_write(out / "runs.json", json.dumps(results, indent=2, default=str))  # rows: finite numbers or None
    atomic_write(out / "summary.json", json.dumps(summary, indent=2, default=str))
    atomic_write(out / "table.txt", summary["table"] + "\n")
    return summary


# --- running: one run, in this process or in a worker ------------------------------------------------------------

_worker_datasets: dict[str, Any] = {}  # a worker process loads each dataset once (or fails once)


@dataclass
class Outcome:
    index: int
    row: dict[str, Any]
    traceback: str | None = None  # an unexpected error's, for the folder's log — never printed
    loaded: str | None = None  # the dataset's description, when this run loaded it


def run_one(index: int, cfg: ExperimentConfig, experiment: str, tags: dict[str, str],
            datasets: dict[str, Any] | None = None) -> Outcome:
    """Run one experiment of a suite, loading its dataset into ``datasets`` (default: this worker's) unless
    there already; any error becomes a failed row with its one-line reason."""
    from .run import load_data, run_experiment

    datasets = _worker_datasets if datasets is None else datasets
    loaded = None
    try:
        key = json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True, default=str)
        if key not in datasets:
            try:
                datasets[key] = load_data(cfg)
                loaded = datasets[key].describe()
            except Exception as e:
                datasets[key] = e  # the other runs on this source fail the same way, without reloading
        if isinstance(datasets[key], Exception):
            raise datasets[key]
        result = run_experiment(cfg, datasets[key], experiment=experiment, tags=tags)
        return Outcome(index, {**result.row(), STATUS: FINISHED}, loaded=loaded)
    except EchoesError as e:
        return Outcome(index, _failed_row(cfg, str(e)), loaded=loaded)
    except Exception as e:
        reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}".rstrip(": ")
        return Outcome(index, _failed_row(cfg, reason), traceback.format_exc(), loaded)


def _failed_row(cfg: ExperimentConfig, reason: str) -> dict[str, Any]:
    label = cfg.name or cfg.model.name + (f"+{cfg.learner.name}" if cfg.learner.name else "")
    return {Tag.DATA: cfg.data.source, Tag.LABEL: label, Tag.MODEL: cfg.model.name, Tag.LEARNER: cfg.learner.name,
            Tag.SEED: cfg.seed, STATUS: FAILED, ERROR: reason}


def _init_worker(workers: int) -> None:
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))  # the workers share the cores


def _outcomes(todo: list[tuple[int, ExperimentConfig, dict[str, str]]], experiment: str,
              workers: int) -> Iterator[Outcome]:
    """Outcomes as runs finish: here one after another, or in ``workers`` processes."""
    if workers <= 1 or len(todo) <= 1:
        datasets: dict[str, Any] = {}  # this compare's: a later one in this process reads the files again
        for i, cfg, tags in todo:
            yield run_one(i, cfg, experiment, tags, datasets)
        return
    # spawn, not fork: a forked child of a process that has used torch's thread pools can hang
    pool = ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(workers,))
    try:
        futures = {pool.submit(run_one, i, cfg, experiment, tags): (i, cfg) for i, cfg, tags in todo}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as e:  # the worker process itself died (killed, out of memory)
                i, cfg = futures[future]
                yield Outcome(i, _failed_row(cfg, f"{type(e).__name__}: its worker process died"))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _describe(row: dict[str, Any]) -> str:
    if row[STATUS] == FAILED:
        return f"FAILED: {row[ERROR]}"
    return f"test acc {row[Metric.TEST_ACCURACY]:.3f}  train {row[Metric.TRAIN_SECONDS]:.2f}s"


def run_suite(suite: Suite, *, out_dir: str | None = None, workers: int = 1, fresh: bool = False,
              echo: Any = print) -> dict[str, Any]:
    """Run the suite's runs not yet finished in its folder, recording each as it ends; return the summary
    (``failures`` lists the runs that failed, with their reasons)."""
    from .tracking import ensure_store, store_uri

    first = suite.runs[0]
    keys = [run_key(c) for c in suite.runs]
    out, lock = claim_folder(suite, out_dir, fresh)
    try:
        atomic_write(out / "suite.json", json.dumps({"suite": suite.name, "experiment": suite.experiment,
                                                     "key": suite_key(suite), "runs": len(keys)}, indent=2))
        rows = _recorded(out, set(keys))
        uri = store_uri(first.tracking) if first.tracking.enabled else None
        if uri:
            ensure_store(uri)  # once, before any worker writes to it
            _close_unrecorded(uri, suite.experiment, out, {r[Tag.RUN_ID] for r in rows.values()})
        if rows:
            echo(f"resuming {out}: {len(rows)} of {len(keys)} runs already finished")
        tags = {COMPARE_TAG: str(out.resolve())}
        todo = [(i, c, {**tags, RUN_KEY_TAG: k}) for i, (c, k) in enumerate(zip(suite.runs, keys, strict=True))
                if k not in rows]
        summary = write_outputs(out, suite, [rows[k] for k in keys if k in rows])
        for done, outcome in enumerate(_outcomes(todo, suite.experiment, workers), len(rows) + 1):
            cfg, row = suite.runs[outcome.index], {**outcome.row, RUN_KEY: keys[outcome.index]}
            if outcome.loaded:
                echo(f"data  {outcome.loaded}")
            if outcome.traceback:
                slug = re.sub(r"[^A-Za-z0-9_.+-]+", "-", row[Tag.LABEL])
                log = out / "logs" / f"run-{outcome.index + 1:03d}-{slug}-seed{cfg.seed}.log"
                log.parent.mkdir(exist_ok=True)
                atomic_write(log, outcome.traceback)
                row["log"] = str(log)
            rows[row[RUN_KEY]] = row
            echo(f"[{done}/{len(keys)}] {row[Tag.LABEL]:<16} {cfg.data.source:<22} seed {cfg.seed}  {_describe(row)}")
            summary = write_outputs(out, suite, [rows[k] for k in keys if k in rows])  # nothing finished is lost
    finally:
        os.close(lock)
    summary["tracking_uri"] = uri  # for the report
    return summary
