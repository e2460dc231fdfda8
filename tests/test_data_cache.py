"""Feature cache: build, reopen, recipe-keyed invalidation, skipped files and workers."""

import numpy as np
import pytest
import soundfile as sf

from jemfast.data.audio import AudioError, load_audio
from jemfast.data.cache import FeatureCache
from jemfast.data.features import FeatureRecipe, logmel
from jemfast.data.manifest import ManifestRow, write_manifest


def make_corpus(folder, lengths=(0.5, 0.8, 1.1), extra_rows=()):
    rng = np.random.default_rng(0)
    rows = []
    for k, seconds in enumerate(lengths):
        path = folder / f"u{k}.wav"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
        rows.append(ManifestRow(f"u{k}", path.name, "ab"[k % 2], f"s{k}", "", seconds))
    rows.extend(extra_rows)
    write_manifest(folder / "m.csv", rows)
    return folder / "m.csv"


def test_build_and_open_match_reference(tmp_path):
    manifest = make_corpus(tmp_path / "c")
    recipe = FeatureRecipe()
    cache = FeatureCache.build(manifest, tmp_path / "cache", recipe, workers=0, progress=False)
    reopened = FeatureCache.open(tmp_path / "cache", recipe)
    assert len(reopened) == 3 and reopened.utt_ids == ["u0", "u1", "u2"]
    for k in range(3):
        expected = logmel(load_audio(tmp_path / "c" / f"u{k}.wav"), recipe)
        np.testing.assert_array_equal(reopened[k], expected)
        np.testing.assert_array_equal(cache.features(f"u{k}"), expected)
    assert [e.label for e in reopened.entries] == ["a", "b", "a"]


def test_changed_recipe_never_reads_stale_features(tmp_path):
    manifest = make_corpus(tmp_path / "c")
    FeatureCache.build(manifest, tmp_path / "cache", FeatureRecipe(), workers=0, progress=False)
    other = FeatureRecipe(n_mels=40)
    with pytest.raises(FileNotFoundError, match=other.key()):
        FeatureCache.open(tmp_path / "cache", other)
    rebuilt = FeatureCache.build(manifest, tmp_path / "cache", other, workers=0, progress=False)
    assert rebuilt[0].shape[0] == 40
    assert FeatureCache.open(tmp_path / "cache", FeatureRecipe())[0].shape[0] == 32


def test_reuse_and_rebuild_on_manifest_change(tmp_path):
    manifest = make_corpus(tmp_path / "c")
    first = FeatureCache.build(manifest, tmp_path / "cache", workers=0, progress=False)
    again = FeatureCache.build(manifest, tmp_path / "cache", workers=0, progress=False)
    assert again.fingerprint == first.fingerprint and len(again) == 3
    make_corpus(tmp_path / "c", lengths=(0.5, 0.8))
    changed = FeatureCache.build(manifest, tmp_path / "cache", workers=0, progress=False)
    assert len(changed) == 2 and changed.fingerprint != first.fingerprint


def bad_rows(folder):
    (folder / "corrupt.wav").write_bytes(b"not audio at all")
    sf.write(folder / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    sf.write(folder / "short.wav", np.zeros(100, dtype=np.float32), 16000)
    return [
        ManifestRow("corrupt", "corrupt.wav", "a"),
        ManifestRow("empty", "empty.wav", "a"),
        ManifestRow("short", "short.wav", "a"),
        ManifestRow("missing", "missing.wav", "a"),
    ]


def test_bad_files_raise_or_are_skipped_and_recorded(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    manifest = make_corpus(folder, extra_rows=bad_rows(folder))
    with pytest.raises(AudioError, match="corrupt.wav"):
        FeatureCache.build(manifest, tmp_path / "cache", workers=0, progress=False)
    assert not (tmp_path / "cache" / FeatureRecipe().key()).exists(), "a failed build must leave no cache"
    cache = FeatureCache.build(manifest, tmp_path / "cache", workers=0, on_error="skip", progress=False)
    assert len(cache) == 3
    reasons = {s.utt_id: s.reason for s in FeatureCache.open(tmp_path / "cache").skipped}
    assert reasons == {"corrupt": "unreadable", "empty": "empty", "short": "too_short", "missing": "missing"}
    # A cache with skipped files is not silently reused by a strict build.
    with pytest.raises(AudioError):
        FeatureCache.build(manifest, tmp_path / "cache", workers=0, progress=False)


def test_parallel_workers_match_serial(tmp_path):
    manifest = make_corpus(tmp_path / "c", lengths=(0.3, 0.4, 0.5, 0.6, 0.7))
    serial = FeatureCache.build(manifest, tmp_path / "serial", workers=0, progress=False)
    parallel = FeatureCache.build(manifest, tmp_path / "parallel", workers=2, progress=False)
    assert parallel.entries == serial.entries
    np.testing.assert_array_equal(np.asarray(parallel.array), np.asarray(serial.array))


def test_bad_arguments(tmp_path):
    manifest = make_corpus(tmp_path / "c")
    with pytest.raises(ValueError, match="on_error"):
        FeatureCache.build(manifest, tmp_path / "cache", on_error="ignore")
    with pytest.raises(ValueError, match="workers"):
        FeatureCache.build(manifest, tmp_path / "cache", workers=-1)
    with pytest.raises(TypeError, match="FeatureRecipe"):
        FeatureCache.open(tmp_path / "cache", recipe={"n_mels": 32})
    assert not (tmp_path / "cache").exists()
