"""From generated .avi files to trained models, through the CLI: make-videos, features, train."""

import json

import pytest

from echoes.cli import main


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos") / "ucf"
    assert main(["data", "make-videos", str(root), "--classes", "6", "--groups", "4", "--clips", "2",
                 "--min-frames", "8", "--max-frames", "10", "--size", "48x32", "--seed", "1"]) == 0
    return root


def test_make_videos_refuses_to_overwrite(videos, capsys):
    assert main(["data", "make-videos", str(videos)]) == 2
    assert "--force" in capsys.readouterr().err


def test_features_command_extracts_once_then_reuses(videos, tmp_path, capsys):
    args = ["features", f"ucf101:{videos}", "backbone=small_cnn", "frames=5", f"cache_dir={tmp_path}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "train 36 / test 12 sequences, 5 steps × 128 features" in out
    assert "cache_reused: False" in out and "extraction_clips_per_second" in out
    assert main(args) == 0
    assert "cache_reused: True" in capsys.readouterr().out
    assert main(["features", f"ucf101:{videos}", "backbone=resnet19", f"cache_dir={tmp_path}"]) == 2
    assert "did you mean 'resnet18'" in capsys.readouterr().err


def test_train_on_videos_counts_a_corrupt_clip_in_the_run_metrics(videos, tracked_dir, capsys):
    import shutil

    root = tracked_dir / "ucf"
    shutil.copytree(videos, root)
    (root / "UCF-101" / "ZoomOut" / "v_ZoomOut_g02_c01.avi").write_bytes(b"broken")
    with pytest.warns(match="v_ZoomOut_g02_c01.avi"):
        rc = main(["train", "model=transformer", f"data=ucf101:{root}", "data.frames=5",
                   f"data.cache_dir={tracked_dir / 'cache'}", "model.d_model=16", "model.nhead=2",
                   "train.epochs=2", "--json", "r.json"])
    assert rc == 0
    result = json.loads((tracked_dir / "r.json").read_text())
    assert result["skipped_files"] == 1 and 0 <= result["test_accuracy"] <= 1
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tracked_dir / 'echoes-runs' / 'mlflow.db'}")
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.metrics["skipped_files"] == 1


def test_an_end_to_end_model_trains_on_raw_frames(videos, tmp_path, capsys):
    rc = main(["train", "model=cnn_lstm", "model.backbone=small_cnn", "model.hidden_size=8",
               f"data=ucf101:{videos}", "data.features=frames", "data.frames=3", "data.size=16",
               f"data.cache_dir={tmp_path}", "train.epochs=1", "train.batch_size=8",
               "tracking=false", "--json", str(tmp_path / "r.json")])
    assert rc == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["family"] == "video" and result["epochs"] == 1
    assert "768 features" in capsys.readouterr().out  # 3·16·16 pixels per step
