"""The ``echoes`` command. Thin: parses arguments, calls the API, prints.

Every command is a ``cmd_<name>(args)`` function plus its parser in
``build_parser``. Bad input raises EchoesError → one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from .errors import EchoesError, SkippedFileWarning
from .utils import atomic_write, check_output


def _write_json(path: str, data: Any) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(p, json.dumps(data, indent=2, default=str))


def cmd_train(args: argparse.Namespace) -> int | None:
    from . import distributed
    from .config import load_config
    from .run import Metric, check_experiment, load_data, run_experiment

    cfg = load_config(args.config, args.overrides)
    check_experiment(cfg)
    if cfg.train.nproc > 1 and not distributed.launched():
        return _torchrun(args, cfg.train.nproc)
    ds = load_data(cfg)
    if not distributed.is_main():  # the other ranks train their shards quietly
        run_experiment(cfg, ds, resume=args.resume)
        return None
    print(f"data  {ds.describe()}")
    r = run_experiment(cfg, ds, resume=args.resume)
    m = r.metrics
    if m.get(Metric.RESUMED_FROM_EPOCH) is not None:
        print(f"resumed from the checkpoint of epoch {m[Metric.RESUMED_FROM_EPOCH]}")
    print(f"model {r.label} ({r.family}, learner {r.learner}): "
          f"{m[Metric.TRAINABLE_PARAMS]:,} trainable / {m[Metric.TOTAL_PARAMS]:,} total parameters")
    print(f"test accuracy {m[Metric.TEST_ACCURACY]:.4f}"
          + (f"  top-5 {m[Metric.TEST_TOP5]:.4f}" if m.get(Metric.TEST_TOP5) is not None else "")
          + (f"  |  val {m[Metric.VAL_ACCURACY]:.4f}" if m.get(Metric.VAL_ACCURACY) is not None else "")
          + f"  train {m[Metric.TRAIN_ACCURACY]:.4f}")
    print_heads(m, ds.heads, ds.info)
    print(f"train {m[Metric.TRAIN_SECONDS]:.2f}s over {m[Metric.EPOCHS]} epoch(s)  |  "
          f"inference {m[Metric.INFERENCE_SECONDS_PER_SAMPLE] * 1e3:.3f} ms/sequence  |  "
          f"peak memory {m[Metric.PEAK_MEMORY_MB]:.0f} MB")
    for line in (tuned_reservoir(m), stopped_early(r)):
        if line:
            print(line)
    if r.run_id:
        print(f"mlflow run {r.run_id}  (model: runs:/{r.run_id}/model)")
    if args.save:
        print(f"model saved to {r.model.save(args.save)}")
    if args.json:
        _write_json(args.json, r.row())


def print_heads(m: dict[str, Any], heads: Any, info: dict[str, Any]) -> None:
    """Several label heads: a line per head and for the action (top-1, top-5, train − val gap, subsets)."""
    if not heads.multi:
        return
    subsets = ("tail", *info.get("test_subsets", {}))
    for task in (*heads.names, "action"):
        top5, gap = m.get(f"test_{task}_top5"), m.get(f"overfit_gap_{task}")
        parts = [f"top-1 {m[f'test_{task}_accuracy']:.4f}"] + ([f"top-5 {top5:.4f}"] if top5 is not None else [])
        parts += [f"gap {gap:+.4f}"] if gap is not None else []
        parts += [f"{n} {m[f'test_{n}_{task}_accuracy']:.4f}" for n in subsets
                  if m.get(f"test_{n}_{task}_accuracy") is not None]
        print(f"  {task:<7} " + "  ".join(parts))


def _torchrun(args: argparse.Namespace, nproc: int) -> int:
    """``echoes train ... train.nproc=N`` again, as N ranks under torchrun (without train.nproc)."""
    import subprocess

    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "echoes", "train"]
    for flag, value in (("--config", args.config), ("--json", args.json), ("--save", args.save)):
        argv += [flag, value] if value else []
    if args.resume is not None:
        argv.append("--resume" if args.resume else "--no-resume")
    argv += [o for o in args.overrides if not o.replace(" ", "").startswith("train.nproc=")]
    return subprocess.call(argv)


def tuned_reservoir(m: dict[str, Any]) -> str | None:
    """'reservoir: leak_rate 0.05, ... (tuned over 8 candidates on 32 training sequences)' after `auto` options."""
    chosen = [f"{k.removeprefix('esn_')} {m[k]:.3g}" for k in ("esn_leak_rate", "esn_spectral_radius",
                                                              "esn_input_scaling") if m.get(k) is not None]
    if not chosen:
        return None
    return (f"reservoir: {', '.join(chosen)} (tuned over {m.get('tune_candidates')} candidates on "
            f"{m.get('tune_rows')} training sequences)")


def stopped_early(r: Any) -> str | None:
    """'stopped early at epoch 19, best epoch 9 restored' when early stopping ended an iterative run."""
    from .learners import LEARNERS
    from .run import Metric

    epochs, best = r.metrics.get(Metric.EPOCHS), r.metrics.get(Metric.BEST_EPOCH)
    planned = r.metrics.get("planned_epochs") or (r.config.train.epochs if r.config is not None else None)
    one_pass = not getattr(LEARNERS.get(r.learner), "iterative", True)  # ridge: one pass, never "stopped"
    if one_pass or not (epochs and best and isinstance(planned, int | float)) or epochs >= planned:
        return None
    return f"stopped early at epoch {epochs}, best epoch {best} restored"


def _model_and_data(args: argparse.Namespace) -> tuple[Any, Any]:
    from .config import parse_overrides
    from .model import load_model
    from .predict import source_split

    model = load_model(args.model, tracking_uri=args.uri)
    return model, source_split(model, args.data, args.split, parse_overrides(args.options))


def cmd_predict(args: argparse.Namespace) -> None:
    from .predict import prediction_rows, write_challenge, write_predictions

    if args.out:
        check_output(args.out, (".csv", ".json", ".npz"))  # a bad path fails now, not after predicting
    model, (seqs, labelled, info) = _model_and_data(args)
    ids = info.get("ids")
    if args.out and Path(args.out).suffix == ".npz" and not model.heads.multi:
        raise EchoesError("--out .npz writes EPIC-KITCHENS' results (verb_output, noun_output, narration_id) "
                          "for models with label heads — use .csv or .json")
    rows = prediction_rows(model, seqs, top_k=args.top_k, labelled=labelled, ids=ids)
    if args.out and model.heads.multi and Path(args.out).suffix != ".csv":  # the challenge's formats
        print(f"{len(rows)} segments' scores written to {write_challenge(model, seqs, ids, args.out)}")
    elif args.out:
        print(f"{len(rows)} predictions written to {write_predictions(rows, args.out)}")
    else:
        for r in rows[: args.show]:
            print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in r.items() if k != "top_k"))
        if len(rows) > args.show:
            print(f"... {len(rows) - args.show} more (--out preds.csv writes them all)")
    labelled = [r for r in rows if r.get("label") is not None]
    if labelled:
        hits = sum(r["label"] == r["predicted"] for r in labelled)
        print(f"accuracy {hits / len(labelled):.4f} ({hits}/{len(labelled)}{' frames' if model.framewise else ''})")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .predict import evaluate
    from .run import Metric

    model, (seqs, _, info) = _model_and_data(args)
    m = evaluate(model, seqs, device=args.device, info=info)
    print(f"{model!r} on {args.data} ({args.split}: {len(seqs)} sequences)")
    print_heads(m, model.heads, info)
    print(f"test accuracy {m[Metric.TEST_ACCURACY]:.4f}"
          + (f"  top-5 {m[Metric.TEST_TOP5]:.4f}" if m.get(Metric.TEST_TOP5) is not None else "")
          + f"  loss {m[Metric.TEST_LOSS]:.4f}  |  "
          f"inference {m[Metric.INFERENCE_SECONDS_PER_SAMPLE] * 1e3:.3f} ms/sequence")
    if args.json:
        _write_json(args.json, m)


def cmd_compare(args: argparse.Namespace) -> int:
    from .api import compare
    from .utils import MissingExtra, require

    summary = compare(args.suite, args.overrides, out_dir=args.out, workers=args.workers, fresh=args.fresh)
    print()
    print(summary["table"])
    print(f"\nresults in {summary['out_dir']} (runs.csv, runs.json, summary.json)")
    run_ids = [r["mlflow_run_id"] for r in summary["runs"] if r.get("mlflow_run_id")]
    if run_ids and not args.no_report:
        try:
            require("plotly", "report")
            from .report import write_report

            uri = summary.get("tracking_uri")
            page = write_report(Path(summary["out_dir"]) / "report", uri=uri, experiments=[summary["experiment"]],
                                run_ids=run_ids)
            print(f"report: {page}")
        except MissingExtra as e:  # a core install: the results stand without the report
            print(f"no report: {e}")
    if args.json:
        _write_json(args.json, summary)
    failures = summary["failures"]
    if failures:
        print(f"\n{len(failures)} run(s) failed (run the same command again to retry them):", file=sys.stderr)
        for f in failures:
            print(f"  {f['label']} · {f['data']} · seed {f['seed']}: {f['error']}"
                  + (f"  (traceback: {f['log']})" if f.get("log") else ""), file=sys.stderr)
    return 1 if failures else 0


def cmd_sweep(args: argparse.Namespace) -> None:
    from .run import Metric
    from .sweep import load_sweep, run_sweep

    summary = run_sweep(load_sweep(args.sweep, args.overrides), workers=args.workers)
    c = summary["counts"]
    print(f"\n{c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed"
          + (f", {c['lost']} lost to a stopped worker and retried" if c["lost"] else "")
          + (f"; {c['waiting'] + c['running']} not finished" if c["waiting"] + c["running"] else ""))
    print(summary["table"])
    best = summary["best"]
    if best:
        print(f"\nbest: trial {best['trial']}  {summary['objective']} {best['value']:.4f}"
              + (f"  test accuracy {best[Metric.TEST_ACCURACY]:.4f}" if best.get(Metric.TEST_ACCURACY) is not None
                 else ""))
        print(f"config: {best['config']}  (echoes train --config {best['config']})")
    print(f"trials: {summary['trials_csv']}  |  report: echoes report --experiment {summary['experiment']}")
    if args.json:
        _write_json(args.json, summary)


def cmd_report(args: argparse.Namespace) -> None:
    from .config import TrackingConfig
    from .report import write_report

    out = args.out or str(Path(TrackingConfig().results_dir) / "report")
    page = write_report(out, uri=args.uri, experiments=args.experiment, confusion_run=args.run, png=not args.no_png)
    print(f"report: {page}")


def cmd_stream(args: argparse.Namespace) -> None:
    from .model import load_model
    from .stream import StreamOptions, parse_size, run_stream

    opts = StreamOptions(
        top_k=args.top_k, average=args.average, ema=args.ema, threshold=args.threshold, every=args.every,
        frame_step=args.frame_step, window=args.window, stride=args.stride, sliding=args.sliding,
        realtime=args.realtime, frame_size=parse_size(args.frame_size, "--frame-size"), fps=args.fps,
        stdin_format=args.stdin_format, camera_size=args.camera_size, camera_fps=args.camera_fps,
        out=args.out, timeline=args.timeline)
    summary = run_stream(load_model(args.model, tracking_uri=args.uri), args.source, opts, device=args.device)
    print(json.dumps({"summary": summary}), flush=True)
    p50, p99 = summary["latency_ms_p50"], summary["latency_ms_p99"]
    print(f"{'interrupted: ' if summary['interrupted'] else ''}{summary['steps']} steps of {summary['frames']} frames "
          f"in {summary['seconds']:.2f}s ({summary['steps_per_second'] or 0:.1f}/s), latency p50 "
          f"{p50 if p50 is not None else '-'} ms, p99 {p99 if p99 is not None else '-'} ms"
          + (f", {summary['dropped']} dropped" if summary["dropped"] else ""), file=sys.stderr)


def cmd_server(args: argparse.Namespace) -> None:
    from .server import serve

    code = serve(args.host, args.port, args.backend_store, args.artifacts, args.workers, args.allowed_hosts)
    if code not in (0, -2, -15, 130, 143):  # stopped by a signal is a clean stop
        raise EchoesError(f"the MLflow server exited with code {code} — see its messages above")


def cmd_launch(args: argparse.Namespace) -> None:
    from . import launch

    if args.what in ("status", "cancel"):
        (launch.status if args.what == "status" else launch.cancel)(args.folder)
        return
    from .config import parse_overrides

    keys = ("workers", "tracking_uri", "partition", "gpus", "cpus", "mem_gb", "time", "account", "cloud",
            "region", "spot", "idle_minutes", "max_hours", "code", "cluster")
    flags = {k: getattr(args, k) for k in keys} | {"backend": args.on, "sbatch": parse_overrides(args.sbatch) or None,
                                                   "mounts": dict(m.split("=", 1) for m in args.mount) or None}
    target = getattr(args, "target", None)
    if target and "=" in target:  # `echoes launch compare seeds=[0]`: an override, not a suite
        args.overrides.insert(0, target)
        target = None
    launch.launch(args.what, target or getattr(args, "config", None), args.overrides,
                  launch.load_profile(args.profile, flags), dry_run=args.dry_run, wait=args.wait)


def cmd_make_speech(args: argparse.Namespace) -> None:
    from .data.speech.make_speech import make_speech

    r = make_speech(args.root, regions=args.regions, train_speakers=args.train_speakers,
                    test_speakers=args.test_speakers, dev_speakers=args.dev_speakers,
                    sentences=args.sentences, seed=args.seed)
    print(f"{r['root']}: {r['speakers']['TRAIN']} training and {r['speakers']['TEST']} test speakers, "
          f"{r['utterances']} utterances ({r['written']} written now), voices {', '.join(r['voices'])}")
    print(f"train on it: echoes train model=lsnn data=timit:{r['root']}")


def cmd_make_videos(args: argparse.Namespace) -> None:
    from .data.video.make_videos import make_videos
    from .utils import progress

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise EchoesError(f"--size must look like 128x96, got '{args.size}'") from None
    bar = progress(None, total=args.classes * args.groups * args.clips, unit="clip", desc="make-videos")
    with bar:
        r = make_videos(args.root, classes=args.classes, groups=args.groups, clips=args.clips,
                        min_frames=args.min_frames, max_frames=args.max_frames, width=width,
                        height=height, seed=args.seed, force=args.force, long=args.long, on_clip=bar.update)
    train, test = r["splits"][1]
    print(f"{r['root']}: {r['clips']} clips of {len(r['classes'])} motion classes in the UCF101 layout "
          f"({r['seconds']:.0f}s); split 1: {train} train / {test} test")
    if r.get("long"):
        print(f"{r['long']}: {args.long} test clips back to back (segments in long.json), for echoes stream")
    print(f"train on it: echoes train model=esn data=ucf101:{r['root']}")


def cmd_make_epic(args: argparse.Namespace) -> None:
    from .data.video.make_epic import make_epic
    from .utils import progress

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise EchoesError(f"--size must look like 96x64, got '{args.size}'") from None
    with progress(None, total=args.segments, unit="action", desc="make-epic") as bar:
        r = make_epic(args.root, verbs=args.verbs, nouns=args.nouns, participants=args.participants,
                      unseen=args.unseen, videos=args.videos, segments=args.segments, min_frames=args.min_frames,
                      max_frames=args.max_frames, width=width, height=height, seed=args.seed, force=args.force,
                      on_video=bar.update)
    print(f"{r['root']}: {r['train']} training and {r['validation']} validation actions in {r['videos']} videos "
          f"in the EPIC-KITCHENS-100 layout ({r['seconds']:.0f}s); {len(r['verbs'])} verbs, {len(r['nouns'])} "
          f"nouns, {r['train_pairs']} verb-noun pairs in training; unseen participants {', '.join(r['unseen'])}")
    print(f"train on it: echoes train model=lstm data=epic100:{r['root']}")


def cmd_features(args: argparse.Namespace) -> None:
    from .config import parse_overrides
    from .data import SOURCES, parse_source

    kind, name = parse_source(args.source)
    options = parse_overrides(args.options)
    if "backbone" in options:  # `backbone=resnet18` reads better here than `features=resnet18`
        options["features"] = options.pop("backbone")
    seed = options.pop("seed", 0)
    raw = SOURCES.build(kind, name=name, seed=seed, **options)
    if "feature_cache" not in raw.info:
        raise EchoesError(f"{kind}: this source keeps no feature cache — `echoes features` is for sources "
                          "that do (ucf101:ROOT, epic100:ROOT, timit:ROOT)")
    print(f"{args.source}: train {len(raw.train)} / test {len(raw.test)} sequences, "
          f"{raw.train.x.shape[1]} steps × {raw.train.num_features} features")
    for key, value in raw.info.items():
        if isinstance(value, float):
            value = f"{value:.1f}"
        if isinstance(value, str | int | bool):
            print(f"  {key}: {value}")


def print_options(registry: Any, name: str, title: str) -> None:
    """A registered entry's description, then one line per option: name, default, type, meaning."""
    print(f"{title} — {registry.summary(name)}")
    rows = [(o.name, "(required)" if o.required else _shown(o.default), o.type, o.meaning)
            for o in registry.describe(name)]
    if not rows:
        print("  no options")
        return
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print(("  " + "  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + f"  {row[3]}").rstrip())
    print(f"set one with {registry.section}.NAME=VALUE")


def _shown(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _print_list(rows: list[tuple[str, str]]) -> None:
    width = max(len(n) for n, _ in rows)
    for name, summary in rows:
        print(f"{name:<{width}}  {summary}")


def cmd_models(args: argparse.Namespace) -> None:
    from .models import MODELS, default_learner, list_models

    if args.name:
        print_options(MODELS, args.name, args.name)
        print(f"learner: {default_learner(args.name)} unless learner=... says otherwise")
        return
    _print_list(list_models())


def cmd_learners(args: argparse.Namespace) -> None:
    from .learners import LEARNERS

    if args.name:
        print_options(LEARNERS, args.name, args.name)
        return
    _print_list([(n, LEARNERS.summary(n)) for n in LEARNERS.names()])


def cmd_datasets(args: argparse.Namespace) -> None:
    from .data import SOURCES

    if args.name:
        kind = args.name.split(":", 1)[0]
        print_options(SOURCES, kind, f"{kind}:NAME")
        return
    for kind in SOURCES.names():
        fn = SOURCES.get(kind)
        print(f"{kind}:NAME  {SOURCES.summary(kind)}")
        examples = getattr(fn, "examples", None)
        if examples:
            print("    " + ", ".join(f"{kind}:{n}" for n in examples()))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="echoes", description="Train and compare temporal neural architectures.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_run_commands, _add_model_commands, _add_launch_commands, _add_listing_commands,
                _add_data_commands):
        add(sub)
    return p


def _add_run_commands(sub: Any) -> None:
    """train, compare, sweep, report: running experiments and reading them back."""
    t = sub.add_parser("train", help="train and evaluate one model on one dataset")
    t.add_argument("--config", help="experiment YAML file")
    t.add_argument("--json", metavar="OUT", help="write the run's metrics to this JSON file")
    t.add_argument("--save", metavar="DIR", help="save the fitted model to this folder (load_model / echoes predict)")
    t.add_argument("--resume", action=argparse.BooleanOptionalAction, default=None,
                   help="continue from this run's last checkpoint, in the same MLflow run (default: only "
                        "when the config has a name=); --no-resume starts afresh")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="e.g. model=lstm data=uea:BasicMotions train.epochs=50 seed=1")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("compare", help="run a suite of models × datasets × seeds and print the table")
    c.add_argument("suite", nargs="?", help="suite YAML or a packaged suite name: quick (default), video-quick, phones")
    c.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. seeds=[0] train.epochs=5")
    c.add_argument("--json", metavar="OUT", help="write the summary to this JSON file")
    c.add_argument("--out", metavar="DIR",
                   help="folder for runs.csv / runs.json (default: results_dir/compare/<suite>-<hash of its runs>)")
    c.add_argument("--workers", type=int, default=1, metavar="N", help="runs in N parallel processes")
    c.add_argument("--fresh", action="store_true", help="start over in a new folder instead of resuming")
    c.add_argument("--no-report", action="store_true", help="skip the HTML/PNG report at the end")
    c.set_defaults(func=cmd_compare)

    w = sub.add_parser("sweep", help="search hyperparameters with Optuna (resumes when run again)")
    w.add_argument("sweep", help="sweep YAML, or a packaged sweep name: esn_tpe, transformer_regularization")
    w.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="sweep keys (trials=50, storage=URL) or base experiment keys (train.epochs=5)")
    w.add_argument("--workers", type=int, default=1, metavar="N", help="local worker processes on one study")
    w.add_argument("--json", metavar="OUT", help="write the sweep summary to this JSON file")
    w.set_defaults(func=cmd_sweep)

    r = sub.add_parser("report", help="write the HTML + PNG comparison report from MLflow runs")
    r.add_argument("--experiment", action="extend", nargs="+", metavar="NAME",
                   help="MLflow experiment(s) to include (default: all)")
    r.add_argument("--out", metavar="DIR", help="output folder (default: echoes-runs/report)")
    r.add_argument("--run", metavar="RUN_ID", help="the run whose confusion matrix is shown (default: the best)")
    r.add_argument("--uri", "--tracking-uri", help="MLflow tracking URI, e.g. http://HOST:5000 (default: "
                   "$MLFLOW_TRACKING_URI, else echoes-runs/mlflow.db)")
    r.add_argument("--no-png", action="store_true", help="write only the HTML page")
    r.set_defaults(func=cmd_report)


