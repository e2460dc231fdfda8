"""Prediction files: atomic writes and clear errors for damaged files."""

import numpy as np
import pytest

from jemfast.calibration import Predictions


def predictions(n=20, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return Predictions(rng.normal(size=(n, c)).astype(np.float32), rng.integers(0, c, size=n))


def test_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = predictions(seed=0).save(tmp_path / "test.npz")
    before = path.read_bytes()

    def savez_that_dies_midway(file, **arrays):
        # Half an archive reaches the disk, then the process dies (disk full, kill, power loss).
        if isinstance(file, (str, bytes)) or hasattr(file, "__fspath__"):
            with open(file, "wb") as handle:
                handle.write(before[: len(before) // 2])
        else:
            file.write(before[: len(before) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", savez_that_dies_midway)
    with pytest.raises(OSError, match="No space left"):
        predictions(seed=1).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["test.npz"], "temporary file left behind"


@pytest.mark.parametrize("damage", ["truncated", "empty", "flipped", "single_array"])
def test_damaged_file_is_refused_naming_it(tmp_path, damage):
    path = predictions().save(tmp_path / "dev.npz")
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        path.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "flipped":
        raw[len(raw) // 3] ^= 0xFF
        path.write_bytes(bytes(raw))
    else:
        with open(path, "wb") as handle:
            np.save(handle, np.zeros(3))
    with pytest.raises(ValueError, match=r"dev\.npz: not a readable predictions file"):
        Predictions.load(path)


def test_missing_file_is_reported_as_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        Predictions.load(tmp_path / "nope.npz")
