"""Process supervision: ``--workers N`` starts N worker processes on one study, replaces one
that dies, and stops them all on a user error."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from ..errors import EchoesError
from .config import Sweep
from .liveness import Echo
from .optuna_parts import make_storage
from .trials import work


def _raise_interrupt(signum: int, frame: Any) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


def _worker_main(data: dict[str, Any], workers: int) -> None:
    """Entry point of a worker process."""
    import torch

    signal.signal(signal.SIGTERM, _raise_interrupt)  # terminate → the trial is failed and retried
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))

    def echo(line: str) -> None:
        print(line, flush=True)

    try:
        work(Sweep.from_dict(data), echo)
    except EchoesError as e:
        print(f"echoes: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def _work_left(sweep: Sweep) -> bool:
    from optuna.trial import TrialState

    storage = make_storage(sweep.storage_url)
    study_id = storage.get_study_id_from_name(sweep.name)
    return bool(storage.get_all_trials(study_id, deepcopy=False,
                                       states=(TrialState.WAITING, TrialState.RUNNING)))


def supervise(sweep: Sweep, workers: int, echo: Echo) -> None:
    """Start N worker processes; replace any that is killed, stop all on a user error."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fresh interpreters: no forked torch or MLflow state

    def start() -> Any:
        p = ctx.Process(target=_worker_main, args=(sweep.to_dict(), workers), daemon=False)
        p.start()
        return p

    procs = [start() for _ in range(workers)]
    replacements = 0
    try:
        while procs:
            time.sleep(0.2)
            for p in list(procs):
                if p.exitcode is None:
                    continue
                procs.remove(p)
                if p.exitcode == 0:
                    continue
                if p.exitcode == 2:
                    raise EchoesError(f"a sweep worker stopped on the error above — fix it, then run the "
                                      f"same command to resume sweep '{sweep.name}'")
                echo(f"worker {p.pid} stopped (exit code {p.exitcode}); its trial will be retried")
                if replacements < 3 * workers and _work_left(sweep):
                    procs.append(start())
                    replacements += 1
    finally:
        for p in procs:
            if p.exitcode is None:
                p.terminate()  # each fails its running trial and enqueues its retry
        for p in procs:
            p.join(timeout=60)
