"""Chunked training data, full-length evaluation loaders and subsets."""

import numpy as np
import pytest
import soundfile as sf
import torch

from jemfast.data.cache import FeatureCache
from jemfast.data.datasets import (
    ChunkDataset,
    UtteranceDataset,
    list_subsets,
    make_eval_loader,
    make_subset_loaders,
    make_train_loader,
    repeat_pad,
)
from jemfast.data.manifest import ManifestRow, write_manifest


@pytest.fixture
def cache(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    # frames = 1 + samples // 160: 0.5 s -> 51, 1.0 s -> 101, 3.0 s -> 301
    spec = [
        ("a0", "a", "1s", 1.0),
        ("a1", "a", "3s", 3.0),
        ("b0", "b", "1s", 1.0),
        ("b1", "b", "full", 0.5),
        ("b2", "b", "1s", 1.0),
    ]
    for utt, label, subset, seconds in spec:
        sf.write(tmp_path / f"{utt}.wav", (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
        rows.append(ManifestRow(utt, f"{utt}.wav", label, "s", subset, seconds))
    write_manifest(tmp_path / "m.csv", rows)
    return FeatureCache.build(tmp_path / "m.csv", tmp_path / "cache", workers=0, progress=False)


def test_repeat_pad():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(repeat_pad(x, 7), np.array([[0, 1, 2, 0, 1, 2, 0], [3, 4, 5, 3, 4, 5, 3]]))
    assert repeat_pad(x, 2) is x


def test_chunks_shape_content_and_determinism(cache):
    data = ChunkDataset(cache, ["a", "b"], chunk_frames=192, seed=5)
    features, label = data[1]
    assert features.shape == (1, 32, 192) and features.dtype == torch.float32 and label == 0
    start = data.chunk_start(1)
    assert 0 <= start <= 301 - 192
    np.testing.assert_array_equal(features[0].numpy(), cache[1][:, start : start + 192])
    # Short utterance: repeat-padded from its own frames, no zeros.
    short, _ = data[3]
    np.testing.assert_array_equal(short[0, :, 51:102].numpy(), cache[3])
    assert torch.equal(data[1][0], ChunkDataset(cache, ["a", "b"], 192, seed=5)[1][0])
    starts = set()
    for epoch in range(8):
        data.set_epoch(epoch)
        starts.add(data.chunk_start(1))
    assert len(starts) > 1, "chunk positions must change between epochs"


def test_train_loader_batches(cache):
    loader = make_train_loader(ChunkDataset(cache, ["a", "b"], chunk_frames=64), batch_size=2, seed=0)
    batches = list(loader)
    assert len(batches) == 2
    assert batches[0][0].shape == (2, 1, 32, 64) and batches[0][1].dtype == torch.int64


def test_eval_loader_never_mixes_lengths(cache):
    data = UtteranceDataset(cache, ["a", "b"])
    batches = list(make_eval_loader(data, batch_size=8))
    seen = []
    for features, labels, subsets in batches:
        assert features.dim() == 4 and features.shape[0] == labels.shape[0] == len(subsets)
        seen += [tuple(features.shape[2:])] * features.shape[0]
    assert sorted(seen) == sorted([(32, 101)] * 3 + [(32, 301), (32, 51)])
    assert len(batches) == 3
    assert len(list(make_eval_loader(data, batch_size=1))) == 5


def test_subsets(cache, tmp_path):
    assert list_subsets(cache) == ["1s", "3s", "full"]
    assert list_subsets(tmp_path / "m.csv") == ["1s", "3s", "full"]
    one_second = UtteranceDataset(cache, ["a", "b"], subset="1s")
    assert len(one_second) == 3 and [one_second[i][2] for i in range(3)] == ["1s"] * 3
    loaders = make_subset_loaders(cache, ["a", "b"], batch_size=4)
    assert {name: sum(len(b[1]) for b in loader) for name, loader in loaders.items()} == {"1s": 3, "3s": 1, "full": 1}
    with pytest.raises(ValueError, match="10s"):
        UtteranceDataset(cache, ["a", "b"], subset="10s")


def test_unknown_label_and_bad_chunk(cache):
    with pytest.raises(ValueError, match="'b'"):
        ChunkDataset(cache, ["a"])
    with pytest.raises(ValueError, match="chunk_frames"):
        ChunkDataset(cache, ["a", "b"], chunk_frames=0)


# ------------------------------------------------------------------ chunks across epochs in training
class RecordingChunks(ChunkDataset):
    """A ChunkDataset that records (epoch, index, start) of every chunk it serves."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.served = []

    def __getitem__(self, index):
        self.served.append((self.epoch, index, self.chunk_start(index)))
        return super().__getitem__(index)


def _chunk_training(cache, run_dir, epochs, interrupt_at=None, resume=False):
    from test_train_checkpoint import InterruptingLoader

    from jemfast.train import JEMLoss, JEMTrainer

    data = RecordingChunks(cache, ["a", "b"], chunk_frames=32, seed=3)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 2))
    trainer = JEMTrainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.01),
        objective=JEMLoss(p_x_weight=0.0),
        run_dir=run_dir,
        data_noise=0.1,
        progress=False,
    )
    loader = make_train_loader(data, batch_size=2, seed=3)
    if interrupt_at is not None:
        loader = InterruptingLoader(loader, interrupt_at)
        loader.dataset = data
        with pytest.raises(KeyboardInterrupt):
            trainer.fit(loader, epochs=epochs)
    else:
        trainer.fit(loader, epochs=epochs, resume=resume)
    return data.served, trainer


def test_training_draws_a_fresh_chunk_per_utterance_each_epoch(cache, tmp_path):
    served, _ = _chunk_training(cache, None, epochs=4)
    assert sorted({epoch for epoch, _, _ in served}) == [0, 1, 2, 3]
    long_ones = [i for i, e in enumerate(cache.entries) if e.frames > 32]
    assert long_ones
    for index in long_ones:
        starts = {start for _, i, start in served if i == index}
        assert len(starts) >= 3, f"utterance {index} got chunks starting at {sorted(starts)} over 4 epochs"
    again, _ = _chunk_training(cache, None, epochs=4)
    assert again == served  # reproducible from the seed


def test_chunks_resume_exactly_mid_run(cache, tmp_path):
    straight, straight_trainer = _chunk_training(cache, tmp_path / "a", epochs=3)
    first, _ = _chunk_training(cache, tmp_path / "b", epochs=3, interrupt_at=3)  # 1 batch into epoch 1
    rest, resumed = _chunk_training(cache, tmp_path / "b", epochs=3, resume=True)
    # 2 batches of 2 per epoch. The resumed run re-draws epoch 1's first batch (skipped, not trained
    # on), then serves exactly what the straight run served from there on.
    assert len(straight) == 12 and first[:6] == straight[:6]
    assert rest == straight[4:]
    for p, q in zip(straight_trainer.module.parameters(), resumed.module.parameters(), strict=True):
        assert torch.equal(p, q)
