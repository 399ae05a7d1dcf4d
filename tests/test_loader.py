"""Loader: real shards through webdataset and the real video decoder; bad input is named."""

import re
import tarfile
import warnings

import numpy as np
import pytest
import torch
import webdataset as wds
from _data import synthetic_shards

from dexwm.data.actions import keypoint_actions
from dexwm.data.clips import ClipConfig, make_clips, sample_indices
from dexwm.data.loader import DataSource, expand_paths, make_loader
from dexwm.data.schema import SchemaError
from dexwm.data.shards import samples_to_tar_bytes, shard_paths
from dexwm.data.stages import BAD, ShardError, tar_samples
from dexwm.data.stats import compute_stats
from dexwm.data.synthetic import make_episode


def first_batch(sources, cfg, **kw):
    kw.setdefault("batch_size", 4)
    return next(iter(make_loader(sources, cfg, **kw)))


def test_batches_from_mp4_shards(tmp_path_factory):
    root = synthetic_shards(tmp_path_factory)
    cfg = ClipConfig(num_frames=4, mode="fixed", gap=2)
    b = first_batch([DataSource([str(root)])], cfg, shuffle=0)
    assert b["frames"].shape == (4, 4, 128, 128, 3) and b["frames"].dtype == torch.uint8
    assert b["actions"].shape == (4, 3, 134) and b["dt"].shape == (4, 3)
    torch.testing.assert_close(b["dt"], torch.full((4, 3), 0.2))
    # frames and actions are those of the picked indices of the right episode
    seed = int(b["key"][0].split("/")[1][2:])
    ep = make_episode(seed, T=12, fmt="npy")
    idx = b["indices"][0].numpy()
    err = np.abs(b["frames"][0].numpy().astype(int) - ep["frames.npy"][idx]).mean(axis=(1, 2, 3))
    assert err.max() < 2.0  # H.264 at crf 18
    shifted = np.abs(b["frames"][0].numpy().astype(int) - ep["frames.npy"][np.roll(idx, 1)]).mean(
        axis=(1, 2, 3)
    )
    assert (shifted > err).all()  # other frames differ more: these are the picked frames
    ref = keypoint_actions(
        torch.from_numpy(ep["hands.npy"][idx]), torch.from_numpy(ep["hands_valid.npy"][idx])
    )
    torch.testing.assert_close(b["actions"][0], ref)


def test_window_sampling_is_sorted_and_inside_window():
    rng = np.random.default_rng(0)
    cfg = ClipConfig(num_frames=9, mode="window", window_s=4.0)
    for _ in range(200):
        idx = sample_indices(100, 10.0, cfg, rng)
        assert len(set(idx)) == 9 and np.all(np.diff(idx) > 0) and idx[-1] - idx[0] <= 40
    assert sample_indices(5, 10.0, cfg, rng) is None  # too short for 9 frames
    gaps = {tuple(np.diff(sample_indices(100, 10.0, cfg, rng))) for _ in range(20)}
    assert len(gaps) > 10  # irregular gaps, as DexWM


def test_mixing_follows_weights(tmp_path):
    from dexwm.data.synthetic import write_synthetic

    write_synthetic(tmp_path / "a", episodes=8, T=6, seed=0, fmt="npy")
    write_synthetic(tmp_path / "b", episodes=8, T=6, seed=100, fmt="npy")
    cfg = ClipConfig(num_frames=2, mode="fixed", clips_per_sample=1)
    srcs = [
        DataSource([str(tmp_path / "a")], weight=3.0),
        DataSource([str(tmp_path / "b")], weight=1.0),
    ]
    loader = make_loader(srcs, cfg, batch_size=8, resampled=True, epoch_batches=50, shuffle=0)
    keys = [k for batch in loader for k in batch["key"]]
    frac_a = np.mean([int(k.split("/")[1][2:]) < 100 for k in keys])
    assert len(keys) == 400 and 0.68 < frac_a < 0.82


def _write_tar(path, samples):
    path.write_bytes(samples_to_tar_bytes(samples))
    return str(path)


