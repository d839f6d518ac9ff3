"""`echoes server`: a real MLflow tracking server process on 127.0.0.1, runs from several processes
logging to it over HTTP (artifacts through its proxy), and a restart in the middle that loses nothing."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

TINY = ["model=esn", "model.units=20", "data=synthetic:motion", "data.n_train=40", "data.n_test=20"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(uri: str, proc: subprocess.Popen, log=None, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited with {proc.returncode}: {log and log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no server at {uri} after {timeout:.0f}s")


class Server:
    """`echoes server` as a child process, stoppable and restartable on the same port and store."""

    def __init__(self, folder, port: int) -> None:
        self.folder, self.port = folder, port
        self.uri = f"http://127.0.0.1:{port}"
        self.log = open(folder / "server.log", "ab")  # noqa: SIM115 — kept open across restarts

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "echoes", "server", "--port", str(self.port),
             "--backend-store", f"sqlite:///{self.folder / 'hq.db'}", "--artifacts", str(self.folder / "hq-art")],
            cwd=self.folder, stdout=self.log, stderr=subprocess.STDOUT)
        wait_healthy(self.uri, self.proc, self.folder / "server.log")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path, free_port())
    s.start()
    yield s
    if s.proc.poll() is None:
        s.stop()
    s.log.close()


def finished_runs(uri: str, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")


def test_runs_from_four_processes_survive_a_server_restart(server, tmp_path):
    env = dict(os.environ, MLFLOW_TRACKING_URI=server.uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="8")
    work = tmp_path / "clients"  # no shared disk with the server: the clients' own folder
    work.mkdir()
    train = " ".join([sys.executable, "-m", "echoes", "train", *TINY, "tracking.experiment=hq"])
    clients = [subprocess.Popen(["bash", "-c", f"for s in {2 * i} {2 * i + 1}; do {train} seed=$s || exit 1; done"],
                                cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
               for i in range(4)]
    try:
        deadline = time.monotonic() + 600
        while len(before := finished_runs(server.uri, "hq")) < 2:  # restart once some runs are acknowledged
            assert time.monotonic() < deadline and all(c.poll() in (None, 0) for c in clients)
            time.sleep(0.5)
        assert server.stop() == 0
        server.start()
        outputs = [c.communicate(timeout=900)[0] for c in clients]
    finally:
        for c in clients:
            if c.poll() is None:
                os.killpg(c.pid, signal.SIGKILL)
    assert all(c.returncode == 0 for c in clients), "\n".join(outputs)

    runs = finished_runs(server.uri, "hq")
    printed = {line.split()[2] for out in outputs for line in out.splitlines() if line.startswith("mlflow run ")}
    assert len(printed) == 8 and {r.info.run_id for r in runs} == printed  # every run once, none lost
    assert {r.info.run_id for r in before} <= printed
    assert sorted(int(r.data.params["seed"]) for r in runs) == list(range(8))

    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.uri)
    for r in runs:  # artifacts went through the server's proxy into its own folder
        assert r.info.artifact_uri.startswith("mlflow-artifacts:")
        assert {a.path for a in client.list_artifacts(r.info.run_id, "model")} >= {"model/MLmodel"}
    assert len(list((tmp_path / "hq-art").rglob("MLmodel"))) == 8
    assert not (work / "echoes-runs" / "mlflow.db").exists()

    from echoes import load_data, load_model

    model = load_model(f"runs:/{runs[0].info.run_id}/model", tracking_uri=server.uri)
    raw = load_data(data="synthetic:motion", **{"data.n_train": 40, "data.n_test": 20, "data.standardize": False})
    assert np.isclose(model.score(raw.test), runs[0].data.metrics["test_accuracy"])  # the model scales raw inputs

    report = subprocess.run([sys.executable, "-m", "echoes", "report", "--tracking-uri", server.uri, "--experiment",
                             "hq", "--no-png", "--out", str(tmp_path / "report")], capture_output=True, text=True,
                            cwd=work)
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "report.html").is_file()


def test_server_refuses_a_busy_port_and_a_server_as_store(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        busy = subprocess.run([sys.executable, "-m", "echoes", "server", "--port", str(port)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
    assert busy.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert "--port" in busy.stderr and "Traceback" not in busy.stderr
    bad = subprocess.run([sys.executable, "-m", "echoes", "server", "--backend-store", "http://elsewhere:5000"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "is a server — give a database URI" in bad.stderr
