"""Reading audio: formats, resampling, channel reduction and the errors for bad files."""

import numpy as np
import pytest
import soundfile as sf

from jemfast.data.audio import AudioError, load_audio, write_wav


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_reads_wav_and_flac(tmp_path, suffix):
    path = tmp_path / f"a{suffix}"
    sf.write(path, tone(0.5, 16000), 16000)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.shape == (8000,)
    np.testing.assert_allclose(wave, tone(0.5, 16000), atol=1e-4)


def test_wrong_rate_is_resampled(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, tone(1.0, 44100), 44100, subtype="FLOAT")
    wave = load_audio(path, sample_rate=16000)
    assert wave.shape == (16000,)
    # The tone keeps its frequency: its spectral peak stays at 440 Hz.
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / len(wave) - 440.0) <= 1.0


def test_multichannel_is_averaged(tmp_path):
    path = tmp_path / "stereo.wav"
    left, right = tone(0.2, 16000, 300.0), tone(0.2, 16000, 500.0)
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-6)


def test_segment(tmp_path):
    path = tmp_path / "a.wav"
    wave = np.linspace(-0.5, 0.5, 16000).astype(np.float32)
    sf.write(path, wave, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, start=0.25, end=0.5), wave[4000:8000])
    with pytest.raises(AudioError, match="bad_segment"):
        load_audio(path, start=0.5, end=2.0)


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="nope.wav") as info:
        load_audio(path)
    assert info.value.reason == "missing"


def test_corrupt_file_is_named(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioError, match="corrupt.wav") as info:
        load_audio(path)
    assert info.value.reason == "unreadable"


def test_empty_file_is_named(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav") as info:
        load_audio(path)
    assert info.value.reason == "empty"


def test_too_short_file_is_named(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, tone(0.01, 16000), 16000)
    with pytest.raises(AudioError, match="short.wav") as info:
        load_audio(path, min_samples=400)
    assert info.value.reason == "too_short"


def test_write_wav_is_pcm16_and_deterministic(tmp_path):
    wave = tone(0.1, 16000)
    write_wav(tmp_path / "a.wav", wave)
    write_wav(tmp_path / "b.wav", wave)
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    assert sf.info(str(tmp_path / "a.wav")).subtype == "PCM_16"
    with pytest.raises(ValueError, match="mono"):
        write_wav(tmp_path / "c.wav", np.zeros((10, 2)))


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda w: w * 1e30, "out_of_range"),
        (lambda w: np.where(np.arange(w.size) == 7, np.nan, w), "non_finite"),
        (lambda w: np.where(np.arange(w.size) == 7, np.inf, w), "non_finite"),
    ],
    ids=["scaled-1e30", "nan", "inf"],
)
def test_out_of_range_float_file_is_named(tmp_path, damage, reason):
    path = tmp_path / "loud.wav"
    sf.write(path, damage(tone(0.5, 16000)).astype(np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="loud.wav") as info:
        load_audio(path)
    assert info.value.reason == reason


def test_float_file_holding_int16_values_is_accepted(tmp_path):
    # Some tools store int16 samples as floats without rescaling; features normalise the level away.
    path = tmp_path / "int_scaled.wav"
    sf.write(path, np.clip(tone(0.5, 16000) * 65536.0, -32768.0, 32767.0), 16000, subtype="FLOAT")
    assert np.abs(load_audio(path)).max() == pytest.approx(32768.0, abs=1.0)
