"""The fitted model: predict on raw arrays, save and load, predict/evaluate commands, MLflow serving."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from echoes import Model, load_data, load_model, train
from echoes.api import experiment_config
from echoes.cli import main
from echoes.errors import EchoesError
from echoes.models import create_model

SOURCE = "synthetic:motion"
DATA = {"data": SOURCE, "data.n_train": 120, "data.n_test": 40}


def _raw_test(result):
    """The test split as a user would have it: raw (unstandardised) arrays and class names."""
    raw = load_data(data=SOURCE, **{"data.standardize": False, "data.n_train": 120, "data.n_test": 40})
    arrays = [raw.test.x[i, :n] for i, n in enumerate(raw.test.lengths)]
    return arrays, np.array(raw.class_names)[raw.test.y]


@pytest.fixture(scope="module")
def esn_run(tmp_path_factory):
    os.chdir(tmp_path_factory.mktemp("esn"))
    return train(model="esn", tracking=False, **DATA, **{"model.units": 60})


def test_train_returns_a_fitted_model_that_predicts_raw_arrays(esn_run):
    model = esn_run.model
    assert isinstance(model, Model) and model.class_names == list(esn_run.class_names)
    arrays, labels = _raw_test(esn_run)
    predicted = model.predict(arrays)
    # the model standardises raw inputs itself: its accuracy on them is the run's test accuracy
    assert np.mean(predicted == labels) == pytest.approx(esn_run["test_accuracy"])
    assert model.score(arrays, labels) == pytest.approx(esn_run["test_accuracy"])
    proba = model.predict_proba(arrays)
    assert proba.shape == (len(arrays), len(model.class_names)) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert (model.classes_[proba.argmax(1)] == predicted).all()
    # (N, T, F) + lengths gives the same as the list of (T_i, F) arrays
    lengths = np.array([len(a) for a in arrays])
    padded = np.zeros((len(arrays), lengths.max(), arrays[0].shape[1]), np.float32)
    for i, a in enumerate(arrays):
        padded[i, : len(a)] = a
    assert np.allclose(model.predict_proba(padded, lengths), proba, atol=1e-6)


def test_saved_model_reloads_and_predicts_the_same(esn_run, tmp_path):
    arrays, _ = _raw_test(esn_run)
    folder = esn_run.model.save(tmp_path / "esn")
    assert sorted(p.name for p in folder.iterdir()) == ["echoes-model.json", "weights.pt"]
    meta = json.loads((folder / "echoes-model.json").read_text())
    assert meta["input_size"] == 8 and meta["class_names"] == esn_run.model.class_names and meta["model"] == "esn"
    again = load_model(folder)
    assert np.array_equal(again.predict_proba(arrays), esn_run.model.predict_proba(arrays))


def test_broken_or_foreign_model_folders_give_one_line(tmp_path, esn_run):
    with pytest.raises(EchoesError, match="not a saved echoes model"):
        load_model(tmp_path)
    with pytest.raises(EchoesError, match="not found"):
        load_model(tmp_path / "missing")
    folder = esn_run.model.save(tmp_path / "m")
    (folder / "weights.pt").write_bytes(b"not a torch file")
    with pytest.raises(EchoesError, match="damaged"):
        load_model(folder)


def test_wrong_feature_count_and_unknown_labels_are_named(esn_run):
    with pytest.raises(EchoesError, match="trained on 8"):
        esn_run.model.predict([np.zeros((5, 3), np.float32)])
    with pytest.raises(EchoesError, match="not a class of this model"):
        esn_run.model.score([np.zeros((5, 8), np.float32)], ["sideways"])


def test_framewise_models_predict_per_frame():
    module = create_model("lstm", input_size=3, num_classes=2, framewise=True, hidden_size=8)
    model = Model(module, experiment_config(model="lstm"), ["a", "b"])
    arrays = [np.random.default_rng(0).standard_normal((t, 3)).astype(np.float32) for t in (4, 7)]
    labels = model.predict(arrays)
    assert [len(x) for x in labels] == [4, 7] and set(np.concatenate(labels)) <= {"a", "b"}
    proba = model.predict_proba(arrays)
    assert [p.shape for p in proba] == [(4, 2), (7, 2)]
    assert model.score(arrays, [list(x) for x in labels]) == 1.0  # its own predictions, frame by frame


def test_tracked_run_logs_a_model_loadable_by_run_id(tracked_dir):
    r = train(model="esn", **DATA, **{"model.units": 30})
    arrays, _ = _raw_test(r)
    expected = r.model.predict_proba(arrays)
    for ref in (r.run_id, f"runs:/{r.run_id}", f"runs:/{r.run_id}/model"):
        assert np.array_equal(load_model(ref).predict_proba(arrays), expected)
    with pytest.raises(EchoesError, match="has no logged model"):
        load_model("0" * 32)


def test_predict_and_evaluate_commands_agree_with_the_model(esn_run, tmp_path, capsys):
    folder = esn_run.model.save(tmp_path / "esn")
    data_opts = ["n_train=120", "n_test=40"]
    out = tmp_path / "preds.csv"
    assert main(["predict", str(folder), SOURCE, *data_opts, "--out", str(out), "--top-k", "3"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].split(",")[:4] == ["index", "label", "predicted", "probability"] and "top3" in lines[0]
    arrays, labels = _raw_test(esn_run)
    predicted = [line.split(",")[2] for line in lines[1:]]
    assert predicted == list(esn_run.model.predict(arrays))
    assert f"accuracy {esn_run['test_accuracy']:.4f}" in capsys.readouterr().out

    report = tmp_path / "eval.json"
    assert main(["evaluate", str(folder), SOURCE, *data_opts, "--json", str(report), "--device", "cpu"]) == 0
    metrics = json.loads(report.read_text())
    assert metrics["test_accuracy"] == pytest.approx(esn_run["test_accuracy"])
    assert metrics["test_loss"] == pytest.approx(esn_run["test_loss"], rel=1e-5)
    assert np.sum(metrics["confusion_matrix"]) == len(arrays)


@pytest.mark.parametrize("args, message", [
    (["predict", "nowhere", SOURCE], "not found"),
    (["predict", "{model}", SOURCE, "--out", "{tmp}"], "is a directory"),
    (["predict", "{model}", SOURCE, "--out", "preds.txt"], "must end in .csv or .json"),
    (["predict", "{model}", SOURCE, "--split", "dev"], "choose one of"),
    (["evaluate", "{model}", "nosuchkind:x"], "unknown data source"),
])
def test_predict_bad_input_is_one_line(esn_run, tmp_path, capsys, args, message):
    folder = esn_run.model.save(tmp_path / "m")
    argv = [a.format(model=folder, tmp=tmp_path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("model_name, options", [("esn", {"model.units": 30}),
                                                 ("lstm", {"model.hidden_size": 8, "train.epochs": 2})])
def test_mlflow_models_serve_answers_like_the_model(tracked_dir, model_name, options):
    r = train(model=model_name, **DATA, **options)
    arrays, _ = _raw_test(r)
    arrays = arrays[:6]
    lengths = [len(a) for a in arrays]
    padded = np.zeros((len(arrays), max(lengths), 8), np.float32)
    for i, a in enumerate(arrays):
        padded[i, : len(a)] = a
    port = _free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tracked_dir / 'echoes-runs' / 'mlflow.db'}",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{r.run_id}/model", "--env-manager",
         "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "mlflow models serve did not start"
                time.sleep(0.5)
        body = json.dumps({"inputs": {"x": padded.tolist(), "lengths": lengths}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    assert [a["label"] for a in answer] == list(r.model.predict(arrays))
    served = np.array([[a[f"p_{c}"] for c in r.model.class_names] for a in answer])
    assert np.allclose(served, r.model.predict_proba(arrays), atol=1e-5)


def _python_blocks(text: str, heading: str) -> str:
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(block.split("```", 1)[0] for block in section.split("```python\n")[1:])


def test_readme_python_api_and_the_example_script_run(run_dir):
    root = Path(__file__).resolve().parents[1]
    code = _python_blocks((root / "README.md").read_text(), "Python API")
    assert "load_model" in code and "predict" in code
    exec(compile(code, "README.md#python-api", "exec"), {})
    out = subprocess.run([sys.executable, str(root / "examples" / "quickstart.py")], capture_output=True,
                         text=True, cwd=run_dir, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "same predictions" in out.stdout and (run_dir / "esn-basicmotions" / "weights.pt").is_file()


def test_predict_reads_an_npz_of_inputs_only(esn_run, tmp_path, capsys):
    folder = esn_run.model.save(tmp_path / "esn")
    arrays, labels = _raw_test(esn_run)
    lengths = np.array([len(a) for a in arrays])
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, X=np.concatenate(arrays), lengths=lengths)  # the safe (ΣT, F) + lengths form
    out = tmp_path / "preds.json"
    assert main(["predict", str(folder), str(inputs), "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["predicted"] for r in rows] == list(esn_run.model.predict(arrays)) and "label" not in rows[0]
    assert "accuracy" not in capsys.readouterr().out
    assert main(["evaluate", str(folder), f"npz:{inputs}"]) == 2
    assert "no labels to evaluate" in capsys.readouterr().err
    np.savez(inputs, X=np.concatenate(arrays), lengths=lengths, y=labels)  # with labels: scored by name
    assert main(["evaluate", str(folder), str(inputs), "--device", "cpu"]) == 0
    assert f"test accuracy {esn_run['test_accuracy']:.4f}" in capsys.readouterr().out
