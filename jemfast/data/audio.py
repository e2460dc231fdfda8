"""Reading audio files into mono float32 waveforms at the feature sample rate.

Rules every reader in jemfast follows:

* Files are decoded with soundfile (wav, flac, and whatever libsndfile reads).
* Multi-channel audio is reduced to mono by averaging the channels with equal
  weight. Averaging keeps the level of a file that carries the same signal on
  every channel and never picks a possibly silent channel.
* Audio at another rate is resampled to the target rate with
  ``librosa.resample`` (soxr, high quality).
* A file that cannot be decoded, holds no samples, or is shorter than
  ``min_samples`` (after resampling) raises :class:`AudioError`, whose message
  names the file. So does a float file whose samples are NaN, infinite, or
  larger in magnitude than :data:`MAX_ABS_SAMPLE`: such values turn every
  feature of the utterance into NaN and would surface only later, in training,
  without naming the file. Callers that want to skip such files catch it and
  count them; nothing is dropped silently.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATE = 16000
# One 25 ms analysis window at 16 kHz: anything shorter yields no full frame.
DEFAULT_MIN_SAMPLES = 400
# Largest sample magnitude accepted from a float file. Integer PCM always decodes into [-1, 1]; float
# files may go past full scale, and some tools store int16 values as floats without rescaling (up to
# 32768), which per-utterance normalisation of the features still handles. Anything larger is a broken
# file (a wav scaled by 1e30 overflows the power spectrum to infinity).
MAX_ABS_SAMPLE = 32768.0


class AudioError(ValueError):
    """An audio file is missing, unreadable, empty or too short.

    ``path`` is the offending file and ``reason`` a short machine-friendly tag
    (``"missing"``, ``"unreadable"``, ``"empty"``, ``"too_short"``,
    ``"bad_segment"``, ``"non_finite"``, ``"out_of_range"``).
    """

    def __init__(self, path: str | os.PathLike, reason: str, detail: str) -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}: {detail}")


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file: native rate (Hz), frames, channels, duration (s)."""

    sample_rate: int
    frames: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / float(self.sample_rate)


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read the header of ``path`` without decoding the samples.

    Raises :class:`AudioError` if the file is missing or cannot be parsed.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "missing", "no such file")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError)
        raise AudioError(path, "unreadable", str(exc)) from exc
    return AudioInfo(sample_rate=int(info.samplerate), frames=int(info.frames), channels=int(info.channels))


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average the channels of ``samples`` (frames, channels) into (frames,) float32."""
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    if samples.ndim != 2:
        raise ValueError(f"expected audio of shape (frames,) or (frames, channels), got {samples.shape}")
    return samples.mean(axis=1, dtype=np.float64).astype(np.float32)


def resample(wave: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample a mono float waveform from ``orig_rate`` to ``target_rate`` (Hz)."""
    if orig_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got orig_rate={orig_rate}, target_rate={target_rate}")
    if orig_rate == target_rate:
        return wave.astype(np.float32, copy=False)
    import librosa

    resampled = librosa.resample(wave.astype(np.float32), orig_sr=orig_rate, target_sr=target_rate, res_type="soxr_hq")
    return resampled.astype(np.float32)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    start: float | None = None,
    end: float | None = None,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> np.ndarray:
    """Load ``path`` as a mono float32 waveform in [-1, 1] at ``sample_rate`` Hz.

    ``start`` and ``end`` (seconds, optional) select a segment of the file.
    Returns shape (samples,). Raises :class:`AudioError` naming the file when
    it is missing, unreadable, empty, shorter than ``min_samples`` samples at
    the target rate, when the segment lies outside the file, or when its samples
    are NaN, infinite or above :data:`MAX_ABS_SAMPLE` in magnitude.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be at least 1, got {min_samples}")
    info = audio_info(path)
    if info.frames == 0:
        raise AudioError(path, "empty", "the file holds no samples")
    native = info.sample_rate
    first = 0 if start is None else int(round(start * native))
    last = info.frames if end is None else int(round(end * native))
    if first < 0 or last > info.frames + 1 or last <= first:
        raise AudioError(
            path, "bad_segment", f"segment [{start}, {end}] s is outside the file of {info.duration:.3f} s"
        )
    last = min(last, info.frames)
    try:
        samples, _ = sf.read(str(path), start=first, stop=last, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(path, "unreadable", str(exc)) from exc
    if samples.size == 0:
        raise AudioError(path, "empty", "the file holds no samples")
    check_sample_range(path, samples)
    wave = resample(to_mono(samples), native, sample_rate)
    if wave.shape[0] < min_samples:
        raise AudioError(path, "too_short", f"{wave.shape[0]} samples at {sample_rate} Hz, need at least {min_samples}")
    if not np.all(np.isfinite(wave)):
        raise AudioError(path, "non_finite", "the resampled samples contain NaN or infinity")
    return wave


def check_sample_range(path: str | os.PathLike, samples: np.ndarray) -> None:
    """Raise :class:`AudioError` naming ``path`` if ``samples`` hold NaN, infinity or values past the limit.

    The limit is :data:`MAX_ABS_SAMPLE`; the message gives the first bad value and where it sits.
    """
    frames = samples.reshape(samples.shape[0], -1)  # (frames, channels) whether mono or not
    bad = ~np.isfinite(frames)
    if bad.any():
        frame, channel = np.argwhere(bad)[0]
        raise AudioError(
            path, "non_finite", f"sample {frame} is {frames[frame, channel]}; expected finite values in [-1, 1]"
        )
    peak = float(np.max(np.abs(samples)))
    if peak > MAX_ABS_SAMPLE:
        raise AudioError(
            path,
            "out_of_range",
            f"peak sample magnitude {peak:.3g}, expected values in [-1, 1] (at most {MAX_ABS_SAMPLE:g} accepted)",
        )


def write_wav(path: str | os.PathLike, wave: np.ndarray, sample_rate: int = DEFAULT_SAMPLE_RATE) -> None:
    """Write a mono float waveform in [-1, 1] as 16-bit PCM wav (clipped, deterministic bytes)."""
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"write_wav expects a mono waveform of shape (samples,), got {wave.shape}")
    pcm = np.round(np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.int16)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), pcm, sample_rate, subtype="PCM_16", format="WAV")