def test_truncated_shard_raises_naming_it_or_is_skipped(tmp_path):
    good = make_episode(1, T=6, fmt="npy")
    data = samples_to_tar_bytes([make_episode(i, T=6, fmt="npy") for i in range(3)])
    bad = tmp_path / "broken.tar"
    bad.write_bytes(data[: len(data) // 2])
    ok = _write_tar(tmp_path / "ok.tar", [good])
    cfg = ClipConfig(num_frames=2, mode="fixed")
    with pytest.raises(ShardError, match="broken.tar"):
        list(make_loader([DataSource([str(bad)])], cfg, batch_size=1, shuffle=0))
    before = BAD["shards"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = list(
            make_loader([DataSource([str(bad), ok])], cfg, batch_size=1, shuffle=0, on_bad="skip")
        )
    assert BAD["shards"] == before + 1
    assert "ep00001" in [b["key"][0].split("/")[1] for b in out]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s["meta.json"].update(schema_version=2), "schema_version=2"),
        (
            lambda s: s.update({"hands.npy": s["hands.npy"][:, :, :20]}),
            r"hands.npy has shape \(6, 2, 20, 3\)",
        ),
        (
            lambda s: s["hands.npy"].__setitem__((3, 1, 0, 0), np.inf),
            "hands.npy has NaN/inf at frame 3, hand 1",
        ),
        (
            lambda s: s.update({"camera.npy": np.zeros((5, 6), np.float32)}),
            r"camera.npy has shape \(5, 6\)",
        ),
    ],
)
def test_bad_samples_named(tmp_path, mutate, message):
    s = make_episode(3, T=6, fmt="npy")
    mutate(s)
    url = _write_tar(tmp_path / "bad-sample.tar", [s])
    with pytest.raises(SchemaError, match=f"bad-sample.tar.*{message}"):
        list(make_loader([DataSource([url])], ClipConfig(num_frames=2), batch_size=1, shuffle=0))


def test_empty_or_missing_sources(tmp_path):
    with pytest.raises(ValueError, match="no shards found"):
        expand_paths([str(tmp_path / "*.tar")])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        expand_paths([str(tmp_path / "nope.tar")])
    with pytest.raises(FileNotFoundError, match="did not finish"):
        shard_paths(tmp_path)
    with pytest.raises(ValueError, match="no data sources"):
        make_loader([], ClipConfig(), batch_size=1)


def test_make_clips_is_pure_and_uses_feats_when_present():
    s = make_episode(0, T=8, fmt="npy")
    s["feats.npy"] = np.random.default_rng(0).normal(size=(8, 16, 320)).astype(np.float16)
    s["meta.json"]["encoder"] = {"name": "x"}
    cfg = ClipConfig(num_frames=3, mode="fixed", gap=1, clips_per_sample=2)
    a = make_clips(s, cfg, np.random.default_rng(5))
    b = make_clips(s, cfg, np.random.default_rng(5))
    assert len(a) == 2 and "frames" not in a[0] and a[0]["feats"].shape == (3, 16, 320)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["indices"], y["indices"])
        np.testing.assert_array_equal(x["feats"], s["feats.npy"][x["indices"]].astype(np.float32))


def test_stats_are_deterministic(tmp_path_factory):
    root = synthetic_shards(tmp_path_factory)
    cfg = ClipConfig(num_frames=3, mode="fixed")
    a = compute_stats([DataSource([str(root)])], cfg, max_clips=20, progress=False)
    b = compute_stats([DataSource([str(root)])], cfg, max_clips=20, progress=False)
    assert a == b and a["clips"] >= 12
    std = np.array(a["action_std"])
    assert std[63:126].max() > 0 and std[:63].max() == 0  # right hand moves, no left hand


