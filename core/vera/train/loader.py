"""Training data at scale: which samples each process trains on at each step, grouped in shape buckets, read
by torch DataLoader workers, and the prompt embeddings precomputed before training (`vera-train cache-prompts`).

Determinism. Every choice is a pure function of (seed, step, global stream position), as in vera.train.fit:
- the bucket of step s (one frame count and resolution for the whole global batch) is the s-th draw of one
  seeded stream, each bucket drawn with probability proportional to its number of samples;
- the global batch of step s takes the next `global batch` positions of that bucket's own endless stream of
  per-epoch shuffles (`dataset_index` with the bucket's number), after the positions of the earlier steps that
  drew the same bucket; rank r takes the r-th slice (`rank_positions`).
So a run resumed at step k, or re-sharded over another process count with the same global batch, trains on
the same samples; with one bucket (the default) the samples are exactly those of the in-process loop.

Reading. `StepSampler` yields, for every step from the resume step on, this rank's keys (dataset index, the
sample's seed, bucket); `BucketedSamples` turns a key into a model-ready item under its own seed, so 0 workers
(in-process, decoded samples kept in memory with `cache_data`) and N workers give identical batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vera.errors import BadInput
from vera.model.bundle import resolve_device
from vera.model.bundle_manifest import bundle_folder, read_manifest
from vera.model.configs import VeraConfig
from vera.model.text import TextEncoder
from vera.tensor_messages import Message, receive, send
from vera.train.streams import dataset_index, rank_positions, sample_seed

BUCKET_SCHEDULE = 8  # purpose ids of sample_seed (fit.py uses 1, 2, 3 and 7)
FETCH_SEED = 3


@dataclass(frozen=True)
class Bucket:
    frames: int
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def floor_4k1(frames: int) -> int:
    """The longest clip of 4k+1 frames a sample of `frames` frames holds (1 for an empty one)."""
    return max(1, (int(frames) - 1) // 4 * 4 + 1)


def configured_buckets(spec, frames: int, width: int, height: int) -> list[Bucket] | None:
    """FitConfig.buckets as Bucket list: None (one bucket of frames x width x height), "auto" -> None here
    (found from the data by `plan_buckets`), or a list of {"frames", "width", "height"} (missing keys from
    the run's own frames/width/height). Raises BadInput on a malformed entry."""
    if spec is None or spec == "auto":
        return None
    if not isinstance(spec, list) or not spec:
        raise BadInput('buckets must be null, "auto" or a non-empty list of {"frames", "width", "height"}')
    buckets = []
    for entry in spec:
        if not isinstance(entry, dict) or set(entry) - {"frames", "width", "height"}:
            raise BadInput(f'buckets: {entry!r} is not a {{"frames", "width", "height"}} mapping')
        bucket = Bucket(int(entry.get("frames", frames)), int(entry.get("width", width)),
                        int(entry.get("height", height)))
        if bucket.frames < 1 or (bucket.frames - 1) % 4 or bucket.width < 1 or bucket.height < 1:
            raise BadInput(f"buckets: {entry!r}: frames must be 4k+1 and width, height positive")
        buckets.append(bucket)
    return buckets


def assign_bucket(shape: tuple[int, int, int], buckets: list[Bucket]) -> int:
    """The bucket of a sample of shape (frames, width, height): the nearest aspect ratio, then the longest
    clip the sample fills (or the shortest bucket when it is shorter than all: it is padded)."""
    frames, width, height = shape
    aspect = [abs(math.log(width / height) - math.log(b.width / b.height)) for b in buckets]
    nearest = [i for i, a in enumerate(aspect) if a <= min(aspect) + 1e-9]
    filled = [i for i in nearest if buckets[i].frames <= frames]
    if filled:
        return max(filled, key=lambda i: (buckets[i].frames, buckets[i].width * buckets[i].height, -i))
    return min(nearest, key=lambda i: (buckets[i].frames, -buckets[i].width * buckets[i].height, i))


def plan_buckets(samples, spec, frames: int, width: int, height: int) -> tuple[list[Bucket], list[int]]:
    """(buckets, bucket number of every sample). One bucket needs no look at the samples; "auto" makes a
    bucket per distinct (frames floored to 4k+1, width, height) of the sources; a list assigns by
    `assign_bucket`. Shapes come from headers (sample.json, EXR or MP4 headers), not decoded clips."""
    buckets = configured_buckets(spec, frames, width, height)
    if buckets is not None and len(buckets) == 1:
        return buckets, [0] * len(samples)
    if buckets is None and spec is None:
        return [Bucket(frames, width, height)], [0] * len(samples)
    shapes = [ref.shape() for ref in samples]
    if buckets is None:  # auto
        buckets = sorted({Bucket(floor_4k1(n), w, h) for n, w, h in shapes},
                         key=lambda b: (b.frames, b.width, b.height))
        index = {b: i for i, b in enumerate(buckets)}
        return buckets, [index[Bucket(floor_4k1(n), w, h)] for n, w, h in shapes]
    return buckets, [assign_bucket(shape, buckets) for shape in shapes]


_LAYOUT = 1  # the one kind of message share_buckets sends


def share_buckets(layout, main: bool, device) -> tuple[list[Bucket], list[int]]:
    """Rank 0's (buckets, bucket of every sample) for every process of the default group, as two int64 tensors
    (vera.tensor_messages: never a pickle, whatever network the processes share)."""
    if main:
        buckets, bucket_of = layout
        table = torch.tensor([[b.frames, b.width, b.height] for b in buckets], dtype=torch.int64).reshape(-1, 3)
        send(Message(_LAYOUT, 0, [table, torch.tensor(bucket_of, dtype=torch.int64)]), device=device)
        return layout
    table, bucket_of = receive((_LAYOUT,), device=device).tensors
    return [Bucket(*row) for row in table.tolist()], bucket_of.tolist()


class BatchPlan:
    """Which bucket each step trains on and which dataset sample each global stream position reads."""

    def __init__(self, seed: int, buckets: list[Bucket], bucket_of: list[int], global_batch: int):
        self.seed, self.buckets, self.global_batch = int(seed), list(buckets), int(global_batch)
        self.members = [[i for i, b in enumerate(bucket_of) if b == k] for k in range(len(self.buckets))]
        sizes = np.array([len(m) for m in self.members], np.float64)
        if sizes.sum() == 0:
            raise BadInput("no training samples")
        self._edges = np.cumsum(sizes) / sizes.sum()
        self._edges[-1] = 1.0
        self._schedule = np.zeros(0, np.int64)   # bucket of each step, grown on demand
        self._uses = np.zeros((0, len(self.buckets)), np.int64)  # steps before s that drew each bucket

    def _grow(self, step: int) -> None:
        if step < len(self._schedule):
            return
        count = max(1024, 2 * (step + 1))
        # one seeded stream: its first n draws do not depend on how many are generated (prefix-stable)
        draws = np.random.default_rng(sample_seed(self.seed, 0, 0, BUCKET_SCHEDULE)).random(count)
        self._schedule = np.minimum(np.searchsorted(self._edges, draws, side="right"), len(self.buckets) - 1)
        drawn = np.zeros((count, len(self.buckets)), np.int64)
        drawn[np.arange(count), self._schedule] = 1
        self._uses = np.cumsum(drawn, axis=0) - drawn

    def bucket_at(self, step: int) -> int:
        if len(self.buckets) == 1:
            return 0
        self._grow(step)
        return int(self._schedule[step])

    def index_at(self, step: int, position: int) -> int:
        """The dataset index that global stream `position` (of step `step`) reads."""
        bucket = self.bucket_at(step)
        uses = step if len(self.buckets) == 1 else int(self._uses[step, bucket])
        in_bucket = uses * self.global_batch + position - step * self.global_batch
        members = self.members[bucket]
        return members[dataset_index(self.seed, in_bucket, len(members), stream=bucket)]


class StepSampler(Sampler):
    """For each step in [start, stop): this rank's list of (dataset index, sample seed, bucket) keys."""

    def __init__(self, plan: BatchPlan, start: int, stop: int, batch: int, rank: int, world: int):
        self.plan, self.start, self.stop = plan, int(start), int(stop)
        self.batch, self.rank, self.world = int(batch), int(rank), int(world)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def keys(self, step: int) -> list[tuple[int, int, int]]:
        bucket = self.plan.bucket_at(step)
        return [(self.plan.index_at(step, p), sample_seed(self.plan.seed, step, p, FETCH_SEED), bucket)
                for p in rank_positions(step, self.batch, self.rank, self.world)]

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.keys(step)


class BucketedSamples(Dataset):
    """LayeredDataset items by key (index, seed, bucket): the bucket's frames and size, the sample's random
    choices (a random clip start) from its seed, whatever process reads it. `keep` holds decoded items in
    memory (in-process reading only: each worker would hold its own copy)."""

    def __init__(self, dataset, buckets: list[Bucket], keep: bool = False):
        self.dataset, self.buckets, self.keep = dataset, buckets, keep
        self._items: dict[tuple[int, int], dict] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> dict:
        index, seed, bucket = key
        item = self._items.get((index, bucket))
        if item is None:
            shape = self.buckets[bucket]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                item = self.dataset.item(index, shape.frames, shape.size)
            if self.keep:
                self._items[(index, bucket)] = item
        return item


def _items(batch: list[dict]) -> list[dict]:
    return batch  # the loop collates (it adds masks and moves to the device)


def training_batches(dataset, plan: BatchPlan, start: int, stop: int, batch: int, rank: int, world: int,
                     num_workers: int = 0, keep: bool = False, prefetch: int = 2) -> DataLoader:
    """A DataLoader yielding, for steps start..stop-1, the list of this rank's items (in position order).
    num_workers 0 reads in this process (keeping decoded samples when `keep`); N > 0 uses N worker processes."""
    samples = BucketedSamples(dataset, plan.buckets, keep=keep and num_workers == 0)
    # its own generator: creating the iterator draws a worker base seed, which must not move the global RNG
    # that checkpoints save (every item is seeded by its key anyway)
    options = {"num_workers": int(num_workers), "collate_fn": _items,
               "generator": torch.Generator().manual_seed(plan.seed)}
    if num_workers > 0:
        options["prefetch_factor"] = prefetch
    return DataLoader(samples, batch_sampler=StepSampler(plan, start, stop, batch, rank, world), **options)


# ----------------------------------------------------------------------------------------- prompt cache


def dataset_prompts(samples) -> list[str]:
    """Every distinct prompt of the samples, plus the empty prompt (prompt drop trains with it), sorted."""
    return sorted({ref.instruction() for ref in samples} | {""})


def cache_prompts(text_encoder, prompts: list[str], chunk: int = 16, progress=None) -> dict:
    """Put every prompt's embedding in the text encoder's prompt cache; encode only the ones it lacks, in
    chunks, then free the encoder. {"prompts", "encoded"}: with nothing missing the encoder is never loaded."""
    missing = [p for p in prompts if not text_encoder.is_cached(p)]
    if progress is not None:
        progress.advance(len(prompts) - len(missing), "cached")
    for start in range(0, len(missing), chunk):
        text_encoder.encode(missing[start:start + chunk])
        if progress is not None:
            progress.advance(len(missing[start:start + chunk]))
    text_encoder.unload()
    return {"prompts": len(prompts), "encoded": len(missing)}


def open_text_encoder(bundle, device: str = "auto", cache_dir=None):
    """The text encoder of a bundle ("demo" or a folder), nothing else of it loaded (no transformer, no VAE),
    on `device`'s compute dtype as load_bundle uses it (the cache key holds the dtype, so cache with the same
    device type as training)."""
    folder = bundle_folder(bundle)
    manifest = read_manifest(folder)
    dev, dtype = resolve_device(device)
    text_folder = Path(manifest["text_encoder"])
    text_folder = text_folder if text_folder.is_absolute() else folder / text_folder
    return TextEncoder(text_folder, device=dev, dtype=dtype, cache_dir=cache_dir,
                       max_length=VeraConfig.from_dict(manifest["config"]).text_len)
