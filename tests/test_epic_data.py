"""EPIC-KITCHENS-100: the generated set (make-epic) and the epic100 source on real MP4 files and JPEG frames."""

import csv
import json
import shutil

import numpy as np
import pytest

from echoes.cli import main
from echoes.data import load_dataset
from echoes.data.epic100 import epic100
from echoes.data.video.decode import FRAME_FILE, decode_clip, sample_indices
from echoes.data.video.make_epic import COLUMNS, allowed_pairs, make_epic, pair_probabilities, tail_classes
from echoes.data.video.make_videos import write_video
from echoes.errors import EchoesError, SkippedFileWarning

TINY = dict(verbs=4, nouns=5, participants=3, unseen=1, videos=2, segments=42, min_frames=6, max_frames=9,
            width=32, height=24)
LOAD = dict(frames=4, size=16, workers=0)  # small_cnn features of 4 frames of 16 px


@pytest.fixture(scope="module")
def epic_root(tmp_path_factory):
    """42 actions of 4 verbs × 5 nouns in 7 videos of 3 seen participants and 1 unseen one."""
    root = tmp_path_factory.mktemp("epic") / "epic"
    make_epic(root, seed=0, **TINY)
    return root


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load(root, cache, **options):
    return epic100(str(root), seed=0, cache_dir=str(cache), **{**LOAD, **options})


# --- the generator -------------------------------------------------------------------------


def test_make_epic_writes_the_official_layout(epic_root):
    import av

    ann = epic_root / "annotations"
    train, val = rows(ann / "EPIC_100_train.csv"), rows(ann / "EPIC_100_validation.csv")
    assert list(train[0]) == COLUMNS and len(train) + len(val) == TINY["segments"]
    assert [r["key"] for r in rows(ann / "EPIC_100_verb_classes.csv")] == ["take", "put", "push", "pull"]
    assert [r["id"] for r in rows(ann / "EPIC_100_noun_classes.csv")] == ["0", "1", "2", "3", "4"]
    unseen = {r["participant_id"] for r in rows(ann / "EPIC_100_unseen_participant_ids_validation.csv")}
    assert unseen == {"P04"}
    assert unseen.isdisjoint(r["participant_id"] for r in train) and unseen <= {r["participant_id"] for r in val}
    assert rows(ann / "EPIC_100_tail_verbs.csv") and rows(ann / "EPIC_100_tail_nouns.csv")
    rates = {}
    for r in train + val:  # frames and timestamps agree at each video's own frame rate
        video = epic_root / r["participant_id"] / "videos" / f"{r['video_id']}.MP4"
        if video not in rates:
            with av.open(str(video)) as c:
                rates[video] = (float(c.streams.video[0].average_rate), c.streams.video[0].frames)
        fps, total = rates[video]
        h, m, s = (float(v) for v in r["start_timestamp"].split(":"))
        assert round((h * 3600 + m * 60 + s) * fps) + 1 == int(r["start_frame"])
        assert int(r["start_frame"]) < int(r["stop_frame"]) <= total
        assert r["narration"] == f"{r['verb']} {r['noun']}" and r["all_noun_classes"] == f"[{r['noun_class']}]"
    assert {fps for fps, _ in rates.values()} == {25.0, 30.0}


def test_make_epic_is_deterministic_per_seed_and_keeps_existing_data(epic_root, tmp_path):
    small = {**TINY, "participants": 1, "unseen": 0, "segments": 4}
    files = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        make_epic(tmp_path / name, seed=seed, **small)
        files[name] = {p.relative_to(tmp_path / name): p.read_bytes()
                       for p in sorted((tmp_path / name).rglob("*")) if p.is_file()}
    assert files["a"] == files["b"]
    assert files["a"].keys() == files["c"].keys() and files["a"] != files["c"]
    assert not list(tmp_path.glob("*/.make-epic-partial"))
    with pytest.raises(EchoesError, match="--force"):
        make_epic(tmp_path / "a", **small)
    assert main(["data", "make-epic", str(tmp_path / "a"), "--verbs", "9"]) == 2


def test_look_alike_nouns_split_the_verbs_and_pairs_follow_a_long_tail():
    ok = allowed_pairs(6, 8)  # plate/lid (0, 1) and knife/spoon (3, 4) look alike
    assert ok[0::2, 0].all() and not ok[1::2, 0].any() and ok[1::2, 1].all() and not ok[0::2, 1].any()
    assert (ok[:, 3] ^ ok[:, 4]).all() and ok[:, [2, 5, 6, 7]].all()
    p = pair_probabilities(6, 8, seed=0)
    assert p[~ok].sum() == 0 and np.isclose(p.sum(), 1)
    live = np.sort(p[ok])[::-1]
    assert live[0] > 10 * np.median(live)  # a few frequent pairs, many rare
    np.testing.assert_array_equal(p, pair_probabilities(6, 8, seed=0))
    assert tail_classes(np.array([50, 30, 10, 6, 4])) == [2, 3, 4]  # the rarest 20% of instances
    assert tail_classes(np.array([90, 10])) == [1]