def _add_model_commands(sub: Any) -> None:
    """predict, evaluate, stream: using a trained model."""
    for name, func, text in (("predict", cmd_predict, "predict with a trained model on any data source"),
                             ("evaluate", cmd_evaluate, "the test metrics of a trained model on any data source")):
        e = sub.add_parser(name, help=text)
        e.add_argument("model", help="a saved model folder, an MLflow run id, or runs:/RUN_ID")
        e.add_argument("data", help="a data source, e.g. npz:new.npz, uea:BasicMotions, ucf101:ROOT")
        e.add_argument("options", nargs="*", metavar="KEY=VALUE", help="source options (default: the model's own)")
        e.add_argument("--split", default="test", help="which split of the source (test, train, val; default test)")
        e.add_argument("--uri", help="MLflow tracking URI for run ids (default: $MLFLOW_TRACKING_URI, else "
                                      "echoes-runs/mlflow.db)")
        if name == "predict":
            e.add_argument("--out", metavar="FILE", help="write every prediction to FILE (.csv or .json); models with "
                           "label heads: .npz / .json are EPIC-KITCHENS' results and submission formats")
            e.add_argument("--top-k", type=int, default=1, metavar="K", help="also list the K most likely classes")
            e.add_argument("--show", type=int, default=10, metavar="N", help="predictions printed without --out")
        else:
            e.add_argument("--json", metavar="OUT", help="write the metrics to this JSON file")
            e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        e.set_defaults(func=func)



    st = sub.add_parser("stream", help="run a trained model live on a video, camera, URL, speech file or stdin")
    st.add_argument("model", help="a saved model folder, an MLflow run id, or runs:/RUN_ID")
    st.add_argument("source", help="a video file, /dev/videoN, rtsp:// or http:// URL, a speech file, a .npy "
                                   "(T, F) array, or - for stdin")
    st.add_argument("--top-k", type=int, default=3, metavar="K", help="classes listed per step (default 3)")
    st.add_argument("--average", type=int, default=1, metavar="N", help="average the scores of the last N steps")
    st.add_argument("--ema", type=float, metavar="A", help="or smooth them: A·new + (1-A)·old")
    st.add_argument("--threshold", type=float, default=0.0, help="hide labels scoring below this")
    st.add_argument("--every", type=int, default=1, metavar="K", help="a JSON line every K steps")
    st.add_argument("--frame-step", type=int, default=1, metavar="N",
                    help="step the model on every Nth frame (the spacing of the frames it was trained on)")
    st.add_argument("--window", type=int, metavar="N",
                    help="steps a sliding-window model re-reads (default: the frames it was trained on)")
    st.add_argument("--stride", type=int, default=1, metavar="N", help="re-read the window every N steps")
    st.add_argument("--sliding", action="store_true",
                    help="re-read the last --window steps for recurrent models too (not everything since the start)")
    st.add_argument("--realtime", action="store_true",
                    help="read a file at its own rate, dropping frames when inference falls behind")
    st.add_argument("--out", metavar="VIDEO", help="write the video with the predictions drawn on it (.mp4, .avi)")
    st.add_argument("--timeline", metavar="JSON", help="write the labelled segments to this file")
    st.add_argument("--frame-size", metavar="WxH", help="size of raw RGB24 frames on stdin")
    st.add_argument("--fps", type=float, default=25.0, help="rate of raw frames on stdin (default 25)")
    st.add_argument("--stdin-format", choices=("rgb24", "text", "f32"),
                    help="stdin: rgb24 frames (video models), text lines or raw float32 vectors (feature models)")
    st.add_argument("--camera-size", metavar="WxH", help="camera capture size, e.g. 640x480")
    st.add_argument("--camera-fps", type=float, help="camera capture rate")
    st.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    st.add_argument("--uri", help="MLflow tracking URI for run ids")
    st.set_defaults(func=cmd_stream)


