"""The embedded synthetic corpus: structure, determinism and speed."""

import hashlib
import time

import numpy as np
import pytest

from jemfast.data.audio import load_audio
from jemfast.data.importers import age_group_names
from jemfast.data.manifest import read_labels, read_manifest
from jemfast.data.synthetic import EMOTIONS, generate_corpus


def digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("task", ["language", "emotion", "age"])
def test_same_seed_gives_identical_bytes(tmp_path, task):
    a = generate_corpus(tmp_path / "a", task, n_per_class=2, seed=3)
    b = generate_corpus(tmp_path / "b", task, n_per_class=2, seed=3)
    c = generate_corpus(tmp_path / "c", task, n_per_class=2, seed=4)
    assert digest(a["root"]) == digest(b["root"])
    wav_a = sorted((tmp_path / "a" / "wav").rglob("*.wav"))[0]
    wav_c = tmp_path / "c" / wav_a.relative_to(tmp_path / "a")
    assert wav_a.read_bytes() != wav_c.read_bytes()
    assert c["classes"] == a["classes"]


def test_language_corpus_structure(tmp_path):
    out = generate_corpus(tmp_path, "language", n_per_class=3, seed=0, n_eval_per_class=1)
    labels = read_labels(out["labels"])
    assert labels == [f"lang{k}" for k in range(10)]
    train = read_manifest(out["train"])
    test = read_manifest(out["test"])
    assert len(train) == 30 and {r.label for r in train} == set(labels)
    assert sorted({r.subset for r in test}) == ["1s", "3s", "full"]
    for row in test:
        wave = load_audio(out["root"] / row.path, start=row.start, end=row.end)
        assert abs(len(wave) / 16000 - row.duration) < 0.01
        assert np.abs(wave).max() <= 1.0 and wave.std() > 1e-3
    assert not {r.speaker for r in train} & {r.speaker for r in test}


def test_other_tasks_labels(tmp_path):
    emotion = generate_corpus(tmp_path / "e", "emotion", n_per_class=1, n_eval_per_class=1)
    assert read_labels(emotion["labels"]) == list(EMOTIONS)
    age = generate_corpus(tmp_path / "a", "age", n_per_class=1, n_eval_per_class=1)
    assert read_labels(age["labels"]) == age_group_names()
    # age utterances are long enough for most of a 320-frame chunk
    assert min(r.duration for r in read_manifest(age["train"])) >= 2.5


def test_classes_differ_in_distribution(tmp_path):
    """Emotion classes follow their profiles on average: angry speech is louder than sad speech."""
    out = generate_corpus(tmp_path, "emotion", n_per_class=6, n_eval_per_class=1)
    level = {}
    for row in read_manifest(out["train"]):
        wave = load_audio(out["root"] / row.path)
        level.setdefault(row.label, []).append(20 * np.log10(np.sqrt(np.mean(wave**2))))
    assert np.mean(level["angry"]) > np.mean(level["sad"]) + 5.0
    assert np.std(level["neutral"]) > 0.5, "utterances of one class must vary"


def test_reuse_and_speed(tmp_path):
    start = time.perf_counter()
    out = generate_corpus(tmp_path, "emotion", n_per_class=10, seed=0)
    elapsed = time.perf_counter() - start
    # 60 train + 12 dev + 12 test utterances of 1-3 s; generous bound for a shared 2-core machine.
    assert elapsed < 20.0, f"generation took {elapsed:.1f} s"
    stamp = out["train"].stat().st_mtime_ns
    generate_corpus(tmp_path, "emotion", n_per_class=10, seed=0)
    assert out["train"].stat().st_mtime_ns == stamp, "same settings must reuse the corpus"


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="task"):
        generate_corpus(tmp_path, "speaker")
    with pytest.raises(ValueError, match="n_per_class"):
        generate_corpus(tmp_path, "emotion", n_per_class=0)
    assert not any(tmp_path.iterdir())