# --- the source ----------------------------------------------------------------------------


def test_labels_heads_ids_subsets_and_tails_follow_the_csvs(epic_root, tmp_path):
    ann = epic_root / "annotations"
    raw = load(epic_root, tmp_path, val_participants=0)
    assert raw.heads.names == ("verb", "noun")
    assert list(raw.heads.classes[0]) == [r["key"] for r in rows(ann / "EPIC_100_verb_classes.csv")]
    assert list(raw.heads.classes[1]) == [r["key"] for r in rows(ann / "EPIC_100_noun_classes.csv")]
    val = rows(ann / "EPIC_100_validation.csv")
    assert raw.info["test_ids"] == [r["narration_id"] for r in val]
    np.testing.assert_array_equal(raw.heads.decode(raw.test.y),
                                  [[int(r["verb_class"]), int(r["noun_class"])] for r in val])
    train = rows(ann / "EPIC_100_train.csv")
    np.testing.assert_array_equal(raw.heads.decode(raw.train.y),
                                  [[int(r["verb_class"]), int(r["noun_class"])] for r in train])
    np.testing.assert_array_equal(raw.info["test_subsets"]["unseen"], [r["participant_id"] == "P04" for r in val])
    assert raw.info["tail_classes"] == {
        "verb": [int(r["verb"]) for r in rows(ann / "EPIC_100_tail_verbs.csv")],
        "noun": [int(r["noun"]) for r in rows(ann / "EPIC_100_tail_nouns.csv")]}
    assert raw.val is None and raw.info["skipped_files"] == 0 and raw.train.x.shape[1:] == (4, 128)


def test_validation_holds_out_whole_training_participants(epic_root, tmp_path):
    train = rows(epic_root / "annotations" / "EPIC_100_train.csv")
    ds = load_dataset(f"epic100:{epic_root}", cache_dir=str(tmp_path), **LOAD)
    held = ds.info["val_participants"].split(",")
    assert len(held) == 1 and len(ds.val) == sum(r["participant_id"] in held for r in train)
    assert len(ds.train) + len(ds.val) == len(train)
    assert ds.num_classes == 4 + 5 and ds.heads.sizes == (4, 5)
    random = load_dataset(f"epic100:{epic_root}", cache_dir=str(tmp_path), val_participants=0, val_fraction=0.25,
                          **LOAD)
    assert "val_participants" not in random.info and len(random.train) + len(random.val) == len(train)


def ramp_root(root, fps=10, frames=50, layout="videos"):
    """One video in which frame i is a flat grey of level 5 + 5·i, at ``fps``; two actions annotated in each
    split, each from 1.0 to 3.0 s (frames 11..30, numbered from 1). ``layout=frames``: the frames as JPEGs."""
    from PIL import Image

    levels = 5 + 5 * np.arange(frames)
    video = np.ascontiguousarray(np.broadcast_to(levels[:, None, None, None], (frames, 16, 16, 3)).astype(np.uint8))
    if layout == "videos":
        (root / "P01" / "videos").mkdir(parents=True)
        write_video(root / "P01" / "videos" / "P01_01.MP4", video, fps)
    else:
        (root / "P01" / "rgb_frames" / "P01_01").mkdir(parents=True)
        for i, img in enumerate(video):
            Image.fromarray(img).save(root / "P01" / "rgb_frames" / "P01_01" / FRAME_FILE.format(i + 1))
    for name in ("verb", "noun"):
        (root / f"EPIC_100_{name}_classes.csv").write_text(f"id,key,instances,category\n0,a{name},[],x\n"
                                                           f"1,b{name},[],x\n")
    for split in ("train", "validation"):
        lines = [",".join(COLUMNS)] + [
            f"P01_01_{i},P01,P01_01,00:00:00.500,00:00:01.000,00:00:03.000,11,30,a b,a,{i},b,{i},['b'],[{i}]"
            for i in range(2)]
        (root / f"EPIC_100_{split}.csv").write_text("\n".join(lines) + "\n")
    return levels


def frame_numbers(x, levels):
    """Which frame (0-based) each step of raw-pixel sequences shows, from its grey level."""
    means = np.asarray(x, dtype=np.float64).mean(-1)
    return np.abs(means[..., None] - levels).argmin(-1)


