"""A deterministic, speech-like corpus generated in numpy, so every command runs without a download.

How an utterance is made (all at 16 kHz, see :func:`synthesize`):

1. **Syllables.** A sequence of syllables is drawn at the speaker's rate
   (syllables per second, log-normal spread). Each syllable has an optional
   consonant onset (a burst of band-limited noise centred on a "fricative"
   frequency), a vowel nucleus with a raised-sine energy envelope, a vowel
   identity (formant targets F1..F4) and a tone (start and slope of the pitch
   in semitones). Pauses are inserted between syllables at random.
2. **Source.** A voiced source is a sawtooth (all harmonics, -6 dB/octave)
   whose phase integrates a pitch contour: the speaker's mean f0, a slow
   declination over the utterance, the per-syllable tone, and jitter (slow
   random pitch perturbation). An unvoiced source is white noise.
3. **Filter.** Both sources are cut into 32 ms frames (sqrt-Hann window, 16 ms
   hop, perfect overlap-add) and shaped in the frequency domain: the voiced
   part by a sum of four formant resonances (coarticulated: formant tracks
   are smoothed across frames), scaled by the speaker's vocal-tract factor,
   with an extra spectral tilt (dB/octave above 100 Hz, on top of the
   sawtooth's -6 dB/octave, which stands for glottal source plus lip
   radiation); the noise by the fricative band in consonants and by the
   formant envelope times a breathiness factor in vowels (aspiration).
4. **Channel.** The speech is scaled to a loudness, and background noise is
   added at a random signal-to-noise ratio between 8 and 30 dB; samples are
   written as 16-bit PCM wav.

Classes change the *distributions* these parameters are drawn from, never a
single deterministic cue, and the per-utterance spread is wide enough that
classes overlap, so a classifier is uncertain on part of the data and
calibration is not trivial:

* ``language`` (10 classes ``lang0`` .. ``lang9``): each language owns a vowel
  inventory drawn from a shared pool of 12 vowels (neighbouring languages
  share vowels), vowel frequencies, a syllable rate, a consonant rate and
  fricative band, and either a lexical-tone inventory (tonal languages) or a
  plain declining intonation. Speakers belong to one language and split.
  The test split has the ``1s``, ``3s`` and ``full`` subsets of AP17-OLR: the
  ``full`` rows are whole 4-6 s files, the ``1s`` and ``3s`` rows segments
  (start/end columns) of the same files.
* ``emotion`` (CASIA's 6: angry, fear, happy, neutral, sad, surprise): pitch
  level and range, rate, loudness, tilt, breathiness and jitter follow the
  usual acoustic correlates of each emotion (anger loud, bright and fast;
  sadness low, slow, dark and quiet; surprise with a rising contour ...).
  Like CASIA, four speakers (two female, two male) speak every emotion.
* ``age`` (4 groups, :data:`jemfast.data.importers.DEFAULT_AGE_BOUNDARIES`):
  each speaker has a sex and an age drawn uniformly in its group's range
  (18-80 overall); pitch, vocal-tract length, jitter, breathiness and rate
  are smooth functions of age plus speaker noise, so adjacent groups overlap
  the most, as they do for real voices.

Determinism: class definitions come from a fixed seed per task; utterances
from ``numpy.random.default_rng([seed, split, class, index])``. The same seed
gives byte-identical wav files and manifests.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._checks import check_bounds, check_choice, check_int
from .audio import write_wav
from .importers import CASIA_EMOTIONS, DEFAULT_AGE_BOUNDARIES, age_group_names
from .manifest import SPLITS, ManifestRow, write_labels, write_manifest

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
GENERATOR_VERSION = 1
TASKS = ("language", "emotion", "age")
EMOTIONS = CASIA_EMOTIONS  # the synthetic emotion task has CASIA's six classes

_FRAME = 512  # synthesis frame (32 ms)
_HOP = _FRAME // 2  # 16 ms; sqrt-Hann analysis and synthesis windows overlap-add to exactly 1
_FREQS = np.fft.rfftfreq(_FRAME, 1.0 / SAMPLE_RATE)
_WINDOW = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_FRAME) / _FRAME))

# A shared pool of vowels (F1, F2, F3, F4 in Hz for an adult male vocal tract).
_VOWELS = np.array(
    [
        [730, 1090, 2440, 3400],  # a
        [270, 2290, 3010, 3700],  # i
        [300, 870, 2240, 3300],  # u
        [530, 1840, 2480, 3500],  # e
        [570, 840, 2410, 3300],  # o
        [660, 1720, 2410, 3500],  # ae
        [490, 1350, 1690, 3300],  # er
        [440, 1020, 2240, 3300],  # open o
        [390, 1990, 2550, 3600],  # I
        [640, 1190, 2390, 3400],  # wedge
        [300, 1700, 2100, 3300],  # y
        [450, 1500, 2500, 3500],  # schwa
    ],
    dtype=np.float64,
)
_BANDWIDTHS = np.array([90.0, 110.0, 170.0, 250.0])
_FORMANT_GAINS = np.array([1.0, 0.6, 0.3, 0.15])


@dataclass
class VoiceParams:
    """Parameters of one utterance (see the module docstring for their role).

    Units: f0 Hz, f0 range and tones semitones, rate syllables/s, tilt dB per
    octave, loudness dB, duration s; other fields are ratios.
    """

    duration: float
    f0: float
    f0_range: float
    rate: float
    vocal_tract: float
    tilt_db: float
    breathiness: float
    jitter: float
    loudness_db: float
    vowel_weights: np.ndarray  # (len(_VOWELS),) probabilities
    tones: np.ndarray  # (n_tones, 2) start and slope in semitones; empty for no lexical tone
    consonant_prob: float
    fricative_hz: float
    pause_prob: float
    declination: float  # semitones per second
    final_rise: float  # semitones added over the last syllable (questions, surprise)


def _smooth(track: np.ndarray, width: int) -> np.ndarray:
    """Moving average along axis 0 with edge padding (keeps length)."""
    if width <= 1:
        return track
    pad = width // 2
    padded = np.concatenate([np.repeat(track[:1], pad, 0), track, np.repeat(track[-1:], width - 1 - pad, 0)])
    kernel = np.ones(width) / width
    if track.ndim == 1:
        return np.convolve(padded, kernel, mode="valid")
    return np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(track.shape[1])], axis=1)


def _syllable_timeline(
    params: VoiceParams, n_frames: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step 1 (syllables): per-frame voiced gain, fricative gain (n_frames,), formants (n_frames, 4) Hz, pitch st.

    Frames are 16 ms hops; the pitch track (n_frames,) is in semitones around the speaker's f0,
    before smoothing, declination and jitter.
    """
    voiced_gain = np.zeros(n_frames)
    fricative_gain = np.zeros(n_frames)
    formants = np.tile(_VOWELS[-1], (n_frames, 1))
    semitones = np.zeros(n_frames)
    frames_per_second = SAMPLE_RATE / _HOP

    t = int(rng.integers(2, 8))
    last_start = t
    while t < n_frames - 4:
        length = max(4, int(round(frames_per_second / params.rate * rng.lognormal(0.0, 0.25))))
        length = min(length, n_frames - t)
        onset = int(round(length * rng.uniform(0.2, 0.4))) if rng.random() < params.consonant_prob else 0
        vowel = _VOWELS[rng.choice(len(_VOWELS), p=params.vowel_weights)]
        nucleus = length - onset
        if onset:
            fricative_gain[t : t + onset] = rng.uniform(0.5, 1.0)
        u = (np.arange(nucleus) + 0.5) / nucleus
        voiced_gain[t + onset : t + length] = np.sin(np.pi * u) ** 0.6 * rng.uniform(0.7, 1.0)
        formants[t : t + length] = vowel * rng.normal(1.0, 0.04, size=4)
        if len(params.tones):
            start, slope = params.tones[rng.integers(len(params.tones))]
        else:
            start, slope = rng.normal(0.0, 0.5), rng.normal(0.0, 1.0)
        semitones[t : t + length] = (start + slope * np.linspace(0.0, 1.0, length)) * params.f0_range / 4.0
        last_start = t
        t += length
        if rng.random() < params.pause_prob:
            t += int(rng.integers(5, 15))
    semitones[last_start:] += np.linspace(0.0, params.final_rise, n_frames - last_start)
    return voiced_gain, fricative_gain, formants, semitones


