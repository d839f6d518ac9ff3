import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from echoes.api import train
from echoes.config import load_config


def test_tensorboard_gets_each_epoch_and_the_hparams(run_dir, tiny_npz):
    cfg = load_config(None, [f"data=npz:{tiny_npz}", "model=gru", "model.hidden_size=8", "train.epochs=3",
                             "train.patience=null", "tracking.enabled=false", "tracking.tensorboard=true",
                             "tracking.experiment=tb"])
    r = train(cfg)
    (logdir,) = (run_dir / "echoes-runs" / "tensorboard" / "tb").iterdir()
    assert logdir.name.startswith("gru-npz-")
    events = EventAccumulator(str(logdir))
    events.Reload()
    curve = [(s.step, s.value) for s in events.Scalars("epoch/val_accuracy")]
    assert curve == [(i + 1, pytest.approx(h["val_accuracy"])) for i, h in enumerate(r.history)]
    assert events.Scalars("test_accuracy")[0].value == pytest.approx(r["test_accuracy"])
    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = session.session_start_info.hparams
    assert hparams["model.name"].string_value == "gru" and hparams["train.epochs"].number_value == 3
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert "test_accuracy" in {m.name.tag for m in experiment.experiment.metric_infos}