@pytest.mark.parametrize("layout", ["videos", "frames"])
def test_tsn_offsets_for_training_centres_for_evaluation_at_the_files_frame_rate(tmp_path, layout):
    levels = ramp_root(tmp_path / "ramp", fps=10, layout=layout)
    raw = epic100(str(tmp_path / "ramp"), seed=0, features="frames", frames=4, size=8, val_participants=0,
                  cache_dir=str(tmp_path / "cache"), workers=0)
    assert "test_subsets" not in raw.info and "tail_classes" not in raw.info  # their CSVs are optional
    # 1.0-3.0 s at 10 fps (not an assumed rate) = frames 10..29; 4 segments of 5 frames; centres 2, 7, 12, 17
    centres = 10 + sample_indices(20, 4, "segments")
    assert (frame_numbers(raw.test.x, levels) == centres).all()
    train = frame_numbers(raw.train.x, levels)
    assert ((train >= 10 + 5 * np.arange(4)) & (train < 15 + 5 * np.arange(4))).all()  # one in each segment
    assert (train != centres).any()  # at random offsets
    again = epic100(str(tmp_path / "ramp"), seed=1, features="frames", frames=4, size=8, val_participants=0,
                    cache_dir=str(tmp_path / "cache"), workers=0)
    assert (frame_numbers(again.train.x, levels) != train).any()  # the seed draws the offsets


def test_a_segment_read_by_seeking_is_the_segment_read_on_from_the_start(epic_root):
    last = rows(epic_root / "annotations" / "EPIC_100_train.csv")[-1]  # the last action of its video
    video = epic_root / last["participant_id"] / "videos" / f"{last['video_id']}.MP4"
    segment = tuple(int(m) * 60 + float(s) for m, s in
                    (r.split(":")[1:] for r in (last["start_timestamp"], last["stop_timestamp"])))
    read_on = decode_clip(video, 4, 16, sampling="segments", segment=segment)
    seeking = decode_clip(video, 4, 16, sampling="segments", segment=segment, seek_threshold=0, seek_gap=1)
    np.testing.assert_array_equal(seeking, read_on)
    whole = decode_clip(video, 4, 16, sampling="segments")
    assert not np.array_equal(whole, read_on)


def test_extracted_frames_give_the_features_of_their_video(epic_root, tmp_path):
    """Participant P01's videos replaced by folders of JPEG frames decoded from them: the same actions, about
    the same features (JPEG is lossy)."""
    import av
    from PIL import Image

    root = tmp_path / "frames"
    shutil.copytree(epic_root, root)
    for video in sorted((root / "P01" / "videos").glob("*.MP4")):
        folder = root / "P01" / "rgb_frames" / video.stem
        folder.mkdir(parents=True)
        with av.open(str(video)) as c:
            for i, frame in enumerate(c.decode(video=0)):
                Image.fromarray(frame.to_ndarray(format="rgb24")).save(folder / FRAME_FILE.format(i + 1), quality=95)
    shutil.rmtree(root / "P01" / "videos")
    from_frames = load(root, tmp_path / "cache", val_participants=0)
    from_videos = load(epic_root, tmp_path / "cache", val_participants=0)
    assert from_frames.info["skipped_files"] == 0
    assert from_frames.info["test_ids"] == from_videos.info["test_ids"]
    np.testing.assert_array_equal(from_frames.train.y, from_videos.train.y)
    a, b = np.asarray(from_frames.train.x), np.asarray(from_videos.train.x)
    assert np.abs(a - b).mean() < 0.1 * np.abs(b).mean()


def test_a_corrupt_video_is_skipped_named_and_counted(epic_root, tmp_path):
    root = tmp_path / "epic"
    shutil.copytree(epic_root, root)
    val = rows(root / "annotations" / "EPIC_100_validation.csv")
    broken = val[0]["video_id"]
    (root / "P01" / "videos" / f"{broken}.MP4").write_bytes(b"not a video" * 50)
    lost = [r["narration_id"] for r in val if r["video_id"] == broken]
    with pytest.warns(SkippedFileWarning, match=lost[0]):
        raw = load(root, tmp_path / "cache", val_participants=0)
    assert raw.info["skipped_files"] == len(lost) > 0
    assert raw.info["test_ids"] == [r["narration_id"] for r in val if r["video_id"] != broken]
    assert len(raw.test) == len(raw.info["test_subsets"]["unseen"]) == len(val) - len(lost)