def _add_launch_commands(sub: Any) -> None:
    """server, launch: running beyond this process."""
    sv = sub.add_parser("server", help="run the shared MLflow tracking server (artifacts proxied) for runs anywhere")
    sv.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: all; default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=5000, help="default 5000")
    sv.add_argument("--backend-store", metavar="URI",
                    help="sqlite:///FILE or postgresql://USER@HOST/DB (default: echoes-runs/mlflow.db)")
    sv.add_argument("--artifacts", metavar="DIR|URI", help="where artifacts are kept: a folder or s3://... "
                    "(default: echoes-runs/artifacts)")
    sv.add_argument("--workers", type=int, help="server processes (default: 1 on SQLite, 4 otherwise)")
    sv.add_argument("--allowed-hosts", metavar="LIST", help="Host headers accepted besides localhost and private "
                    "addresses, e.g. hq.example.org,hq.example.org:*")
    sv.set_defaults(func=cmd_server)

    lp = argparse.ArgumentParser(add_help=False)  # where to run: the same options for train, compare, sweep
    lp.add_argument("--on", choices=["local", "slurm", "cloud"], help="where the tasks run (default local)")
    lp.add_argument("--profile", metavar="NAME", help="options from configs/launch/NAME.yaml (flags win)")
    lp.add_argument("--workers", type=int, metavar="N", help="local: tasks at once; sweep: workers on the study")
    lp.add_argument("--tracking-uri", metavar="URI", help="where runs report (default: $MLFLOW_TRACKING_URI, "
                    "else echoes-runs/mlflow.db); the cloud needs an `echoes server`")
    lp.add_argument("--dry-run", action="store_true", help="cloud: print the SkyPilot task YAML, launch nothing")
    lp.add_argument("--wait", action="store_true", help="slurm: wait until every task has finished")
    sl = lp.add_argument_group("slurm")
    sl.add_argument("--partition")
    sl.add_argument("--gpus", help="Slurm: GPUs per node (2); cloud: type and count (A100:1)")
    sl.add_argument("--cpus", type=int, help="CPUs per task")
    sl.add_argument("--mem-gb", type=float)
    sl.add_argument("--time", type=int, metavar="MINUTES", help="per job; then it is requeued and resumes")
    sl.add_argument("--account")
    sl.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE", help="any sbatch option, e.g. "
                    "--sbatch qos=high (repeatable)")
    cl = lp.add_argument_group("cloud")
    cl.add_argument("--cloud", help="aws, gcp, azure, ... (default: the cheapest SkyPilot can use)")
    cl.add_argument("--region")
    cl.add_argument("--spot", action="store_true", default=None, help="spot VMs, as a managed job that recovers")
    cl.add_argument("--idle-minutes", type=int, help="tear the VM down after this much idleness (default 10)")
    cl.add_argument("--max-hours", type=float, help="stop the command after this long (default 8)")
    cl.add_argument("--code", choices=["repo", "wheel"], help="sync this checkout (default) or a built wheel")
    cl.add_argument("--mount", action="append", default=[], metavar="VM_PATH=SOURCE",
                    help="data for the VM: a bucket (s3://, gs://) or a local path, copied (repeatable)")
    cl.add_argument("--cluster", help="SkyPilot cluster name (default: echoes-NAME)")
    la = sub.add_parser("launch", help="run a train, a compare suite or a sweep elsewhere: --on local|slurm|cloud")
    la_sub = la.add_subparsers(dest="what", required=True, metavar="WHAT")
    lt = la_sub.add_parser("train", parents=[lp], help="one training run")
    lt.add_argument("--config", help="experiment YAML file")
    lt.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    lc = la_sub.add_parser("compare", parents=[lp], help="a suite: one task per dataset × model × seed")
    lc.add_argument("target", nargs="?", metavar="SUITE")
    lc.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    ls = la_sub.add_parser("sweep", parents=[lp], help="a sweep: --workers N workers on one study")
    ls.add_argument("target", metavar="SWEEP")
    ls.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    for what in ("status", "cancel"):
        lx = la_sub.add_parser(what, help=f"{what} a launch (default: the latest)")
        lx.add_argument("folder", nargs="?", help="its folder under echoes-runs/launch/")
    la.set_defaults(func=cmd_launch)


