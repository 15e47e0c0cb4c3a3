"""feeders/: augmentations against literal reference-style versions, views, datasets, validation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.constants import DATASETS
from common.split_folder import DataFileError, SplitPaths, check_split
from feeders import augmentations as aug
from feeders.datasets import DownstreamDataset, PretrainDataset, num_classes, split_paths
from feeders.views import VIEWS, to_clip_view, to_seq_view, view_transform
from models import ENCODERS

# ----------------------------------------------------------------------------------------------------
# literal versions of the reference's operations (torch interpolate, np.dot on transposed arrays)


def literal_resize(x: np.ndarray, start: int, length: int, out_len: int) -> np.ndarray:
    c, _, v, m = x.shape
    crop = torch.tensor(x[:, start : start + length], dtype=torch.float)
    crop = crop.permute(0, 2, 3, 1).contiguous().view(c * v * m, length)[None, :, :, None]
    crop = F.interpolate(crop, size=(out_len, 1), mode="bilinear", align_corners=False)
    return crop[0, :, :, 0].reshape(c, v, m, out_len).permute(0, 3, 1, 2).numpy()


def literal_shear(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.dot(x.transpose(1, 2, 3, 0), s.transpose()).transpose(3, 0, 1, 2)


def literal_corruption(x: np.ndarray, joints: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    out = x.copy()
    out[:, :, joints, :] = np.dot(out[:, :, joints, :].transpose(1, 2, 3, 0), matrix).transpose(3, 0, 1, 2)
    return out


def clip(t: int = 80, seed: int = 0, c: int = 3, v: int = 25, m: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2.0, 2.0, size=(c, t, v, m)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# interpolation and crops


@pytest.mark.parametrize("out_len", [64, 50, 100, 7, 1])
def test_resize_equals_torch_interpolate(out_len):
    x = clip(t=300, seed=1)
    for start, length in [(0, 300), (5, 64), (3, 1), (0, 2), (100, 17), (10, 37), (0, 299), (250, 50)]:
        got = aug.resize_frames(x, start, length, out_len)
        assert got.shape == (3, out_len, 25, 2) and got.dtype == np.float32
        np.testing.assert_allclose(got, literal_resize(x, start, length, out_len), rtol=0, atol=1e-6)


def test_resize_reads_only_needed_frames_and_zero_length():
    x = clip(t=40)
    x[:, 20:] = np.nan  # frames outside the crop must never be touched
    assert np.isfinite(aug.resize_frames(x, 2, 18, 64)).all()
    z = aug.resize_frames(x, 0, 0, 64)
    assert z.shape == (3, 64, 25, 2) and not z.any()


def test_crop_length_rule():
    assert aug.crop_length(300, 0.1) == 64  # floor(30) raised to the 64 minimum
    assert aug.crop_length(300, 0.5) == 150
    assert aug.crop_length(300, 0.999) == 299
    assert aug.crop_length(50, 0.9) == 50  # shorter than the minimum: the whole clip
    assert aug.crop_length(100, 0.645) == 64
    assert aug.crop_length(100, 0.655) == 65


@pytest.mark.parametrize(
    "n,ratio", [(300, (0.1, 1.0)), (120, (0.5, 1.0)), (64, (0.1, 1.0)), (10, (0.1, 1.0)), (1, (0.5, 1.0))]
)
def test_sample_crop_bounds(n, ratio):
    lo = min(max(int(np.floor(n * ratio[0])), 64), n)
    hi = min(max(int(np.floor(n * ratio[1])), 64), n)
    lengths, starts = set(), set()
    for seed in range(400):
        start, length = aug.sample_crop(n, ratio, np.random.default_rng(seed))
        assert lo <= length <= hi
        assert length >= min(64, n)
        assert 0 <= start <= n - length
        lengths.add(length)
        starts.add(start)
    if hi > lo:
        assert len(lengths) > min(10, hi - lo)  # the scale really varies
    if n > 64:
        assert len(starts) > 5


def test_temporal_crop_resize_matches_literal():
    x = clip(t=300, seed=2)
    for seed in range(20):
        start, length = aug.sample_crop(211, (0.1, 1.0), np.random.default_rng(seed))
        got = aug.temporal_crop_resize(x, 211, (0.1, 1.0), 64, np.random.default_rng(seed))
        np.testing.assert_allclose(got, literal_resize(x, start, length, 64), atol=1e-6, rtol=0)
        assert start + length <= 211  # never reads the zero padding


def test_short_and_empty_clips():
    x = clip(t=300)
    z = aug.temporal_crop_resize(x, 0, (0.1, 1.0), 64, np.random.default_rng(0))
    assert z.shape == (3, 64, 25, 2) and not z.any()
    assert not aug.center_crop_resize(x, 0).any()
    short = aug.temporal_crop_resize(x, 10, (0.1, 1.0), 64, np.random.default_rng(0))
    np.testing.assert_allclose(short, literal_resize(x, 0, 10, 64), atol=1e-6, rtol=0)
    np.testing.assert_allclose(aug.center_crop_resize(x, 10), literal_resize(x, 0, 10, 64), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="num_frames"):
        aug.temporal_crop_resize(x, 301, (0.1, 1.0), 64, np.random.default_rng(0))


@pytest.mark.parametrize(
    "n,start,stop", [(300, 7, 293), (100, 2, 98), (40, 1, 39), (39, 0, 39), (10, 0, 10), (1, 0, 1), (0, 0, 0)]
)
def test_center_crop_bounds(n, start, stop):
    assert aug.center_crop_bounds(n, 0.95) == (start, stop)
    assert aug.center_crop_bounds(n, 0.95) == (int((1 - 0.95) * n / 2), n - int((1 - 0.95) * n / 2))


def test_center_crop_resize_matches_literal():
    x = clip(t=300, seed=3)
    for n in (300, 173, 64, 41):
        start, stop = aug.center_crop_bounds(n)
        np.testing.assert_allclose(
            aug.center_crop_resize(x, n), literal_resize(x, start, stop - start, 64), atol=1e-6, rtol=0
        )


# ----------------------------------------------------------------------------------------------------
# shear and joint corruption


def test_shear_matrix_and_product():
    x = clip(t=64, seed=4)
    for seed in range(10):
        s = aug.random_shear_matrix(np.random.default_rng(seed))
        np.testing.assert_array_equal(np.diag(s), np.ones(3))
        off = s[~np.eye(3, dtype=bool)]
        assert np.all(np.abs(off) < 1) and np.ptp(off) > 0
        got = aug.shear(x, np.random.default_rng(seed))
        assert got.dtype == np.float32 and got.shape == x.shape
        np.testing.assert_allclose(got, literal_shear(x, s), atol=1e-6, rtol=0)
        # x' = S @ x for one joint, spelled out
        np.testing.assert_allclose(got[:, 5, 7, 1], s @ x[:, 5, 7, 1].astype(np.float64), atol=1e-6, rtol=0)


def test_corrupt_joints_matrix_convention():
    x = clip(t=64, seed=5)
    joints = np.array([0, 3, 24, 10])
    a = np.random.default_rng(0).uniform(-1, 1, (3, 3))
    got = aug.corrupt_joints(x, joints, a)
    np.testing.assert_allclose(got, literal_corruption(x, joints, a), atol=1e-6, rtol=0)
    np.testing.assert_allclose(got[:, 2, 3, 0], a.T @ x[:, 2, 3, 0].astype(np.float64), atol=1e-6, rtol=0)


def test_joint_corruption_touches_exactly_15_joints_both_cases():
    x = clip(t=64, seed=6)  # no exact zeros, so every changed joint is visible
    seen = {"zero": 0, "matrix": 0}
    for seed in range(40):
        out = aug.joint_corruption(x, np.random.default_rng(seed))
        changed = np.flatnonzero(np.any(out != x, axis=(0, 1, 3)))
        assert len(changed) == 15
        untouched = np.setdiff1d(np.arange(25), changed)
        np.testing.assert_array_equal(out[:, :, untouched], x[:, :, untouched])
        if not out[:, :, changed].any():
            seen["zero"] += 1
        else:
            seen["matrix"] += 1
            # every changed joint is the same linear map of the original, with entries in (-1, 1)
            src = x[:, :, changed].reshape(3, -1).astype(np.float64)
            dst = out[:, :, changed].reshape(3, -1).astype(np.float64)
            m, *_ = np.linalg.lstsq(src.T, dst.T, rcond=None)
            np.testing.assert_allclose(src.T @ m, dst.T, atol=1e-5)
            assert np.all(np.abs(m) < 1)
    assert seen["zero"] >= 5 and seen["matrix"] >= 5


def test_pretrain_view_uses_both_spatial_augmentations():
    x = clip(t=300, seed=7)
    kinds = set()
    for seed in range(30):
        v = aug.pretrain_view(x, 250, np.random.default_rng(seed))
        assert v.shape == (3, 64, 25, 2) and v.dtype == np.float32
        zero_joints = np.flatnonzero(~np.any(v, axis=(0, 1, 3)))
        kinds.add("zero" if len(zero_joints) == 15 else "other")
        np.testing.assert_array_equal(v, aug.pretrain_view(x, 250, np.random.default_rng(seed)))
    assert kinds == {"zero", "other"}


@pytest.mark.parametrize("spatial", ["none", "shear", "corruption", "shear_or_corruption"])
def test_pretrain_view_spatial_choice_composes_the_named_steps(spatial):
    x = clip(t=300, seed=8)
    for seed in range(6):
        got = aug.pretrain_view(x, 250, np.random.default_rng(seed), spatial=spatial)
        rng = np.random.default_rng(seed)
        crop = aug.temporal_crop_resize(x, 250, (0.1, 1.0), 64, rng)
        if spatial == "none":
            expected = crop
        elif spatial == "shear":
            expected = aug.shear(crop, rng)
        elif spatial == "corruption":
            expected = aug.joint_corruption(crop, rng)
        else:  # the paper's: one uniform draw picks shear (< 0.5) or corruption
            expected = aug.shear(crop, rng) if rng.random() < 0.5 else aug.joint_corruption(crop, rng)
        np.testing.assert_array_equal(got, expected)
    # the default is the paper's choice, drawing from the generator in the same order
    np.testing.assert_array_equal(
        aug.pretrain_view(x, 250, np.random.default_rng(3)),
        aug.pretrain_view(x, 250, np.random.default_rng(3), spatial="shear_or_corruption"),
    )


def test_pretrain_view_unknown_spatial_choice_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"shear_or_corruption, shear, corruption, none.*'mixup'"):
        aug.pretrain_view(clip(t=100, seed=1), 100, np.random.default_rng(0), spatial="mixup")


# ----------------------------------------------------------------------------------------------------
# views


def test_seq_view_flattening_order():
    c, t, v, m = np.meshgrid(np.arange(3), np.arange(64), np.arange(25), np.arange(2), indexing="ij")
    x = (c * 1000 + t * 1_000_000 + v * 10 + m).astype(np.float32)  # every entry encodes its position
    seq = to_seq_view(x)
    assert seq.shape == (64, 150) and seq.dtype == np.float32
    for tt, vv, cc, mm in [(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 0), (0, 1, 0, 0), (5, 24, 2, 1), (63, 13, 1, 0)]:
        assert seq[tt, vv * 6 + cc * 2 + mm] == tt * 1_000_000 + cc * 1000 + vv * 10 + mm
    np.testing.assert_array_equal(seq, x.transpose(1, 2, 0, 3).reshape(-1, 150))


def test_seq_view_other_person_counts_and_layouts():
    for m in (1, 3):
        x = clip(t=16, m=m)
        np.testing.assert_array_equal(to_seq_view(x), x.transpose(1, 2, 0, 3).reshape(16, -1))
    x = clip(t=32)
    strided = x[:, ::2]  # a non-contiguous input takes the same path after one copy
    np.testing.assert_array_equal(to_seq_view(strided), strided.transpose(1, 2, 0, 3).reshape(16, 150))


def test_graph_and_image_views_are_one_function_without_a_copy():
    assert {"sequence": to_seq_view, "clip": to_clip_view} == VIEWS
    x = clip(t=16)
    assert x.dtype == np.float32 and x.flags.c_contiguous
    assert to_clip_view(x) is x  # already a contiguous float32 clip: returned as is
    strided = clip(t=32)[:, ::2]
    out = to_clip_view(strided)
    assert out.flags.c_contiguous and not np.shares_memory(out, strided)
    np.testing.assert_array_equal(out, strided)


def test_clip_view_and_the_views_of_the_encoders():
    out = to_clip_view(clip(t=64).astype(np.float64))
    assert out.shape == (3, 64, 25, 2) and out.dtype == np.float32 and out.flags.c_contiguous
    assert {name: e.view for name, e in ENCODERS.items()} == {
        "seq-based": "sequence",
        "graph-based": "clip",
        "image-based": "clip",
    }
    with pytest.raises(ValueError, match="unknown view 'point'; expected one of: sequence, clip"):
        view_transform("point")


# ----------------------------------------------------------------------------------------------------
# datasets

FRAMES = [0, 10, 64, 80, 70, 33]
LABELS = [0, 1, 2, 0, 1, 2]


def write_split(
    folder: Path, part: str = "train", frames=FRAMES, labels=LABELS, t: int = 80, shape: tuple | None = None
) -> SplitPaths:
    folder.mkdir(parents=True, exist_ok=True)
    n = len(frames)
    data = np.zeros(shape or (n, 3, t, 25, 2), dtype=np.float32)
    if shape is None:
        rng = np.random.default_rng(0)
        for i, f in enumerate(frames):
            data[i, :, :f] = rng.uniform(-1, 1, size=(3, f, 25, 2))
    paths = SplitPaths(
        folder / f"{part}_data_joint.npy", folder / f"{part}_label.pkl", folder / f"{part}_num_frame.npy"
    )
    np.save(paths.data, data)
    np.save(paths.num_frame, np.asarray(frames, dtype=np.int64))
    with open(paths.label, "wb") as f:
        pickle.dump(([f"S001C001P001R001A{l + 1:03d}_{i}.skeleton" for i, l in enumerate(labels)], list(labels)), f)
    return paths


@pytest.fixture
def split(tmp_path) -> SplitPaths:
    return write_split(tmp_path / "NTU-RGB-D-60-AGCN" / "xview")


def assert_items_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_pretrain_pair_item(split):
    ds = PretrainDataset(split, ("sequence", "clip"))
    assert len(ds) == 6
    for i in range(6):
        item = ds[i]
        assert [tuple(t.shape) for t in item] == [(64, 150), (3, 64, 25, 2)] * 2
        assert all(t.dtype == torch.float32 for t in item)
        s1_v1, s2_v1, s1_v2, s2_v2 = item
        # each view is one augmented clip shown in both representations
        torch.testing.assert_close(s1_v1, s2_v1.permute(1, 2, 0, 3).reshape(64, 150), rtol=0, atol=0)
        torch.testing.assert_close(s1_v2, s2_v2.permute(1, 2, 0, 3).reshape(64, 150), rtol=0, atol=0)
        if FRAMES[i] == 0:
            assert not any(t.any() for t in item)
        else:
            assert not torch.equal(s2_v1, s2_v2)
    # the pair's views are exactly pretrain_view with the item's generator
    rng = np.random.default_rng((0, 0, 3))
    data = np.load(split.data)
    v1 = aug.pretrain_view(data[3], 80, rng)
    v2 = aug.pretrain_view(data[3], 80, rng)
    np.testing.assert_array_equal(ds[3][1].numpy(), v1)
    np.testing.assert_array_equal(ds[3][3].numpy(), v2)
    # a dataset with another spatial augmentation passes it on to every view
    plain = PretrainDataset(split, ("sequence", "clip"), spatial_augment="none")
    rng = np.random.default_rng((0, 0, 3))
    np.testing.assert_array_equal(plain[3][1].numpy(), aug.temporal_crop_resize(data[3], 80, (0.1, 1.0), 64, rng))
    with pytest.raises(ValueError, match="spatial_augment must be one of"):
        PretrainDataset(split, "sequence", spatial_augment="flip")


def test_pretrain_single_and_pair_names(split):
    single = PretrainDataset(split, ("clip",), l_ratio=(0.2, 0.9), input_size=32)
    v1, v2 = single[2]
    assert v1.shape == v2.shape == (3, 32, 25, 2)
    seq = PretrainDataset(split, "sequence")
    assert [tuple(t.shape) for t in seq[1]] == [(64, 150), (64, 150)]
    pair = PretrainDataset(split, ("clip", "clip"))
    assert [tuple(t.shape) for t in pair[4]] == [(3, 64, 25, 2)] * 4
    with pytest.raises(ValueError, match="unknown view 'voxel'"):
        PretrainDataset(split, ("sequence", "voxel"))


def test_pretrain_determinism_by_seed_epoch_index(split):
    a = PretrainDataset(split, ("sequence", "clip"), seed=3)
    b = PretrainDataset(split, ("sequence", "clip"), seed=3)
    assert_items_equal(a[4], b[4])
    assert_items_equal(a[4], a[4])
    first = a[4]
    a.set_epoch(1)
    assert a.epoch == 1
    assert not torch.equal(first[0], a[4][0])
    b.set_epoch(1)
    assert_items_equal(a[4], b[4])
    c = PretrainDataset(split, ("sequence", "clip"), seed=4)
    assert not torch.equal(first[0], c[4][0])
    assert not torch.equal(a[3][0], a[4][0])


def test_dataloader_workers_match_direct_items(split):
    ds = PretrainDataset(split, ("clip",), seed=11)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, persistent_workers=True)
    for epoch in (0, 1):
        ds.set_epoch(epoch)  # must reach the already running (persistent) workers
        batches = list(loader)
        got = torch.cat([b[0] for b in batches])
        want = torch.stack([ds[i][0] for i in range(len(ds))])
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    fresh = PretrainDataset(split, ("clip",), seed=11)
    fresh.set_epoch(1)  # a resumed run reproduces epoch 1 without replaying epoch 0
    torch.testing.assert_close(fresh[5][0], want[5], rtol=0, atol=0)


def test_downstream_eval_and_train(split):
    data = np.load(split.data)
    ev = DownstreamDataset(split, "sequence", train=False)
    assert ev.l_ratio == 0.95
    np.testing.assert_array_equal(ev.labels, LABELS)
    assert ev.names[0].endswith(".skeleton") and len(ev.names) == 6
    for i, n in enumerate(FRAMES):
        view, label = ev[i]
        assert view.shape == (64, 150) and view.dtype == torch.float32 and label == LABELS[i]
        start, stop = aug.center_crop_bounds(n)
        want = literal_resize(data[i], start, stop - start, 64) if n else np.zeros((3, 64, 25, 2), np.float32)
        np.testing.assert_allclose(view.numpy(), to_seq_view(want), atol=1e-6, rtol=0)
    tr = DownstreamDataset(split, "clip", train=True, seed=5)
    assert tr.l_ratio == (0.5, 1.0)
    view, label = tr[3]
    assert view.shape == (3, 64, 25, 2) and label == 0
    start, length = aug.sample_crop(80, (0.5, 1.0), np.random.default_rng((5, 0, 3)))
    np.testing.assert_allclose(view.numpy(), literal_resize(data[3], start, length, 64), atol=1e-6, rtol=0)
    assert torch.equal(tr[3][0], view)
    tr.set_epoch(2)
    assert not torch.equal(tr[3][0], view)
    # the reference's list-style ratio spelling is accepted
    assert DownstreamDataset(split, "clip", train=False, l_ratio=[0.95]).l_ratio == 0.95


def test_downstream_subset(split):
    full = DownstreamDataset(split, "clip", train=True, seed=1)
    sub = DownstreamDataset(split, "clip", train=True, seed=1, indices=[1, 4])
    assert len(sub) == 2
    np.testing.assert_array_equal(sub.labels, [1, 1])
    assert sub.names == [full.names[1], full.names[4]]
    torch.testing.assert_close(sub[1][0], full[4][0], rtol=0, atol=0)  # same crops as the full set
    with pytest.raises(ValueError, match="indices"):
        DownstreamDataset(split, "clip", train=False, indices=[0, 6])


# ----------------------------------------------------------------------------------------------------
# registry and validation


def test_registry_and_split_paths(tmp_path):
    p = split_paths(tmp_path, "ntu120", "cross_setup", "val")
    assert p.data == tmp_path / "NTU-RGB-D-120-AGCN" / "xsetup" / "val_data_joint.npy"
    assert p.label.name == "val_label.pkl" and p.num_frame.name == "val_num_frame.npy"
    assert split_paths(tmp_path, "ntu60", "cross_subject", "train").data.parent.name == "xsub"
    assert num_classes("ntu60") == 60 and num_classes("ntu120") == 120
    assert DATASETS["ntu60"]["protocols"] == {"cross_view": "xview", "cross_subject": "xsub"}
    for bad in [("ntu60", "cross_setup"), ("ntu61", "cross_view")]:
        with pytest.raises(ValueError) as err:
            split_paths(tmp_path, *bad, "train")
        assert "ntu60/cross_view" in str(err.value) and "ntu120/cross_setup" in str(err.value)
    with pytest.raises(ValueError, match="part"):
        split_paths(tmp_path, "ntu60", "cross_view", "test")


def test_missing_file_message(tmp_path):
    paths = split_paths(tmp_path, "ntu60", "cross_view", "train")
    with pytest.raises(DataFileError) as err:
        check_split(paths)
    msg = str(err.value)
    assert "\n" not in msg and str(paths.data) in msg
    assert (
        "python data_gen/ntu_gendata.py --dataset ntu60 --data-path <RAW> --out-folder "
        f"{tmp_path / 'NTU-RGB-D-60-AGCN'}" in msg
    )
    write_split(paths.data.parent)
    paths.label.unlink()
    with pytest.raises(DataFileError, match=r"train_label\.pkl"):
        DownstreamDataset(paths, "sequence", train=False)
    assert len(PretrainDataset(paths, ("sequence",))) == 6  # pretraining needs no labels
    assert check_split(paths, need_labels=False) == 6


def test_shape_and_length_validation(tmp_path):
    bad = write_split(tmp_path / "a", shape=(6, 3, 80, 24, 2))
    with pytest.raises(ValueError) as err:
        check_split(bad)
    assert str(bad.data) in str(err.value) and "(6, 3, 80, 24, 2)" in str(err.value)

    frames = write_split(tmp_path / "b")
    np.save(frames.num_frame, np.array([5, 5, 5], dtype=np.int64))
    with pytest.raises(ValueError) as err:
        PretrainDataset(frames, ("sequence",))
    assert str(frames.data) in str(err.value) and str(frames.num_frame) in str(err.value) and "(3,)" in str(err.value)

    labels = write_split(tmp_path / "c")
    with open(labels.label, "wb") as f:
        pickle.dump((["x.skeleton"] * 5, [0] * 5), f)
    with pytest.raises(ValueError) as err:
        check_split(labels)
    assert str(labels.data) in str(err.value) and str(labels.label) in str(err.value)

    long = write_split(tmp_path / "d")
    np.save(long.num_frame, np.array([0, 10, 64, 81, 70, 33]))
    with pytest.raises(ValueError, match=r"\[0, 80\]"):
        check_split(long)