def test_bad_annotations_give_one_line_naming_the_file_and_the_fix(tmp_path):
    root = tmp_path / "ramp"
    ramp_root(root)
    cache = str(tmp_path / "cache")
    with pytest.raises(EchoesError, match="make-epic") as e:
        epic100(str(tmp_path / "nothing"), cache_dir=cache)
    assert "EPIC_100_train.csv" in str(e.value) and "\n" not in str(e.value)
    val = (root / "EPIC_100_validation.csv").read_text()
    (root / "EPIC_100_validation.csv").write_text(val.replace(",verb_class,", ",verb_klass,"))
    with pytest.raises(EchoesError, match="EPIC_100_validation.csv has no column verb_class"):
        epic100(str(root), cache_dir=cache)
    (root / "EPIC_100_validation.csv").write_text(val.replace("a,1,b,1", "a,7,b,1"))
    with pytest.raises(EchoesError, match=r"EPIC_100_validation.csv line 3: verb_class 7 .* \(0..1\)"):
        epic100(str(root), cache_dir=cache)
    (root / "EPIC_100_validation.csv").write_text(val.replace("00:00:03.000", "3 s"))
    with pytest.raises(EchoesError, match="stop_timestamp '3 s'"):
        epic100(str(root), cache_dir=cache)
    (root / "EPIC_100_validation.csv").unlink()
    with pytest.raises(EchoesError, match="EPIC_100_validation.csv not found"):
        epic100(str(root), cache_dir=cache)
    shutil.rmtree(root / "P01")
    (root / "EPIC_100_validation.csv").write_text(val)
    with pytest.raises(EchoesError, match="no video of EPIC_100_train.csv found"):
        epic100(str(root), cache_dir=cache)
    assert main(["train", f"data=epic100:{root}", "data.frames=0", "tracking=false"]) == 2


def test_tail_classes_are_read_by_id_or_by_key(tmp_path):
    root = tmp_path / "ramp"
    ramp_root(root)
    (root / "EPIC_100_tail_verbs.csv").write_text("verb\n1\n")
    (root / "EPIC_100_tail_nouns.csv").write_text("noun\nanoun\n")
    options = dict(features="frames", frames=2, size=8, cache_dir=str(tmp_path / "cache"), workers=0)
    assert epic100(str(root), **options).info["tail_classes"] == {"verb": [1], "noun": [0]}
    (root / "EPIC_100_tail_nouns.csv").write_text("noun\ncnoun\n")
    with pytest.raises(EchoesError, match="EPIC_100_tail_nouns.csv line 2: 'cnoun' is not a class id or key"):
        epic100(str(root), **options)


def test_a_model_trains_on_both_heads_end_to_end(epic_root, tmp_path):
    rc = main(["train", "model=mean_pool", f"data=epic100:{epic_root}", "data.frames=4", "data.size=16",
               f"data.cache_dir={tmp_path}", "data.workers=0", "train.epochs=2", "tracking=false",
               "--json", str(tmp_path / "r.json")])
    assert rc == 0
    result = json.loads((tmp_path / "r.json").read_text())
    for task in ("verb", "noun", "action"):
        assert 0 <= result[f"test_{task}_accuracy"] <= 1
        assert f"test_unseen_{task}_accuracy" in result and f"test_tail_{task}_accuracy" in result
    assert result["test_accuracy"] == result["test_action_accuracy"] and result["skipped_files"] == 0


def test_the_epic_quick_suite_runs_every_registered_model_on_both_heads(epic_root, run_dir):
    """The packaged suite, on the tiny set for one epoch and one seed. Only cross_attention and
    independent_heads (models/multitask.py, another branch) may be missing here: they are left out."""
    import yaml

    from echoes.api import compare
    from echoes.models import MODELS
    from echoes.utils import find_config

    suite = yaml.safe_load(find_config("suites", "epic-quick").read_text())
    names = [m if isinstance(m, str) else m["name"] for m in suite["models"]]
    assert {"mean_pool", "lstm", "transformer", "esn", "deep_esn", "cross_attention"} <= set(names)
    assert suite["datasets"] == ["epic100:data/epic-synthetic"] and suite["seeds"] == [0, 1, 2]
    missing = [n for n in names if n not in MODELS.names()]
    assert set(missing) <= {"cross_attention", "independent_heads"}, missing
    suite["models"] = [m for m, n in zip(suite["models"], names, strict=True) if n not in missing]
    suite["datasets"] = [{"source": f"epic100:{epic_root}", **LOAD, "cache_dir": str(run_dir / "cache")}]
    suite["seeds"] = [0]
    suite["base"]["train"]["epochs"] = 1
    suite["base"]["tracking"] = False
    (run_dir / "epic-quick.yaml").write_text(yaml.safe_dump(suite))
    summary = compare(str(run_dir / "epic-quick.yaml"), out_dir="cmp", echo=lambda *a: None)
    assert summary["failures"] == []
    assert len(summary["runs"]) == len(suite["models"])
    for run in summary["runs"]:
        for task in ("verb", "noun", "action"):
            assert 0 <= run[f"test_{task}_accuracy"] <= 1, (run["label"], task)
