"""The shared tracking server — the "headquarters" every machine reports to.

``echoes server`` runs ``mlflow server --serve-artifacts`` on a persistent store: runs anywhere
log to it with ``MLFLOW_TRACKING_URI=http://HOST:PORT`` and upload their artifacts (the fitted
``runs:/ID/model`` included) through the server, so clients need no shared disk or bucket
credentials. By default it serves the local store (``<results_dir>/mlflow.db`` and
``<results_dir>/artifacts``), so runs made here and runs made elsewhere sit side by side.

Clients survive a server restart: MLflow's HTTP client retries refused connections and
408/429/5xx answers with exponential backoff (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, default 7,
about four minutes in all; ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``, default 2).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .config import TrackingConfig
from .errors import EchoesError
from .tracking import ensure_store

GRACE_SECONDS = 10  # a stopping server finishes requests in flight for this long; clients retry the rest


def default_store() -> tuple[str, str]:
    """The local store: ``sqlite:///<results_dir>/mlflow.db`` and its ``artifacts`` folder."""
    root = Path(TrackingConfig().results_dir).resolve()
    return f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts")


def server_command(host: str, port: int, backend_store: str, artifacts: str, workers: int,
                   allowed_hosts: str | None = None) -> list[str]:
    """The ``mlflow server`` command line (run with this interpreter, so the venv's MLflow)."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
           "--backend-store-uri", backend_store, "--serve-artifacts", "--artifacts-destination", artifacts,
           "--workers", str(workers), "--uvicorn-opts", f"--timeout-graceful-shutdown {GRACE_SECONDS}"]
    return cmd + (["--allowed-hosts", allowed_hosts] if allowed_hosts else [])


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is no obstacle
        try:
            s.bind((host, port))
        except OSError as e:
            raise EchoesError(f"cannot listen on {host}:{port} ({e.strerror}) — pick another --port or --host"
                              ) from None


def client_uri(host: str, port: int) -> str:
    """The URI clients use: a wildcard bind address is reached through this machine's name."""
    return f"http://{socket.gethostname() if host in ('0.0.0.0', '::') else host}:{port}"


def serve(host: str = "127.0.0.1", port: int = 5000, backend_store: str | None = None,
          artifacts: str | None = None, workers: int | None = None, allowed_hosts: str | None = None,
          echo: Callable[[str], None] = print) -> int:
    """Run the tracking server until it is stopped (SIGINT/SIGTERM); return its exit code."""
    default_backend, default_artifacts = default_store()
    backend_store = backend_store or default_backend
    artifacts = artifacts or default_artifacts
    if "://" not in artifacts:
        artifacts = str(Path(artifacts).resolve())
        Path(artifacts).mkdir(parents=True, exist_ok=True)
    if backend_store.startswith("http"):
        raise EchoesError(f"--backend-store '{backend_store}' is a server — give a database URI "
                          "(sqlite:///FILE or postgresql://USER@HOST/DB)")
    ensure_store(backend_store)  # create or upgrade the schema once, before the server's workers open it
    _check_port(host, port)
    # SQLite takes one writer at a time: more workers only queue on its lock
    workers = workers or (1 if backend_store.startswith("sqlite") else 4)
    echo(f"tracking server on {client_uri(host, port)}  (store {backend_store}, artifacts {artifacts})")
    echo(f"point runs at it: export MLFLOW_TRACKING_URI={client_uri(host, port)}")
    # its own process group: `mlflow server` starts uvicorn as a child, and both must stop together
    # MLflow's job runner (GenAI evaluation jobs: eight more processes, 2 GB) is off unless asked for
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    proc = subprocess.Popen(server_command(host, port, backend_store, artifacts, workers, allowed_hosts),
                            start_new_session=True, env=env)

    def stop(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
        _wait_group(proc.pid)  # uvicorn outlives the mlflow command by its graceful shutdown
        return code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _wait_group(pgid: int, timeout: float = 30.0) -> None:
    """Wait until every process of the group has exited (the port is free again); kill what lingers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
