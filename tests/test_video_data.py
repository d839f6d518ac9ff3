"""Video data: sampling, PyAV decoding, the UCF101 layout, the generator and the feature cache.

Every test writes real .avi files (MPEG-4, like UCF101) and reads them back with PyAV.
"""

import json
import shutil

import numpy as np
import pytest

from echoes.data import load_dataset
from echoes.data.sequences import stratified_split
from echoes.data.ucf101 import read_split, ucf101
from echoes.data.video.backbones import create_backbone
from echoes.data.video.cache import FrameSettings, build_cache, load_cache
from echoes.data.video.decode import UnreadableVideo, decode_clip, sample_indices
from echoes.data.video.make_videos import held_out_groups, make_videos, write_video
from echoes.errors import EchoesError, SkippedFileWarning

TINY = dict(classes=6, groups=4, clips=2, min_frames=8, max_frames=10, width=48, height=32)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """48 short clips of 6 motion classes in the UCF101 layout."""
    root = tmp_path_factory.mktemp("ucf") / "ucf"
    make_videos(root, seed=3, **TINY)
    return root


def ramp_video(path, frames=40, width=64, height=48):
    """Frame i is a flat grey of level 20 + 5·i: its brightness tells which frame was decoded."""
    levels = 20 + 5 * np.arange(frames)
    video = np.broadcast_to(levels[:, None, None, None], (frames, height, width, 3)).astype(np.uint8)
    write_video(path, np.ascontiguousarray(video))
    return levels


# --- sampling and decoding ---------------------------------------------------------------


def test_uniform_sampling_spans_first_to_last_frame():
    assert sample_indices(100, 4).tolist() == [0, 33, 66, 99]
    assert sample_indices(1, 3).tolist() == [0, 0, 0]


def test_segment_sampling_centres_for_evaluation_random_offsets_for_training():
    assert sample_indices(100, 4, "segments").tolist() == [12, 37, 62, 87]
    rng = np.random.default_rng(0)
    draws = [sample_indices(100, 4, "segments", train=True, rng=rng) for _ in range(20)]
    for d in draws:  # one frame inside each quarter of the clip
        assert all(25 * k <= i < 25 * (k + 1) for k, i in enumerate(d))
    assert len({tuple(d) for d in draws}) > 1
    short = sample_indices(3, 8, "segments")
    assert short.min() >= 0 and short.max() <= 2 and (np.diff(short) >= 0).all()
    with pytest.raises(ValueError):
        sample_indices(10, 4, "segments", train=True)  # training offsets need an rng
    with pytest.raises(ValueError):
        sample_indices(10, 4, "random")


def test_decode_returns_the_sampled_frames_resized_and_cropped(tmp_path):
    levels = ramp_video(tmp_path / "ramp.avi")
    frames = decode_clip(tmp_path / "ramp.avi", frames=5, size=24)
    assert frames.shape == (5, 24, 24, 3) and frames.dtype == np.uint8
    expected = levels[sample_indices(40, 5)]
    assert np.abs(frames.reshape(5, -1).mean(1) - expected).max() < 4


def test_seeking_gives_the_frames_sequential_decoding_gives(tmp_path):
    ramp_video(tmp_path / "long.avi", frames=120)
    sequential = decode_clip(tmp_path / "long.avi", frames=6, size=16)
    seeking = decode_clip(tmp_path / "long.avi", frames=6, size=16, seek_threshold=50, seek_gap=5)
    np.testing.assert_array_equal(seeking, sequential)


def test_unreadable_files_raise_unreadable_video(tmp_path):
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"not a video at all" * 100)
    with pytest.raises(UnreadableVideo, match="garbage.avi"):
        decode_clip(garbage)
    with pytest.raises(UnreadableVideo, match="missing.avi"):
        decode_clip(tmp_path / "missing.avi")