def test_augmentation_is_photometric_and_clip_consistent():
    from dexwm.data.clips import augment_frames

    s = make_episode(2, T=6, fmt="npy")
    frames = s["frames.npy"]
    rng = np.random.default_rng(0)
    outs = [augment_frames(frames, rng) for _ in range(20)]
    assert all(o.shape == frames.shape and o.dtype == np.uint8 for o in outs)
    assert len({o.tobytes() for o in outs}) == 20  # random per call
    # same transform for every frame of the clip: equal input pixels stay equal across frames
    a = outs[0]
    same = (frames[0] == frames[1]).all(-1)
    assert same.mean() > 0.5 and (a[0][same] == a[1][same]).all()
    # no geometry change: the hand (brightest-red dot structure) stays where it was
    diff = np.abs(frames[1].astype(int) - frames[0].astype(int)).sum(-1) > 0
    diff_aug = np.abs(a[1].astype(int) - a[0].astype(int)).sum(-1) > 0
    assert (diff_aug <= diff).all()


def test_precomputed_stats_file_is_used(tmp_path_factory, tmp_path):
    import lightning as L

    from dexwm.data.datamodule import ShardDataModule
    from dexwm.data.stats import save_stats
    from dexwm.models.predictor import PredictorConfig
    from dexwm.training.module import WorldModelModule

    root = synthetic_shards(tmp_path_factory)
    cfg = ClipConfig(num_frames=3, mode="fixed")
    stats = compute_stats([DataSource([str(root)])], cfg, max_clips=40, progress=False)
    assert stats["clips"] >= 40  # short sources are re-read for more clips
    stats["action_mean"] = [0.125] * len(stats["action_mean"])  # recognisable
    save_stats(tmp_path / "s.json", stats)
    dm = ShardDataModule(
        train=[DataSource([str(root)])], clip=cfg, stats_file=str(tmp_path / "s.json"), batch_size=2
    )
    module = WorldModelModule(
        predictor=PredictorConfig(dim=32, depth=1, heads=2, max_frames=2), feature_norm=False
    )
    L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False).fit(
        module, dm
    )
    assert torch.allclose(module.wm.action_norm.mean, torch.tensor(0.125))


@pytest.mark.parametrize("world, workers", [(2, 0), (3, 2), (5, 0)])
def test_exact_split_partitions_clips_with_equal_batch_counts(
    tmp_path_factory, monkeypatch, world, workers
):
    """Each rank (simulated through RANK / WORLD_SIZE) builds only its clips: together they are
    exactly the clips a single process plans, none twice, and every rank yields as many batches."""
    root = synthetic_shards(tmp_path_factory)  # 12 samples of 12 frames
    cfg = ClipConfig(num_frames=3, mode="fixed", gap=2, clips_per_sample=2)

    def run(rank, n):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(n))
        loader = make_loader([DataSource([str(root)])], cfg, batch_size=4, num_workers=workers if n > 1 else 0,
                             shuffle=8, split="exact")  # fmt: skip
        batches = list(loader)
        return len(batches), [
            (k, tuple(i)) for b in batches for k, i in zip(b["key"], b["indices"].tolist())
        ]

    _, everything = run(0, 1)
    assert len(everything) == 24  # (two random clips of one sample may coincide: compare multisets)
    per_rank = [run(r, world) for r in range(world)]
    counts = {n for n, _ in per_rank}
    seen = [c for _, clips in per_rank for c in clips]
    assert len(counts) == 1  # same number of batches on every rank: no DDP hang
    assert sorted(seen) == sorted(everything)  # nothing dropped, nothing duplicated


def test_shards_by_url(tmp_path_factory):
    """Shard lists may be URLs (webdataset's openers): here a pipe: URL."""
    root = synthetic_shards(tmp_path_factory)
    urls = [f"pipe:cat {p}" for p in shard_paths(root)]
    b = first_batch([DataSource(urls)], ClipConfig(num_frames=2, mode="fixed"), shuffle=0)
    assert b["actions"].shape == (4, 1, 134)


# ---- truncated shards are checked against their manifest ----------------------------------------


