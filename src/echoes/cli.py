"""The ``echoes`` command. Thin: parses arguments, calls the API, prints.

Every command is a ``cmd_<name>(args)`` function plus its parser in
``build_parser``. Bad input raises EchoesError → one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .errors import EchoesError


def _write_json(path: str, data: Any) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(p)


TRAIN_KEYS = [
    "model", "data", "seed", "learner", "test_accuracy", "test_top5", "val_accuracy", "train_accuracy",
    "overfit_gap", "train_seconds", "train_seconds_per_epoch", "epochs", "inference_seconds_per_batch",
    "inference_seconds_per_sample", "peak_memory_mb", "trainable_params", "total_params",
    "convergence_epoch", "mlflow_run_id",
]


def cmd_train(args: argparse.Namespace) -> None:
    from .api import load_data, train
    from .config import load_config

    cfg = load_config(args.config, args.overrides)
    from .api import check_experiment

    check_experiment(cfg)
    ds = load_data(cfg.data)
    print(f"data  {ds.describe()}")
    r = train(cfg, dataset=ds)
    print(f"model {r['label']} ({r['family']}, learner {r['learner']}): "
          f"{r['trainable_params']:,} trainable / {r['total_params']:,} total parameters")
    print(f"test accuracy {r['test_accuracy']:.4f}"
          + (f"  top-5 {r['test_top5']:.4f}" if r.get("test_top5") is not None else "")
          + f"  |  val {r['val_accuracy']:.4f}  train {r['train_accuracy']:.4f}")
    print(f"train {r['train_seconds']:.2f}s over {r['epochs']} epoch(s)  |  "
          f"inference {r['inference_seconds_per_sample'] * 1e3:.3f} ms/sequence  |  "
          f"peak memory {r['peak_memory_mb']:.0f} MB")
    if r["mlflow_run_id"]:
        print(f"mlflow run {r['mlflow_run_id']}")
    if args.json:
        out = {k: r.get(k) for k in TRAIN_KEYS}
        out.update({k: v for k, v in r.items() if k not in out and k != "history"})
        _write_json(args.json, out)


def cmd_compare(args: argparse.Namespace) -> None:
    from .api import compare

    summary = compare(args.suite, args.overrides, out_dir=args.out)
    print()
    print(summary["table"])
    print(f"\nresults in {summary['out_dir']} (runs.csv, runs.json, summary.json)")
    if args.json:
        _write_json(args.json, summary)


def cmd_models(args: argparse.Namespace) -> None:  # noqa: ARG001
    from .models import list_models

    rows = list_models()
    width = max(len(n) for n, _ in rows)
    for name, summary in rows:
        print(f"{name:<{width}}  {summary}")


def cmd_datasets(args: argparse.Namespace) -> None:  # noqa: ARG001
    from .data import SOURCES

    for kind in SOURCES.names():
        fn = SOURCES.get(kind)
        print(f"{kind}:NAME  {SOURCES.summary(kind)}")
        examples = getattr(fn, "examples", None)
        if examples:
            print("    " + ", ".join(f"{kind}:{n}" for n in examples()))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="echoes", description="Train and compare temporal neural architectures.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train and evaluate one model on one dataset")
    t.add_argument("--config", help="experiment YAML file")
    t.add_argument("--json", metavar="OUT", help="write the run's metrics to this JSON file")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="e.g. model=lstm data=uea:BasicMotions train.epochs=50 seed=1")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("compare", help="run a suite of models × datasets × seeds and print the table")
    c.add_argument("suite", nargs="?", help="suite YAML (default: configs/suites/quick.yaml)")
    c.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. seeds=[0] train.epochs=5")
    c.add_argument("--json", metavar="OUT", help="write the summary to this JSON file")
    c.add_argument("--out", metavar="DIR", help="folder for runs.csv / runs.json (default: under results_dir)")
    c.set_defaults(func=cmd_compare)

    sub.add_parser("models", help="list the registered models").set_defaults(func=cmd_models)
    sub.add_parser("datasets", help="list data sources and bundled datasets").set_defaults(func=cmd_datasets)

    # `echoes data <command>`: tools that write datasets (generated videos, speech corpora...)
    d = sub.add_parser("data", help="generate datasets in the layouts of real ones")
    data_sub = d.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    del data_sub  # each generator adds its parser here
    return p


def _split_suite_arg(args: argparse.Namespace) -> None:
    # `echoes compare train.epochs=5` — the first positional is an override, not a suite.
    if getattr(args, "command", None) == "compare" and args.suite and "=" in args.suite:
        args.overrides.insert(0, args.suite)
        args.suite = None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _split_suite_arg(args)
    try:
        args.func(args)
    except EchoesError as e:
        print(f"echoes: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("echoes: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
