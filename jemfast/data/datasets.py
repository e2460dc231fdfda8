"""Datasets and DataLoaders over a :class:`~jemfast.data.cache.FeatureCache`.

Training draws one random window of ``chunk_frames`` frames per utterance per
epoch (192 frames, 1.92 s, in the paper; 320 for age). An utterance shorter
than the window is repeated end to end until it fills it (repeat-padding),
so no zeros enter the model. Evaluation uses whole utterances: batches hold
only utterances of exactly equal length (or one utterance each), because
zero-padding would leak into the model's global average pool.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .._checks import check_int
from .cache import FeatureCache
from .manifest import read_labels, read_manifest

LabelsLike = Sequence[str] | str | os.PathLike


def _label_indices(cache: FeatureCache, labels: LabelsLike) -> tuple[list[str], np.ndarray]:
    if isinstance(labels, (str, os.PathLike)):
        labels = read_labels(labels)
    labels = list(labels)
    if not labels:
        raise ValueError("labels must name at least one class")
    position = {name: i for i, name in enumerate(labels)}
    unknown = sorted({e.label for e in cache.entries if e.label not in position})
    if unknown:
        raise ValueError(f"cache {cache.directory} has labels {unknown} that are not in the class list {labels}")
    return labels, np.array([position[e.label] for e in cache.entries], dtype=np.int64)


def repeat_pad(features: np.ndarray, frames: int) -> np.ndarray:
    """Repeat (n_mels, T) along time until it has at least ``frames`` frames; returns (n_mels, max(T, frames))."""
    length = features.shape[1]
    if length == 0:
        raise ValueError("cannot repeat-pad an utterance with zero frames")
    if length >= frames:
        return features
    repeats = -(-frames // length)
    return np.tile(features, (1, repeats))[:, :frames]


class ChunkDataset(Dataset):
    """Random fixed-length training chunks.

    Item i is ``(features, label)``: features a float32 tensor (1, n_mels,
    chunk_frames) cut at a random start from utterance i (repeat-padded when
    shorter), label its class index in ``labels``. The start depends only on
    ``(seed, epoch, i)``, so runs are reproducible with any number of loader
    workers; call :meth:`set_epoch` each epoch to draw new chunks.
    """

    def __init__(self, cache: FeatureCache, labels: LabelsLike, chunk_frames: int = 192, seed: int = 0) -> None:
        if not isinstance(cache, FeatureCache):
            raise TypeError(f"cache must be a FeatureCache, got {type(cache).__name__}")
        chunk_frames = check_int("chunk_frames", chunk_frames, minimum=1)
        self.cache = cache
        self.labels, self.targets = _label_indices(cache, labels)
        self.chunk_frames = chunk_frames
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the chunk positions of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.cache)

    def chunk_start(self, index: int) -> int:
        """First frame of utterance ``index``'s chunk this epoch (0 when it is not longer than the chunk)."""
        spare = self.cache.entries[index].frames - self.chunk_frames
        if spare <= 0:
            return 0
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return int(rng.integers(0, spare + 1))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        features = self.cache[index]
        start = self.chunk_start(index)
        chunk = repeat_pad(features[:, start : start + self.chunk_frames], self.chunk_frames)
        return torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))[None], int(self.targets[index])