def _cut_copy(tmp_path, n_shards: int = 2, per_shard: int = 4):
    """Shards written by a real job (manifest with per-shard samples / bytes); returns the folder,
    the first shard's path and its members' header offsets by sample."""
    from dexwm.data.synthetic import write_synthetic

    folder = tmp_path / "shards"
    write_synthetic(
        folder, episodes=n_shards * per_shard, T=6, fmt="npy", items_per_shard=per_shard
    )
    first = shard_paths(folder)[0]
    with tarfile.open(first) as tar:
        starts = {}
        for m in tar.getmembers():
            starts.setdefault(m.name.split(".")[0], m.offset)  # first header of each sample
    return folder, first, list(starts.values())


@pytest.mark.parametrize("where", ["header boundary", "inside a header", "inside a member"])
def test_truncated_shard_in_a_manifest_raises_naming_it_or_is_skipped(tmp_path, where):
    folder, first, starts = _cut_copy(tmp_path)
    data = open(first, "rb").read()
    cut = {"header boundary": starts[2], "inside a header": starts[2] + 300}.get(where)
    cut = cut if cut is not None else starts[2] + 512 + 40  # in the data of sample 2's 1st member
    open(first, "wb").write(data[:cut])
    if where != "inside a member":  # what the guard is for: the tar reader alone stops silently
        assert len(list(wds.WebDataset(first, shardshuffle=False, empty_check=False))) == 2
    cfg = ClipConfig(num_frames=2, mode="fixed")
    msg = f"{first}: {cut} bytes, but manifest.json records {len(data)} bytes and 4 samples"
    with pytest.raises(ShardError, match=re.escape(msg)):
        list(make_loader([DataSource([str(folder)])], cfg, batch_size=1, shuffle=0))
    with pytest.raises(ShardError, match="shard-000000.tar"):  # a shard named directly: same
        list(make_loader([DataSource([first])], cfg, batch_size=1, shuffle=0))
    before = BAD["shards"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = list(make_loader([DataSource([str(folder)])], cfg, batch_size=1, shuffle=0,
                               on_bad="skip"))  # fmt: skip
    assert BAD["shards"] == before + 1
    assert sorted({b["key"][0].split("/")[1] for b in out}) == [f"ep{i:05d}" for i in range(4, 8)]


def test_shard_yielding_fewer_samples_than_recorded_is_caught_at_its_end(tmp_path):
    """Without a size to compare (e.g. a record without bytes), the count of samples read is
    checked when the shard ends; its last sample, perhaps partial, is never passed on."""
    folder, first, starts = _cut_copy(tmp_path)
    data = open(first, "rb").read()
    open(first, "wb").write(data[: starts[2] + 300])  # 2 whole samples, then half a header
    stage = tar_samples("raise", {first: {"samples": 4}})
    with pytest.raises(ShardError, match=re.escape(f"{first}: yielded 2 samples, but manifest")):
        list(stage(iter([{"url": first}])))
    before = BAD["shards"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = [s for s in tar_samples("skip", {first: {"samples": 4}})(iter([{"url": first}])) if s]
    assert [s["__key__"] for s in got] == ["synthetic/ep00000/cam0/0"] and BAD[
        "shards"
    ] == before + 1
    whole = [s for s in tar_samples("raise", {first: {"samples": 2}})(iter([{"url": first}])) if s]
    assert len(whole) == 2  # a count that agrees passes every sample on


def test_feature_cache_skips_a_truncated_input_shard(tmp_path):
    from dexwm.data.feature_cache import cache_features
    from dexwm.models.encoders import EncoderSpec, FrozenEncoder

    folder, first, starts = _cut_copy(tmp_path, per_shard=2)
    data = open(first, "rb").read()
    open(first, "wb").write(data[: starts[1]])
    man = cache_features(str(folder), tmp_path / "feats", EncoderSpec().to_dict(), FrozenEncoder,
                         progress=False)  # fmt: skip
    assert man["counts"]["samples"] == 2 and man["counts"]["items_skipped"] == 1
    (skip,) = man["skipped"]
    assert skip["key"].endswith("shard-000000.tar") and "manifest.json records" in skip["reason"]
