"""Data at scale: DataLoader workers, rank sharding, shape buckets and resume (vera.train.loader), and prompt
embeddings precomputed with `vera-train cache-prompts` so fit never loads the text encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vera.errors import BadInput
from vera.train.data import open_dataset
from vera.train.checkpoints import list_checkpoints
from vera.train.config import FitConfig
from vera.train.fit import fit
from vera.train.loader import (
    BatchPlan, Bucket, StepSampler, assign_bucket, plan_buckets, training_batches,
)

# (frames, width, height) of the public-format records: two clip lengths (the public set's 49/81, scaled down)
# at two sizes, so "auto" makes four buckets of unequal sizes
SHAPES = [(9, 32, 32), (5, 32, 32), (9, 32, 32), (5, 32, 32), (9, 32, 32), (9, 48, 32), (5, 48, 32)]


def write_public_train_set(root: Path, shapes=SHAPES) -> Path:
    """Public-format training records (train.jsonl + MP4s under videos/) from synth scenes of the given shapes."""
    from vera.train.synth import make_sample, write_public_train

    write_public_train(root, [make_sample(i, seed=5, size=(width, height), frames=frames)
                              for i, (frames, width, height) in enumerate(shapes)])
    return root


@pytest.fixture(scope="module")
def public_set(tmp_path_factory):
    return write_public_train_set(tmp_path_factory.mktemp("public"))


# two buckets by size; 9-frame records train as random 5-frame clips, so a sample's random choice is part of
# what must match
LISTED = [{"frames": 5}, {"frames": 5, "width": 48}]


@pytest.fixture(scope="module")
def exr_set(tmp_path_factory):
    from vera.train.synth import generate

    root = tmp_path_factory.mktemp("exr")
    generate(root, 3, seed=2, size=(48, 32), frames=9)
    return root


def make_plan(dataset, buckets="auto", global_batch=2, seed=0):
    found, bucket_of = plan_buckets(dataset.samples, buckets, 5, 32, 32)
    return BatchPlan(seed, found, bucket_of, global_batch)


def batches(dataset, plan, start, stop, batch=2, rank=0, world=1, workers=0, keep=False):
    return list(training_batches(dataset, plan, start, stop, batch, rank, world, workers, keep=keep))


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for items_a, items_b in zip(a, b):
        assert [i["path"] for i in items_a] == [i["path"] for i in items_b]
        for x, y in zip(items_a, items_b):
            for key in ("source", "edit", "alpha", "composite", "mask"):
                assert torch.equal(x[key], y[key]), key


def test_auto_buckets_follow_the_records_shapes(public_set):
    dataset = open_dataset(public_set, frames=5, width=32, height=32)
    buckets, bucket_of = plan_buckets(dataset.samples, "auto", 5, 32, 32)
    assert buckets == [Bucket(5, 32, 32), Bucket(5, 48, 32), Bucket(9, 32, 32), Bucket(9, 48, 32)]
    assert [buckets[b] for b in bucket_of] == [Bucket(*shape) for shape in SHAPES]


def test_buckets_never_mix_shapes_in_a_batch(public_set):
    dataset = open_dataset(public_set, frames=5, width=32, height=32)
    plan = make_plan(dataset)
    seen = set()
    for step, items in enumerate(batches(dataset, plan, 0, 12, batch=2, keep=True)):
        bucket = plan.buckets[plan.bucket_at(step)]
        seen.add(bucket)
        for item in items:
            # every stream of every sample in the batch has the bucket's frames and size, and the sample's
            # own record is of that shape
            for key in ("source", "edit", "alpha", "composite", "mask"):
                assert item[key].shape[1:] == (bucket.frames, bucket.height, bucket.width), key
            index = int(item["path"].rsplit(":", 1)[1]) - 1
            assert Bucket(*SHAPES[index]) == bucket
    assert len(seen) >= 3  # the schedule visits the buckets, not just one


@pytest.mark.slow
@pytest.mark.parametrize("data", ["public_set", "exr_set"])
def test_two_workers_give_the_same_batches_as_in_process(data, request):
    dataset = open_dataset(request.getfixturevalue(data), frames=5, width=32, height=32, random_clip=True)
    plan = make_plan(dataset, LISTED)
    in_process = batches(dataset, plan, 0, 6)
    assert_same_batches(in_process, batches(dataset, plan, 0, 6, workers=2))


def test_two_ranks_cover_exactly_the_positions_of_one_process(public_set):
    dataset = open_dataset(public_set, frames=5, width=32, height=32)
    plan = make_plan(dataset, global_batch=4)
    one = StepSampler(plan, 0, 40, batch=4, rank=0, world=1)
    rank0, rank1 = (StepSampler(plan, 0, 40, batch=2, rank=r, world=2) for r in (0, 1))
    for keys, part0, part1 in zip(one, rank0, rank1):
        assert keys == part0 + part1
        assert len({bucket for _, _, bucket in keys}) == 1
    # each bucket's stream is an epoch-wise shuffle: its first len(members) draws hold every member once
    drawn = {k: [] for k in range(len(plan.buckets))}
    for keys in one:
        for index, _, bucket in keys:
            drawn[bucket].append(index)
    for bucket, members in enumerate(plan.members):
        assert sorted(drawn[bucket][:len(members)]) == members


def test_resuming_at_step_k_yields_the_batches_of_the_uninterrupted_run(public_set):
    dataset = open_dataset(public_set, frames=5, width=32, height=32, random_clip=True)
    straight = batches(dataset, make_plan(dataset, LISTED), 0, 7, workers=2)
    resumed = batches(dataset, make_plan(dataset, LISTED), 4, 7)  # a fresh plan, as a restarted process builds it
    assert_same_batches(straight[4:], resumed)


def test_one_bucket_reads_the_in_process_loop_order():
    """The default (one bucket) draws dataset_index(seed, position, N): the order fit used before buckets."""
    from vera.train.streams import dataset_index, rank_positions

    plan = BatchPlan(7, [Bucket(5, 32, 32)], [0] * 5, global_batch=3)
    for step in range(8):
        for rank in range(3):
            keys = StepSampler(plan, step, step + 1, 1, rank, 3).keys(step)
            assert [k[0] for k in keys] == [dataset_index(7, p, 5) for p in rank_positions(step, 1, rank, 3)]


def test_listed_buckets_take_the_nearest_aspect_then_the_longest_clip_a_sample_fills():
    buckets = [Bucket(5, 32, 32), Bucket(9, 32, 32), Bucket(5, 48, 32), Bucket(9, 48, 32)]
    assert assign_bucket((81, 480, 480), buckets) == 1
    assert assign_bucket((7, 30, 30), buckets) == 0      # 7 frames fill 5, not 9
    assert assign_bucket((3, 30, 30), buckets) == 0      # shorter than all: the shortest (padded)
    assert assign_bucket((49, 832, 480), buckets) == 3   # 1.73 is nearer 1.5 than 1.0
    with pytest.raises(BadInput, match="4k\\+1"):
        FitConfig.from_dict({"buckets": [{"frames": 8}]})
    with pytest.raises(BadInput, match="buckets"):
        FitConfig.from_dict({"buckets": "sometimes"})
    with pytest.raises(BadInput, match="num_workers"):
        FitConfig.from_dict({"num_workers": -1})


TINY = {"bundle": {"from": "random", "model": {"base": "vera-tiny"}, "patch": 8}, "width": 32, "height": 32,
        "frames": 5, "batch": 2, "lr": 2e-3, "warmup": 2, "log_every": 1, "checkpoint_every": 1000, "ema": 0.9,
        "buckets": LISTED, "random_clip": True, "prompt_drop": 0.5}


def final_tensors(run: Path) -> dict:
    return load_file(str(list_checkpoints(run)[-1]))


@pytest.mark.slow
def test_fit_with_workers_and_buckets_equals_in_process_and_resumes_exactly(public_set, tmp_path):
    cfg = FitConfig.from_dict({**TINY, "steps": 4})
    fit(cfg, public_set, tmp_path / "in_process", progress="none")
    workers = FitConfig.from_dict({**TINY, "steps": 4, "num_workers": 2})
    fit(workers, public_set, tmp_path / "resumed", max_steps=2, progress="none")
    fit(workers, public_set, tmp_path / "resumed", progress="none")
    straight, resumed = final_tensors(tmp_path / "in_process"), final_tensors(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_fit_never_loads_the_text_encoder_when_cache_prompts_ran_first(public_set, tmp_path, monkeypatch):
    from transformers import UMT5EncoderModel

    from vera.model.bundle import create_random_bundle
    from vera.train.cli import main as vera_train
    from vera.train.synth import vocabulary

    bundle = create_random_bundle(tmp_path / "bundle", "vera-tiny", seed=1, resolution=(32, 32), window=5,
                                  patch=8, vocab_words=vocabulary())
    cache = tmp_path / "prompt_cache"
    assert vera_train(["cache-prompts", "--bundle", str(bundle), "--data", str(public_set), "--cache", str(cache),
                       "--device", "cpu", "--progress", "none"]) == 0
    # distinct prompts of the records + the empty prompt, each once
    entries = sorted(cache.glob("*.safetensors"))
    records = [json.loads(line) for line in (public_set / "train.jsonl").read_text().splitlines()]
    assert len(entries) == len({r["edit_instruction"] for r in records}) + 1

    def no_encoder(*args, **kwargs):
        raise AssertionError("the text encoder was loaded")

    monkeypatch.setattr(UMT5EncoderModel, "from_pretrained", no_encoder)
    # caching again finds everything: no load
    assert vera_train(["cache-prompts", "--bundle", str(bundle), "--data", str(public_set), "--cache", str(cache),
                       "--device", "cpu", "--progress", "none"]) == 0
    cfg = FitConfig.from_dict({**TINY, "bundle": {"from": str(bundle)}, "prompt_cache": str(cache), "steps": 3,
                               "prompt_drop": 0.5})
    summary = fit(cfg, public_set, tmp_path / "run", progress="none", bundle_out=tmp_path / "out")
    assert summary["steps"] == 3
    # the patch is live: a prompt that is not cached needs the encoder, and fails to load it
    from vera.train.loader import open_text_encoder

    with pytest.raises(AssertionError, match="text encoder was loaded"):
        open_text_encoder(bundle, "cpu", cache).encode(["a prompt no record has"])