class UtteranceDataset(Dataset):
    """Whole utterances for evaluation, optionally one subset only.

    Item i is ``(features, label, subset)``: features float32 (1, n_mels,
    frames) with the utterance's own length, label its class index, subset
    its subset name ("" when the manifest has none).
    """

    def __init__(self, cache: FeatureCache, labels: LabelsLike, subset: str | None = None) -> None:
        if not isinstance(cache, FeatureCache):
            raise TypeError(f"cache must be a FeatureCache, got {type(cache).__name__}")
        self.cache = cache
        self.labels, targets = _label_indices(cache, labels)
        if subset is None:
            self.indices = np.arange(len(cache))
        else:
            present = cache.subsets()
            if subset not in present:
                raise ValueError(f"subset {subset!r} is not in cache {cache.directory}; present: {present}")
            self.indices = np.array([i for i, e in enumerate(cache.entries) if e.subset == subset], dtype=np.int64)
        self.subset = subset
        self.targets = targets[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def frames(self, index: int) -> int:
        """Length in frames of item ``index``."""
        return self.cache.entries[int(self.indices[index])].frames

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        position = int(self.indices[index])
        features = np.array(self.cache[position], dtype=np.float32)  # copy out of the read-only map
        return torch.from_numpy(features)[None], int(self.targets[index]), self.cache.entries[position].subset


class EqualLengthBatchSampler(Sampler[list[int]]):
    """Batches of indices whose utterances have exactly the same number of frames.

    Utterances are grouped by length, each group cut into batches of at most
    ``batch_size``, in a fixed order (by length, then by index), so every item
    is visited exactly once.
    """

    def __init__(self, dataset: UtteranceDataset, batch_size: int) -> None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
        groups: dict[int, list[int]] = defaultdict(list)
        for i in range(len(dataset)):
            groups[dataset.frames(i)].append(i)
        self.batches = [
            members[k : k + batch_size]
            for _, members in sorted(groups.items())
            for k in range(0, len(members), batch_size)
        ]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def collate_utterances(items: list[tuple[torch.Tensor, int, str]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Stack equal-length utterances into (B, 1, n_mels, frames), labels (B,) int64 and subset names."""
    lengths = {item[0].shape[-1] for item in items}
    if len(lengths) != 1:
        raise ValueError(f"an evaluation batch must hold utterances of one length, got lengths {sorted(lengths)}")
    features = torch.stack([item[0] for item in items])
    labels = torch.tensor([item[1] for item in items], dtype=torch.int64)
    return features, labels, [item[2] for item in items]


def make_train_loader(
    dataset: ChunkDataset,
    batch_size: int,
    shuffle: bool = True,
    num_workers: int = 0,
    drop_last: bool = True,
    seed: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """DataLoader of random chunks: batches (B, 1, n_mels, chunk_frames) float32 and labels (B,) int64."""
    if not isinstance(dataset, ChunkDataset):
        raise TypeError(f"make_train_loader expects a ChunkDataset, got {type(dataset).__name__}")
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def make_eval_loader(dataset: UtteranceDataset, batch_size: int = 1, num_workers: int = 0) -> DataLoader:
    """DataLoader of whole utterances, never padded.

    Each batch is ``(features (B, 1, n_mels, frames), labels (B,), subsets)``
    with B <= batch_size utterances of identical length; ``batch_size=1``
    gives one utterance per batch.
    """
    if not isinstance(dataset, UtteranceDataset):
        raise TypeError(f"make_eval_loader expects an UtteranceDataset, got {type(dataset).__name__}")
    return DataLoader(
        dataset,
        batch_sampler=EqualLengthBatchSampler(dataset, batch_size),
        collate_fn=collate_utterances,
        num_workers=num_workers,
    )


def list_subsets(source: FeatureCache | str | os.PathLike) -> list[str]:
    """Non-empty subset names of a cache or a manifest file, in order of first appearance."""
    if isinstance(source, FeatureCache):
        return source.subsets()
    return list(dict.fromkeys(row.subset for row in read_manifest(source) if row.subset))


def make_subset_loaders(
    cache: FeatureCache, labels: LabelsLike, batch_size: int = 1, num_workers: int = 0
) -> dict[str, DataLoader]:
    """One evaluation loader per subset (e.g. "1s", "3s", "full"), or ``{"all": loader}`` without subsets."""
    subsets = cache.subsets()
    if not subsets:
        return {"all": make_eval_loader(UtteranceDataset(cache, labels), batch_size, num_workers)}
    return {
        name: make_eval_loader(UtteranceDataset(cache, labels, subset=name), batch_size, num_workers)
        for name in subsets
    }