def test_a_truncated_clip_is_sampled_from_the_frames_it_still_has(tmp_path):
    ramp_video(tmp_path / "full.avi", frames=60)
    data = (tmp_path / "full.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    frames = decode_clip(tmp_path / "cut.avi", frames=4, size=16)
    assert frames.shape == (4, 16, 16, 3)
    levels = frames.reshape(4, -1).mean(1)
    assert (np.diff(levels) > 0).all() and levels[-1] < 20 + 5 * 59 - 20  # ends early, in order


# --- the generator -------------------------------------------------------------------------


def test_make_videos_writes_the_ucf101_layout(tiny_root):
    lists = tiny_root / "ucfTrainTestlist"
    class_ind = (lists / "classInd.txt").read_bytes()
    assert class_ind.startswith(b"1 MoveLeft\r\n") and class_ind.count(b"\r\n") == 6
    assert len(list((tiny_root / "UCF-101").rglob("*.avi"))) == 6 * 4 * 2
    for split in (1, 2, 3):
        test = (lists / f"testlist0{split}.txt").read_text().splitlines()
        train = (lists / f"trainlist0{split}.txt").read_text().splitlines()
        assert all(len(line.split()) == 1 for line in test)  # no labels in test lists
        assert all(len(line.split()) == 2 for line in train)
        assert {int(line.split("_g")[1][:2]) for line in test} == set(held_out_groups(4, split))
        assert len(train) + len(test) == 48
    assert not (tiny_root / ".make-videos-partial").exists()


def test_make_videos_is_deterministic_and_keeps_existing_data(tiny_root, tmp_path):
    again = tmp_path / "again"
    make_videos(again, seed=3, **TINY)
    clip = "ZoomIn/v_ZoomIn_g02_c01.avi"
    assert (again / "UCF-101" / clip).read_bytes() == (tiny_root / "UCF-101" / clip).read_bytes()
    with pytest.raises(EchoesError, match="--force"):
        make_videos(again, seed=4, **TINY)
    make_videos(again, seed=4, force=True, **TINY)
    assert (again / "UCF-101" / clip).read_bytes() != (tiny_root / "UCF-101" / clip).read_bytes()


def test_make_videos_rejects_bad_sizes(tmp_path):
    with pytest.raises(EchoesError, match="even"):
        make_videos(tmp_path / "x", **{**TINY, "width": 47})
    with pytest.raises(EchoesError, match="groups"):
        make_videos(tmp_path / "x", **{**TINY, "groups": 3})


# --- the UCF101 layout ---------------------------------------------------------------------


def official_layout(root):
    """The real set's quirks: CRLF, 1-based indices, unlabelled test lists, and the
    HandstandPushups/ folder holding v_HandStandPushups_* files."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n")
    files = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c02.avi",
             "HandstandPushups/v_HandStandPushups_g01_c01.avi",
             "HandstandPushups/v_HandStandPushups_g09_c01.avi"]
    for rel in files:
        (root / "UCF-101" / rel).parent.mkdir(parents=True, exist_ok=True)
        ramp_video(root / "UCF-101" / rel, frames=12, width=32, height=24)
    (lists / "trainlist01.txt").write_bytes(f"{files[1]} 1\r\n{files[3]} 2\r\n".encode())
    (lists / "testlist01.txt").write_bytes(f"{files[0]}\r\n{files[2]}\r\n".encode())
    return files


def test_split_files_are_parsed_like_the_official_ones(tmp_path):
    files = official_layout(tmp_path)
    classes, splits = read_split(tmp_path, 1)
    assert classes == ["ApplyEyeMakeup", "HandstandPushups"]
    assert [(c.rel, c.label, c.group) for c in splits["train"]] == [(files[1], 0, 8), (files[3], 1, 9)]
    assert [(c.rel, c.label, c.group) for c in splits["test"]] == [(files[0], 0, 1), (files[2], 1, 1)]
    assert all(c.path.is_file() for part in splits.values() for c in part)


# --- the feature cache -----------------------------------------------------------------------


def test_features_are_extracted_once_then_reused(tiny_root, tmp_path):
    opts = dict(frames=6, cache_dir=str(tmp_path))
    first = ucf101(str(tiny_root), **opts)
    assert first.info["cache_reused"] is False and first.info["skipped_files"] == 0
    folder = tmp_path / "ucf101"
    manifest = next(folder.rglob("manifest.json"))
    stamp = manifest.stat().st_mtime_ns
    second = ucf101(str(tiny_root), **opts)
    assert second.info["cache_reused"] is True and manifest.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(second.train.x, first.train.x)
    assert first.train.x.shape == (36, 6, 128) and len(first.test) == 12  # split 1 tests g01
    meta = json.loads(manifest.read_text())
    assert meta["settings"]["features"] == "small_cnn" and meta["settings"]["frames"] == 6
    other = ucf101(str(tiny_root), frames=4, cache_dir=str(tmp_path))  # other settings: new cache
    assert other.info["cache_reused"] is False and other.train.x.shape[1] == 4


def _interrupt_after_8_clips(folder, splits, settings, clip_batch):
    """Start an extraction and stop it (as Ctrl-C would) once 8 clips are on disk."""
    def stop(split, done, total):
        if done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_cache(folder, splits, settings, clip_batch=clip_batch, on_chunk=stop)


def test_an_interrupted_extraction_resumes_and_matches_an_uninterrupted_one(tiny_root, tmp_path):
    _, splits = read_split(tiny_root, 1)
    settings = FrameSettings("small_cnn", "none", 4, 24, "segments", seed=1)

    _interrupt_after_8_clips(tmp_path / "a", splits, settings, clip_batch=4)
    assert not (tmp_path / "a" / "manifest.json").exists()  # never looks complete
    assert load_cache(tmp_path / "a", settings, "anything") is None
    chunks = []
    resumed = build_cache(tmp_path / "a", splits, settings, clip_batch=4,
                          on_chunk=lambda s, d, t: chunks.append((s, d)))
    assert chunks[0] == ("train", 12)  # went on after the 8 clips already on disk
    assert resumed.reused is False and not (tmp_path / "a" / "state.json").exists()
    fresh = build_cache(tmp_path / "b", splits, settings, clip_batch=16)
    for name in ("train", "test"):
        np.testing.assert_allclose(resumed.splits[name].x, fresh.splits[name].x, atol=1e-6)


def test_a_corrupt_clip_is_skipped_named_and_counted(tiny_root, tmp_path):
    root = tmp_path / "ucf"
    shutil.copytree(tiny_root, root)
    bad = "MoveUp/v_MoveUp_g03_c02.avi"
    (root / "UCF-101" / bad).write_bytes(b"\x00garbage" * 50)
    with pytest.warns(SkippedFileWarning, match="v_MoveUp_g03_c02.avi"):
        ds = load_dataset(f"ucf101:{root}", frames=4, cache_dir=str(tmp_path / "cache"))
    assert ds.info["skipped_files"] == 1
    assert len(ds.train) + len(ds.val) == 35 and len(ds.test) == 12
    with pytest.warns(SkippedFileWarning, match="v_MoveUp_g03_c02.avi"):  # said again on reuse
        again = ucf101(str(root), frames=4, cache_dir=str(tmp_path / "cache"))
    assert again.info["cache_reused"] and again.info["skipped_files"] == 1


def test_a_changed_source_is_extracted_again(tiny_root, tmp_path):
    root = tmp_path / "ucf"
    shutil.copytree(tiny_root, root)
    opts = dict(frames=4, cache_dir=str(tmp_path / "cache"))
    ucf101(str(root), **opts)
    clip = root / "UCF-101" / "MoveLeft" / "v_MoveLeft_g02_c01.avi"
    shutil.copyfile(root / "UCF-101" / "ZoomIn" / "v_ZoomIn_g02_c01.avi", clip)
    assert ucf101(str(root), **opts).info["cache_reused"] is False


def test_validation_never_splits_a_group(tiny_root, tmp_path):
    raw = ucf101(str(tiny_root), frames=4, cache_dir=str(tmp_path))
    tr, va = stratified_split(raw.train.y, 0.3, 0, raw.train_groups)
    assert len(va) > 0
    for cls in np.unique(raw.train.y):
        train_groups = set(raw.train_groups[tr][raw.train.y[tr] == cls])
        val_groups = set(raw.train_groups[va][raw.train.y[va] == cls])
        assert val_groups and not train_groups & val_groups


def test_raw_frames_mode_keeps_uint8_pixels_on_disk(tiny_root, tmp_path):
    ds = load_dataset(f"ucf101:{tiny_root}", features="frames", frames=3, size=16,
                      cache_dir=str(tmp_path))
    assert ds.train.x.dtype == np.uint8 and ds.num_features == 3 * 16 * 16
    assert "feature_mean" not in ds.info  # pixels are not standardised
    _, splits = read_split(tiny_root, 1)
    clip = splits["test"][0]
    pixels = decode_clip(clip.path, 3, 16).transpose(0, 3, 1, 2).reshape(3, -1)
    np.testing.assert_array_equal(np.asarray(ds.test.x[0]), pixels)
    x, lengths, _ = next(ds.train.batches(4))
    assert x.shape == (4, 3, 768) and float(x.max()) > 1  # batches carry 0..255 values


# --- backbones -------------------------------------------------------------------------------


def test_small_cnn_is_the_same_on_every_build():
    import torch

    frames = torch.rand(3, 3, 64, 64)
    a, b = create_backbone("small_cnn"), create_backbone("small_cnn")
    np.testing.assert_array_equal(a(frames).detach().numpy(), b(frames).detach().numpy())
    assert a(frames).shape == (3, 128)
    for level in (0.3, 0.7):  # zero-mean first filters: flat colour (lighting) is not seen
        assert a(torch.full((1, 3, 64, 64), level)).abs().max() < 1e-5


def test_torchvision_backbones_without_weights():
    import torch

    net = create_backbone("resnet18", "none")
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 512)


def test_random_torchvision_backbones_are_seeded_by_the_source(tiny_root, tmp_path):
    """weights=none: two extractions of the same clips (one of them interrupted and resumed) embed with
    the same random network, drawn from the source's fingerprint."""
    _, splits = read_split(tiny_root, 1)
    settings = FrameSettings("resnet18", "none", 2, 32, "uniform", seed=0)
    _interrupt_after_8_clips(tmp_path / "a", splits, settings, clip_batch=8)
    resumed = build_cache(tmp_path / "a", splits, settings, clip_batch=8)
    fresh = build_cache(tmp_path / "b", splits, settings, clip_batch=8)
    for name in ("train", "test"):
        np.testing.assert_allclose(resumed.splits[name].x, fresh.splits[name].x, atol=1e-5)
