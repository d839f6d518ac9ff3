import numpy as np

from echoes.data import load_dataset
from echoes.data.sequences import PAD_LABEL, stratified_split


def _save(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_padded_with_lengths_and_string_labels(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((12, 9, 2)).astype(np.float32)
    lengths = np.array([9, 4, 5, 9, 3, 7, 8, 9, 2, 6, 5, 4])
    x[np.arange(9)[None, :] >= lengths[:, None]] = 123.0  # garbage past each length must be ignored
    y = np.array(["walk", "run", "sit"] * 4)
    spec = _save(tmp_path / "a.npz", X_train=x, lengths_train=lengths, y_train=y, X_test=x[:6],
                 lengths_test=lengths[:6], y_test=y[:6])
    ds = load_dataset(spec, val_fraction=0.25, standardize_features=False, seed=0)
    assert ds.class_names == ["run", "sit", "walk"]
    assert len(ds.train) + len(ds.val) == 12 and len(ds.test) == 6
    assert set(np.unique(ds.val.y)) == {0, 1, 2}  # stratified: every class in validation
    assert ds.test.lengths.tolist() == lengths[:6].tolist()
    for i, n in enumerate(ds.test.lengths):
        assert np.all(ds.test.x[i, n:] == 0) and np.all(ds.test.x[i, :n] != 123.0)


def test_npz_concatenated_form_and_explicit_validation(tmp_path):
    seqs = [np.ones((t, 3)) * t for t in (2, 5, 3, 4, 6)]
    lengths = np.array([len(s) for s in seqs])
    spec = _save(tmp_path / "b.npz", X_train=np.concatenate(seqs), lengths_train=lengths,
                 y_train=np.array([0, 1, 0, 1, 0]), X_test=np.concatenate(seqs[:2]), lengths_test=lengths[:2],
                 y_test=np.array([1, 0]), X_val=np.concatenate(seqs[2:]), lengths_val=lengths[2:],
                 y_val=np.array([0, 1, 1]))
    ds = load_dataset(spec, standardize_features=False)
    assert len(ds.train) == 5 and len(ds.val) == 3  # given validation is used, not split from train
    assert ds.train.lengths.tolist() == [2, 5, 3, 4, 6] and ds.val.lengths.tolist() == [3, 4, 6]
    assert ds.train.x.shape == (5, 6, 3) and ds.train.x[1, 4, 0] == 5.0 and ds.train.x[1, 5, 0] == 0


def test_npz_object_arrays_with_allow_pickle(tmp_path):
    seqs = np.empty(4, dtype=object)
    seqs[:] = [np.ones((t, 2)) * t for t in (2, 5, 3, 4)]
    spec = _save(tmp_path / "o.npz", X_train=seqs, y_train=np.array([0, 1, 0, 1]), X_test=seqs[:2],
                 y_test=np.array([0, 1]))
    ds = load_dataset(spec, standardize_features=False, val_fraction=0.5, allow_pickle=True)
    assert ds.test.lengths.tolist() == [2, 5] and ds.test.x[1, 4, 0] == 5.0


def test_standardization_uses_train_statistics_and_keeps_padding_zero(tmp_path):
    rng = np.random.default_rng(2)
    x = (5 + 3 * rng.standard_normal((40, 10, 2))).astype(np.float32)
    lengths = rng.integers(3, 11, 40)
    spec = _save(tmp_path / "c.npz", X_train=x, lengths_train=lengths, y_train=np.arange(40) % 2,
                 X_test=x[:5] + 100, lengths_test=lengths[:5], y_test=np.zeros(5, int))
    ds = load_dataset(spec, val_fraction=0.2)
    mask = np.arange(ds.train.x.shape[1])[None] < ds.train.lengths[:, None]
    valid = ds.train.x[mask]
    assert np.allclose(valid.mean(0), 0, atol=0.15) and np.allclose(valid.std(0), 1, atol=0.15)
    assert np.all(ds.train.x[~mask] == 0)
    assert ds.test.x[mask[:5] if len(mask) >= 5 else mask].mean() > 20  # test shifted, not re-centred


def test_synthetic_is_deterministic_per_seed_and_varies_across_seeds():
    a = load_dataset("synthetic:recall", seed=4, n_train=30, n_test=10)
    b = load_dataset("synthetic:recall", seed=4, n_train=30, n_test=10)
    c = load_dataset("synthetic:recall", seed=5, n_train=30, n_test=10)
    assert np.array_equal(a.train.x, b.train.x) and np.array_equal(a.test.y, b.test.y)
    assert not np.array_equal(a.train.x, c.train.x)
    assert a.train.lengths.min() >= 30 and a.train.lengths.max() <= 60


def test_uea_bundled_dataset_loads_offline():
    ds = load_dataset("uea:BasicMotions", val_fraction=0.25)
    assert ds.num_features == 6 and ds.num_classes == 4
    assert len(ds.test) == 40 and len(ds.train) + len(ds.val) == 40
    assert ds.train.x.shape[1] == 100


def test_uea_variable_length_dataset():
    ds = load_dataset("uea:JapaneseVowels")
    assert ds.num_features == 12 and ds.num_classes == 9
    assert ds.train.lengths.min() < ds.train.lengths.max()


def test_group_split_never_splits_a_group():
    y = np.repeat([0, 1], 20)
    groups = np.repeat(np.arange(8), 5)
    tr, va = stratified_split(y, 0.25, seed=3, groups=groups)
    assert set(groups[tr]).isdisjoint(groups[va])
    assert set(y[va]) == {0, 1} and len(tr) + len(va) == 40


def test_framewise_labels_stratify_by_majority_label():
    y = np.full((10, 4), PAD_LABEL)
    y[:5, :3] = 0
    y[5:, :2] = 1
    tr, va = stratified_split(y, 0.2, seed=0)
    assert len(va) == 2 and len(tr) == 8