def _apply_channel(speech: np.ndarray, params: VoiceParams, rng: np.random.Generator) -> np.ndarray:
    """Step 4 (channel): scale speech (samples,) to its loudness, add background noise at 8-30 dB SNR, peak <= 0.95."""
    n_samples = speech.shape[0]
    active = np.abs(speech) > 1e-3 * (np.abs(speech).max() + 1e-12)
    rms = np.sqrt(np.mean(speech[active] ** 2)) if active.any() else 1.0
    speech = speech / max(rms, 1e-9) * 0.05 * 10.0 ** (params.loudness_db / 20.0)
    snr_db = rng.uniform(8.0, 30.0)
    background = _smooth(rng.normal(0.0, 1.0, n_samples), 2)
    background *= 0.05 * 10.0 ** (-snr_db / 20.0) / max(np.sqrt(np.mean(background**2)), 1e-12)
    wave = speech + background
    peak = np.abs(wave).max()
    if peak > 0.95:
        wave *= 0.95 / peak
    return wave


def synthesize(params: VoiceParams, rng: np.random.Generator) -> np.ndarray:
    """Render one utterance: float64 waveform (samples,) at 16 kHz, peak below 1."""
    n_samples = int(round(params.duration * SAMPLE_RATE))
    n_frames = -(-n_samples // _HOP) + 1
    frame_time = np.arange(n_frames) * _HOP / SAMPLE_RATE  # centre of frame t in the output, seconds

    voiced_gain, fricative_gain, formants, semitones = _syllable_timeline(params, n_frames, rng)

    formants = _smooth(formants, 5) * params.vocal_tract
    jitter = _smooth(rng.normal(0.0, 1.0, n_frames), 3) * params.jitter * 12.0
    semitones = _smooth(semitones, 3) - params.declination * frame_time + jitter
    f0_frames = params.f0 * 2.0 ** (semitones / 12.0)

    # Sample-level source: sawtooth with integrated phase, and white noise.
    sample_time = np.arange(n_samples + 2 * _HOP) / SAMPLE_RATE - _HOP / SAMPLE_RATE
    f0 = np.interp(sample_time, frame_time, f0_frames)
    phase = np.cumsum(f0 / SAMPLE_RATE)
    voiced = 2.0 * (phase - np.floor(phase)) - 1.0
    noise = rng.normal(0.0, 1.0, voiced.shape[0])

    # Frame the sources (frame t covers output samples [(t-1)H, (t+1)H)).
    total = (n_frames + 1) * _HOP
    voiced = np.pad(voiced, (0, max(0, total - voiced.shape[0])))[:total]
    noise = np.pad(noise, (0, max(0, total - noise.shape[0])))[:total]
    starts = np.arange(n_frames)[:, None] * _HOP + np.arange(_FRAME)[None, :]
    voiced_spec = np.fft.rfft(voiced[starts] * _WINDOW, axis=1)
    noise_spec = np.fft.rfft(noise[starts] * _WINDOW, axis=1)

    # Formant envelope per frame: (n_frames, freq).
    distance = (_FREQS[None, :, None] - formants[:, None, :]) / (_BANDWIDTHS * params.vocal_tract / 2.0)
    envelope = (_FORMANT_GAINS / np.sqrt(1.0 + distance**2)).sum(axis=2) + 0.01
    octaves = np.log2(np.maximum(_FREQS, 100.0) / 100.0)
    envelope *= 10.0 ** (params.tilt_db * octaves / 20.0)[None, :]
    fricative_band = np.exp(-0.5 * ((_FREQS - params.fricative_hz) / 1200.0) ** 2)

    # The sawtooth's harmonics have amplitude ~ 1/k; noise is white: balance them to comparable levels.
    shaped = voiced_spec * (envelope * voiced_gain[:, None]) + noise_spec * (
        0.15 * envelope * (params.breathiness * voiced_gain)[:, None] + 0.08 * fricative_band * fricative_gain[:, None]
    )
    frames_out = np.fft.irfft(shaped, n=_FRAME, axis=1) * _WINDOW
    out = np.zeros((n_frames + 1, _HOP))
    out[:-1] += frames_out[:, :_HOP]
    out[1:] += frames_out[:, _HOP:]
    speech = out.reshape(-1)[_HOP : _HOP + n_samples]
    return _apply_channel(speech, params, rng)


# --- class definitions -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Speaker:
    speaker_id: str
    female: bool
    f0: float
    vocal_tract: float
    age: float = 40.0


@functools.lru_cache(maxsize=1)
def _language_classes() -> list[dict]:
    rng = np.random.default_rng([1234, 0])
    classes = []
    for lang in range(10):
        # Contiguous, overlapping windows of the vowel pool: neighbours share most vowels.
        members = [(lang + k) % len(_VOWELS) for k in range(6)]
        weights = np.full(len(_VOWELS), 0.01)
        weights[members] = rng.dirichlet(np.full(6, 2.0)) + 0.05
        tonal = lang % 3 == 0
        tones = np.column_stack([rng.uniform(-2.0, 2.0, 4), rng.uniform(-4.0, 4.0, 4)]) if tonal else np.zeros((0, 2))
        classes.append(
            dict(
                name=f"lang{lang}",
                vowel_weights=weights / weights.sum(),
                tones=tones,
                rate=rng.uniform(3.5, 6.0),
                consonant_prob=rng.uniform(0.3, 0.8),
                fricative_hz=rng.uniform(2500.0, 6000.0),
                pause_prob=rng.uniform(0.05, 0.25),
                declination=rng.uniform(0.5, 2.5),
            )
        )
    return classes


# (f0 factor, f0 range st, rate factor, extra tilt dB/oct, breathiness, jitter, loudness dB, final rise st)
_EMOTION_PROFILES = {
    "angry": (1.30, 6.0, 1.10, 1.5, 0.05, 0.020, 5.0, -1.0),
    "fear": (1.35, 3.0, 1.15, -2.0, 0.25, 0.040, -2.0, 0.5),
    "happy": (1.25, 7.0, 1.05, 0.0, 0.08, 0.015, 3.0, 1.0),
    "neutral": (1.00, 3.0, 1.00, -1.0, 0.08, 0.010, 0.0, -0.5),
    "sad": (0.90, 2.0, 0.80, -4.0, 0.18, 0.015, -5.0, -1.5),
    "surprise": (1.30, 8.0, 1.00, 0.0, 0.08, 0.010, 2.0, 5.0),
}


def _voice_of(speaker_female: bool, rng: np.random.Generator) -> tuple[float, float]:
    if speaker_female:
        return float(rng.normal(205.0, 20.0)), float(rng.normal(1.15, 0.03))
    return float(rng.normal(120.0, 12.0)), float(rng.normal(1.0, 0.03))


def _age_voice(age: float, female: bool, rng: np.random.Generator) -> dict:
    """Smooth age trends plus speaker noise (pitch falls with age, then male pitch rises again)."""
    decades = (age - 18.0) / 10.0
    if female:
        f0 = 215.0 - 6.0 * decades
    else:
        f0 = 128.0 - 4.0 * decades + 0.9 * max(0.0, age - 55.0)
    return dict(
        f0=float(f0 * rng.lognormal(0.0, 0.08)),
        vocal_tract=float((1.15 if female else 1.0) * (1.0 - 0.006 * decades) * rng.normal(1.0, 0.03)),
        jitter=float(max(0.003, 0.008 + 0.004 * decades + rng.normal(0.0, 0.004))),
        breathiness=float(max(0.0, 0.05 + 0.03 * decades + rng.normal(0.0, 0.04))),
        rate=float(max(2.5, 5.2 - 0.25 * decades + rng.normal(0.0, 0.5))),
    )


def _default_vowels() -> np.ndarray:
    weights = np.ones(len(_VOWELS))
    return weights / weights.sum()


def _draw_params(task: str, cls: int, speaker: _Speaker, duration: float, rng: np.random.Generator) -> VoiceParams:
    spread = rng.lognormal
    if task == "language":
        lang = _language_classes()[cls]
        return VoiceParams(
            duration=duration,
            f0=speaker.f0 * spread(0.0, 0.05),
            f0_range=float(rng.uniform(2.0, 6.0)),
            rate=lang["rate"] * spread(0.0, 0.15),
            vocal_tract=speaker.vocal_tract,
            tilt_db=float(rng.normal(-1.0, 1.0)),
            breathiness=float(rng.uniform(0.02, 0.15)),
            jitter=float(rng.uniform(0.005, 0.02)),
            loudness_db=float(rng.normal(0.0, 3.0)),
            vowel_weights=lang["vowel_weights"],
            tones=lang["tones"],
            consonant_prob=float(np.clip(lang["consonant_prob"] + rng.normal(0.0, 0.1), 0.05, 0.95)),
            fricative_hz=lang["fricative_hz"] * spread(0.0, 0.15),
            pause_prob=lang["pause_prob"],
            declination=lang["declination"] * spread(0.0, 0.3),
            final_rise=float(rng.normal(0.0, 1.0)),
        )
    if task == "emotion":
        f0x, f0_range, ratex, tilt, breath, jit, loud, rise = _EMOTION_PROFILES[EMOTIONS[cls]]
        return VoiceParams(
            duration=duration,
            f0=speaker.f0 * f0x * spread(0.0, 0.12),
            f0_range=f0_range * spread(0.0, 0.35),
            rate=4.5 * ratex * spread(0.0, 0.15),
            vocal_tract=speaker.vocal_tract,
            tilt_db=tilt + float(rng.normal(0.0, 1.5)),
            breathiness=max(0.0, breath + float(rng.normal(0.0, 0.06))),
            jitter=max(0.002, jit * spread(0.0, 0.4)),
            loudness_db=loud + float(rng.normal(0.0, 3.0)),
            vowel_weights=_default_vowels(),
            tones=np.zeros((0, 2)),
            consonant_prob=0.5,
            fricative_hz=4000.0 * spread(0.0, 0.1),
            pause_prob=0.15,
            declination=float(rng.uniform(0.5, 2.0)),
            final_rise=rise + float(rng.normal(0.0, 1.5)),
        )
    voice = _age_voice(speaker.age, speaker.female, rng)
    return VoiceParams(
        duration=duration,
        f0=voice["f0"],
        f0_range=float(rng.uniform(2.0, 5.0)),
        rate=voice["rate"],
        vocal_tract=voice["vocal_tract"],
        tilt_db=float(rng.normal(-1.0 - 0.3 * (speaker.age - 18.0) / 10.0, 1.0)),
        breathiness=voice["breathiness"],
        jitter=voice["jitter"],
        loudness_db=float(rng.normal(0.0, 3.0)),
        vowel_weights=_default_vowels(),
        tones=np.zeros((0, 2)),
        consonant_prob=0.5,
        fricative_hz=4000.0 * spread(0.0, 0.1),
        pause_prob=0.15,
        declination=float(rng.uniform(0.5, 2.0)),
        final_rise=float(rng.normal(0.0, 1.0)),
    )


def class_names(task: str, age_boundaries: tuple[int, ...] = DEFAULT_AGE_BOUNDARIES) -> list[str]:
    """Class names of a synthetic task, in labels.txt order."""
    if task == "language":
        return [c["name"] for c in _language_classes()]
    if task == "emotion":
        return list(EMOTIONS)
    if task == "age":
        return age_group_names(age_boundaries)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _speakers(
    task: str, split: str, cls: int, count: int, seed: int, age_boundaries: tuple[int, ...]
) -> list[_Speaker]:
    split_id = SPLITS.index(split)
    if task == "emotion":
        # CASIA-like: the same four speakers (2 female, 2 male) speak every emotion in every split.
        rng = np.random.default_rng([seed, 99])
        return [_Speaker(f"spk{k}", k < 2, *_voice_of(k < 2, rng)) for k in range(4)]
    rng = np.random.default_rng([seed, 98, split_id, cls])
    speakers = []
    edges = (18,) + tuple(age_boundaries) + (80,)
    for k in range(count):
        female = bool(rng.random() < 0.5)
        f0, tract = _voice_of(female, rng)
        age = float(rng.uniform(edges[cls], edges[cls + 1])) if task == "age" else 40.0
        speakers.append(_Speaker(f"{split}_c{cls}_s{k}", female, f0, tract, age))
    return speakers


def _check_corpus_args(
    task: str,
    n_per_class: int,
    n_eval_per_class: int | None,
    train_seconds: tuple[float, float],
    age_boundaries: tuple[int, ...],
) -> tuple[int, tuple[int, ...]]:
    """Argument check of :func:`generate_corpus`; returns the dev/test count per class and age boundaries (years)."""
    check_choice("task", task, TASKS)
    n_per_class = check_int("n_per_class", n_per_class, minimum=1)
    if n_eval_per_class is None:
        n_eval = max(2, n_per_class // 4)
    else:
        n_eval = check_int("n_eval_per_class", n_eval_per_class, minimum=1)
    bounds = check_bounds("train_seconds", train_seconds)
    if bounds is None or bounds[0] < 0.1:
        raise ValueError(f"train_seconds must be a (low, high) pair with 0.1 <= low <= high, got {train_seconds!r}")
    age_boundaries = tuple(int(b) for b in age_boundaries)
    if task == "age" and not (len(age_boundaries) >= 1 and 18 < age_boundaries[0] and age_boundaries[-1] < 80):
        raise ValueError(
            f"age_boundaries must lie strictly between 18 and 80 for the synthetic corpus, got {age_boundaries}"
        )
    return n_eval, age_boundaries


def _write_split(
    root: Path,
    task: str,
    split: str,
    classes: list[str],
    count: int,
    seed: int,
    seconds: tuple[float, float],
    age_boundaries: tuple[int, ...],
) -> list[ManifestRow]:
    """Render and write one split's wavs, ``count`` per class, lasting ``seconds`` (low, high); returns its rows.

    Language test files last 4-6 s instead and give three rows each (see :func:`_test_rows`).
    """
    low, high = seconds
    rows: list[ManifestRow] = []
    for cls, name in enumerate(classes):
        speakers = _speakers(task, split, cls, max(1, count // 3), seed, age_boundaries)
        for index in range(count):
            rng = np.random.default_rng([seed, SPLITS.index(split), cls, index])
            speaker = speakers[index % len(speakers)]
            long_test = task == "language" and split == "test"
            duration = float(rng.uniform(4.0, 6.0) if long_test else rng.uniform(low, high))
            wave = synthesize(_draw_params(task, cls, speaker, duration, rng), rng)
            utt_id = f"{split}_{name}_{index:04d}"
            relative = f"wav/{split}/{utt_id}.wav"
            write_wav(root / relative, wave, SAMPLE_RATE)
            actual = wave.shape[0] / SAMPLE_RATE
            if long_test:
                rows.extend(_test_rows(utt_id, relative, name, speaker.speaker_id, actual, rng))
            else:
                rows.append(ManifestRow(utt_id, relative, name, speaker.speaker_id, "", actual))
    return rows


def _test_rows(
    utt_id: str, relative: str, name: str, speaker_id: str, actual: float, rng: np.random.Generator
) -> list[ManifestRow]:
    """Rows of one language test file of ``actual`` seconds: ``full``, then random ``3s`` and ``1s`` segments."""
    rows = [ManifestRow(utt_id, relative, name, speaker_id, "full", actual)]
    for seconds in (3.0, 1.0):
        start = round(float(rng.uniform(0.0, actual - seconds)), 3)
        rows.append(
            ManifestRow(
                f"{utt_id}_{int(seconds)}s",
                relative,
                name,
                speaker_id,
                f"{int(seconds)}s",
                seconds,
                start=start,
                end=round(start + seconds, 3),
            )
        )
    return rows


def generate_corpus(
    out_dir: str | os.PathLike,
    task: str = "language",
    n_per_class: int = 20,
    seed: int = 0,
    n_eval_per_class: int | None = None,
    train_seconds: tuple[float, float] = (1.0, 3.0),
    age_boundaries: tuple[int, ...] = DEFAULT_AGE_BOUNDARIES,
    overwrite: bool = False,
) -> dict:
    """Write a synthetic corpus for ``task`` under ``out_dir`` and return its paths.

    ``n_per_class`` training utterances per class; ``n_eval_per_class``
    (default ``max(2, n_per_class // 4)``) per class in each of dev and test.
    Train and dev utterances last ``train_seconds`` (uniform, seconds; age
    utterances 1.5 s longer, since age is trained on 320-frame chunks);
    language test files last 4-6 s and appear as ``full``, ``3s`` and ``1s``
    rows. Files: ``wav/<split>/<utt>.wav``, ``train.csv``, ``dev.csv``,
    ``test.csv``, ``labels.txt`` and ``corpus.json`` (the generation
    settings; an existing corpus with the same settings is reused unless
    ``overwrite``).

    Returns ``{"train", "dev", "test", "labels", "root"}`` as paths plus
    ``"task"`` and ``"classes"``.
    """
    n_eval, age_boundaries = _check_corpus_args(task, n_per_class, n_eval_per_class, train_seconds, age_boundaries)
    low, high = train_seconds
    classes = class_names(task, age_boundaries)

    root = Path(out_dir)
    settings = dict(
        version=GENERATOR_VERSION,
        task=task,
        n_per_class=n_per_class,
        n_eval_per_class=n_eval,
        seed=seed,
        train_seconds=[float(low), float(high)],
        age_boundaries=list(age_boundaries),
    )
    paths = dict(
        root=root,
        train=root / "train.csv",
        dev=root / "dev.csv",
        test=root / "test.csv",
        labels=root / "labels.txt",
    )
    settings_path = root / "corpus.json"
    if not overwrite and settings_path.is_file() and all(p.is_file() for k, p in paths.items() if k != "root"):
        if json.loads(settings_path.read_text(encoding="utf-8")) == settings:
            logger.info("reusing synthetic %s corpus in %s", task, root)
            return dict(paths, task=task, classes=classes)

    extra = 1.5 if task == "age" else 0.0
    for split in SPLITS:
        count = n_per_class if split == "train" else n_eval
        rows = _write_split(root, task, split, classes, count, seed, (low + extra, high + extra), age_boundaries)
        write_manifest(paths[split], rows)
    write_labels(paths["labels"], classes)
    settings_path.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    logger.info("generated synthetic %s corpus in %s", task, root)
    return dict(paths, task=task, classes=classes)