def _add_listing_commands(sub: Any) -> None:
    """models, learners, datasets, features: what there is, and feature caches."""
    for command, func, what in (("models", cmd_models, "model"), ("learners", cmd_learners, "learner"),
                                ("datasets", cmd_datasets, "data source")):
        lp = sub.add_parser(command, help=f"list the {what}s, or one {what}'s options")
        lp.add_argument("name", nargs="?", help=f"a {what}: print its options with defaults, types and meanings")
        lp.set_defaults(func=func)

    f = sub.add_parser("features", help="extract a source's per-frame features into its cache (once)")
    f.add_argument("source", help="e.g. ucf101:data/ucf101")
    f.add_argument("options", nargs="*", metavar="KEY=VALUE",
                   help="source options, e.g. backbone=resnet18 weights=imagenet frames=16 split=1")
    f.set_defaults(func=cmd_features)


def _add_data_commands(sub: Any) -> None:
    """`echoes data <command>`: tools that write datasets in the layouts of real ones."""
    d = sub.add_parser("data", help="generate datasets in the layouts of real ones")
    data_sub = d.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    ms = data_sub.add_parser("make-speech", help="write a small TIMIT-layout corpus spoken by Festival")
    ms.add_argument("root", help="output folder (TRAIN/ and TEST/ go inside; existing utterances are kept)")
    ms.add_argument("--regions", type=int, default=4, help="dialect regions DR1..DRn (default 4)")
    ms.add_argument("--train-speakers", type=int, default=4, help="training speakers per region (default 4)")
    ms.add_argument("--test-speakers", type=int, default=3, help="core-test speakers per region, 0-3 (default 3)")
    ms.add_argument("--dev-speakers", type=int, default=2, help="development speakers per region (default 2)")
    ms.add_argument("--sentences", type=int, default=8, help="sentences per speaker besides SA1, SA2 (default 8)")
    ms.add_argument("--seed", type=int, default=0)
    ms.set_defaults(func=cmd_make_speech)
    mv = data_sub.add_parser("make-videos", help="write synthetic motion-class videos in the UCF101 layout")
    mv.add_argument("root", help="output folder (UCF-101/ and ucfTrainTestlist/ go inside)")
    mv.add_argument("--classes", type=int, default=8, help="motion classes, 2-8 (default 8)")
    mv.add_argument("--groups", type=int, default=10, help="groups gXX per class (default 10)")
    mv.add_argument("--clips", type=int, default=8, help="clips cYY per group (default 8)")
    mv.add_argument("--min-frames", type=int, default=36, help="shortest clip in frames (default 36)")
    mv.add_argument("--max-frames", type=int, default=60, help="longest clip in frames (default 60)")
    mv.add_argument("--size", default="128x96", help="frame WIDTHxHEIGHT, even numbers (default 128x96)")
    mv.add_argument("--seed", type=int, default=0)
    mv.add_argument("--force", action="store_true", help="replace a dataset already in ROOT")
    mv.add_argument("--long", type=int, default=0, metavar="N",
                    help="also write long.avi: N test clips of changing classes back to back (truth in long.json)")
    mv.set_defaults(func=cmd_make_videos)
    me = data_sub.add_parser("make-epic", help="write synthetic kitchen actions (verb + noun) in the "
                                               "EPIC-KITCHENS-100 layout")
    me.add_argument("root", help="output folder (PXX/videos/ and annotations/ go inside)")
    me.add_argument("--verbs", type=int, default=6, help="verb classes (motions), 2-8 (default 6)")
    me.add_argument("--nouns", type=int, default=8, help="noun classes (objects), 2-10 (default 8)")
    me.add_argument("--participants", type=int, default=6, help="seen participants, in training (default 6)")
    me.add_argument("--unseen", type=int, default=2, help="participants only in validation (default 2)")
    me.add_argument("--videos", type=int, default=4, help="videos per seen participant, the last one for "
                                                          "validation (default 4; unseen: half as many)")
    me.add_argument("--segments", type=int, default=300, help="annotated actions in all videos (default 300)")
    me.add_argument("--min-frames", type=int, default=24, help="shortest action in frames (default 24)")
    me.add_argument("--max-frames", type=int, default=40, help="longest action in frames (default 40)")
    me.add_argument("--size", default="96x64", help="frame WIDTHxHEIGHT, even numbers (default 96x64)")
    me.add_argument("--seed", type=int, default=0)
    me.add_argument("--force", action="store_true", help="replace a dataset already in ROOT")
    me.set_defaults(func=cmd_make_epic)


def _split_suite_arg(args: argparse.Namespace) -> None:
    # `echoes compare train.epochs=5` — the first positional is an override, not a suite.
    if getattr(args, "command", None) == "compare" and args.suite and "=" in args.suite:
        args.overrides.insert(0, args.suite)
        args.suite = None


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, taking KEY=VALUE overrides anywhere — also after an option (``--json o.json data=...``)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        rest = next((v for k in ("overrides", "options") if isinstance(v := getattr(args, k, None), list)), None)
        if rest is None or any(a.startswith("-") for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)} — see echoes {args.command} --help")
        rest.extend(extra)
    _split_suite_arg(args)
    return args


def _one_line_warning(message: Warning | str, category: type[Warning], *rest: Any, **kw: Any) -> str:
    if issubclass(category, SkippedFileWarning):  # the message says it all; no source line below it
        return f"echoes: warning: {message}\n"
    return _format_warning(message, category, *rest, **kw)


_format_warning = warnings.formatwarning


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    args = _parse(build_parser(), argv)
    try:
        if getattr(args, "json", None):
            check_output(args.json)
        code = args.func(args)
    except EchoesError as e:
        print(f"echoes: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("echoes: interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
