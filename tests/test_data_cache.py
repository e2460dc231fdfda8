"""Feature cache: build, reopen, recipe-keyed invalidation, skipped files, workers and concurrent builds."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from jemfast._leftovers import host_tag
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


def test_out_of_range_float_file_is_refused_or_skipped(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    sf.write(folder / "loud.wav", (1e30 * np.ones(8000)).astype(np.float32), 16000, subtype="FLOAT")
    manifest = make_corpus(folder, extra_rows=[ManifestRow("loud", "loud.wav", "a")])
    with pytest.raises(AudioError, match="loud.wav.*out_of_range"):
        FeatureCache.build(manifest, tmp_path / "cache", workers=0, progress=False)
    assert not (tmp_path / "cache" / FeatureRecipe().key()).exists()
    cache = FeatureCache.build(manifest, tmp_path / "cache", workers=0, on_error="skip", progress=False)
    assert cache.utt_ids == ["u0", "u1", "u2"] and np.isfinite(np.asarray(cache.array)).all()
    assert [(s.utt_id, s.reason) for s in cache.skipped] == [("loud", "out_of_range")]


def test_skipped_files_are_named_in_a_warning_when_built_and_when_reused(tmp_path, caplog):
    folder = tmp_path / "c"
    folder.mkdir()
    sf.write(folder / "loud.wav", (1e30 * np.ones(8000)).astype(np.float32), 16000, subtype="FLOAT")
    manifest = make_corpus(folder, extra_rows=[ManifestRow("loud", "loud.wav", "a")])
    with caplog.at_level("WARNING", logger="jemfast.data.cache"):
        FeatureCache.build(manifest, tmp_path / "cache", workers=0, on_error="skip", progress=False)
    built = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(built) == 1 and "skipped 1 of 4 utterances" in built[0], built
    assert str(folder / "loud.wav") in built[0] and "out_of_range" in built[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="jemfast.data.cache"):
        FeatureCache.build(manifest, tmp_path / "cache", workers=0, on_error="skip", progress=False)
    reused = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(reused) == 1 and "leaves out 1 of 4 utterances" in reused[0] and "loud.wav" in reused[0], reused


def test_on_error_changes_the_cache_only_when_a_file_is_skipped(tmp_path):
    # The folder is keyed by the recipe alone: clean data gives the same content in both modes (one cache);
    # with a bad file, raise writes nothing and skip writes the only cache, which raise never reuses.
    manifest = make_corpus(tmp_path / "c")
    strict = FeatureCache.build(manifest, tmp_path / "cache", workers=0, progress=False)
    lenient = FeatureCache.build(manifest, tmp_path / "cache", workers=0, on_error="skip", progress=False)
    assert lenient.directory == strict.directory and not lenient.skipped
    assert (lenient.directory / "features.f32").stat().st_ino == (strict.directory / "features.f32").stat().st_ino


def test_non_finite_features_are_refused(tmp_path):
    # Digital silence without a CMVN epsilon normalises 0 by 0: in-range audio, NaN features.
    folder = tmp_path / "c"
    folder.mkdir()
    sf.write(folder / "silent.wav", np.zeros(8000, dtype=np.float32), 16000)
    manifest = make_corpus(folder, extra_rows=[ManifestRow("silent", "silent.wav", "a")])
    with pytest.raises(AudioError, match="silent.wav.*non_finite.*NaN or infinite"):
        FeatureCache.build(manifest, tmp_path / "cache", FeatureRecipe(cmvn_eps=0.0), workers=0, progress=False)


def test_one_cache_however_the_data_folder_is_spelled(tmp_path, monkeypatch):
    make_corpus(tmp_path / "c9")
    monkeypatch.chdir(tmp_path)
    first = FeatureCache.build("c9/m.csv", "c9/features", workers=0, progress=False)
    built = (first.directory / "features.f32").stat().st_ino
    spellings = [("./c9/m.csv", "./c9/features"), (tmp_path / "c9" / "m.csv", tmp_path / "c9" / "features")]
    for manifest, cache_dir in spellings:
        again = FeatureCache.build(manifest, cache_dir, workers=0, progress=False)
        assert again.fingerprint == first.fingerprint, f"{manifest} gave another fingerprint"
        assert (again.directory / "features.f32").stat().st_ino == built, f"{manifest} rebuilt the cache"


@pytest.mark.parametrize("rebuild", [False, True])
def test_build_keeps_a_cache_another_process_installed_first(tmp_path, monkeypatch, rebuild):
    manifest = make_corpus(tmp_path / "c")
    if rebuild:
        FeatureCache.build(manifest, tmp_path / "cache", workers=0, progress=False)
    competitor, real_pid = {}, os.getpid()

    def finish_competitor_first(rename):
        # Just before this build moves its staging folder into place, another build of the same
        # manifest (a second process in real life) completes and installs its own folder.
        def hooked(src, dst, *args, **kwargs):
            if ".partial-" in str(src) and not competitor:
                competitor["running"] = True  # its own rename must not start yet another build
                with monkeypatch.context() as other_process:
                    other_process.setattr(os, "getpid", lambda: real_pid + 1)
                    competitor["cache"] = FeatureCache.build(
                        manifest, tmp_path / "cache", workers=0, progress=False, rebuild=rebuild
                    )
                competitor["inode"] = (competitor["cache"].directory / "features.f32").stat().st_ino
            return rename(src, dst, *args, **kwargs)

        return hooked

    monkeypatch.setattr(os, "rename", finish_competitor_first(os.rename))
    monkeypatch.setattr(os, "replace", finish_competitor_first(os.replace))
    cache = FeatureCache.build(manifest, tmp_path / "cache", workers=0, progress=False, rebuild=rebuild)
    assert competitor, "the competing build did not run"
    assert (cache.directory / "features.f32").stat().st_ino == competitor["inode"], "the finished cache was replaced"
    np.testing.assert_array_equal(np.asarray(cache.array), np.asarray(competitor["cache"].array))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [FeatureRecipe().key()], "staging left behind"


def exited_pid():
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_staging_folders_of_killed_builds_are_removed(tmp_path):
    manifest = make_corpus(tmp_path / "c")
    cache_dir = tmp_path / "cache"
    key, host, dead = FeatureRecipe().key(), host_tag(), exited_pid()
    names = {
        "dead": f".{key}.partial-{host}-{dead}.1a2b3c4d",
        "dead_older_version": f".{key}.partial-{dead}",
        "dead_while_replacing": f".{key}.replaced-{host}-{dead}.5e6f7a8b",
        "live": f".{key}.partial-{host}-{os.getppid()}.1a2b3c4d",
        "other_host": f".{key}.partial-otherhost-{dead}.1a2b3c4d",
        "other_host_idle": f".{key}.partial-otherhost-{dead}.9c8d7e6f",
    }
    for name in names.values():
        (cache_dir / name).mkdir(parents=True)
        (cache_dir / name / "features.f32").write_bytes(b"\0" * 16)
    two_hours_ago = time.time() - 7200
    for entry in (cache_dir / names["other_host_idle"], cache_dir / names["other_host_idle"] / "features.f32"):
        os.utime(entry, (two_hours_ago, two_hours_ago))
    FeatureCache.build(manifest, cache_dir, workers=0, progress=False)
    left = {p.name for p in cache_dir.iterdir()}
    assert left == {key, names["live"], names["other_host"]}
