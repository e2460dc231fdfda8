"""Log-Mel filter-bank features: the recipe, a librosa reference and a batched torch version.

The recipe follows the paper: 32 Mel bands from a 512-point FFT of 25 ms
Hamming-windowed frames taken every 10 ms at 16 kHz, the power spectrum
pooled by librosa's Slaney-normalised Mel filters, then

    logmel = log(max(mel_power, log_floor))

a plain natural log with a floor (``log_floor`` = 1e-6 by default, about
-13.8 in log units, well below the energy of any audible frame of a [-1, 1]
waveform; librosa's ``power_to_db`` is not used because its ``top_db``
clipping depends on each utterance's loudest frame). Finally every Mel band
is normalised per utterance to zero mean and unit variance over time (CMVN):

    x = (logmel - mean_t) / sqrt(var_t + cmvn_eps)

Frames are centred (``center=True``) with zero padding of n_fft/2 samples at
each end, so an utterance of L samples has ``1 + L // hop`` frames.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# Bump when the code that computes features changes in a way the recipe fields
# do not capture, so caches built by older code are never read.
FEATURE_CODE_VERSION = 1


@dataclass(frozen=True)
class FeatureRecipe:
    """Everything that determines the features of a waveform.

    Units: ``sample_rate`` Hz, ``win_length_ms``/``hop_length_ms`` milliseconds,
    ``fmin``/``fmax`` Hz (``fmax=None`` means sample_rate / 2), ``log_floor``
    in Mel power units of a [-1, 1] waveform.
    """

    sample_rate: int = 16000
    n_mels: int = 32
    win_length_ms: float = 25.0
    hop_length_ms: float = 10.0
    n_fft: int = 512
    window: str = "hamming"
    log_floor: float = 1e-6
    cmvn: bool = True
    cmvn_eps: float = 1e-5
    fmin: float = 0.0
    fmax: float | None = None
    center: bool = True
    mel_norm: str = "slaney"
    htk: bool = False

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.n_mels <= 0:
            raise ValueError(f"n_mels must be positive, got {self.n_mels}")
        if self.hop_length <= 0:
            raise ValueError(f"hop_length_ms={self.hop_length_ms} gives a hop of {self.hop_length} samples")
        if not 0 < self.win_length <= self.n_fft:
            raise ValueError(
                f"win_length_ms={self.win_length_ms} gives {self.win_length} samples, expected 1..n_fft={self.n_fft}"
            )
        if self.log_floor <= 0:
            raise ValueError(f"log_floor must be positive, got {self.log_floor}")
        if self.cmvn_eps < 0:
            raise ValueError(f"cmvn_eps must be non-negative, got {self.cmvn_eps}")
        top = self.sample_rate / 2 if self.fmax is None else self.fmax
        if not 0 <= self.fmin < top <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin}, fmax={self.fmax}")

    @property
    def win_length(self) -> int:
        """Window length in samples."""
        return int(round(self.sample_rate * self.win_length_ms / 1000.0))

    @property
    def hop_length(self) -> int:
        """Frame shift in samples."""
        return int(round(self.sample_rate * self.hop_length_ms / 1000.0))

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a waveform of ``num_samples`` samples."""
        if self.center:
            return 1 + num_samples // self.hop_length
        return max(0, 1 + (num_samples - self.n_fft) // self.hop_length)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> FeatureRecipe:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown FeatureRecipe fields {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**values)

    def key(self) -> str:
        """A short stable hash (16 hex digits) of the recipe and the feature code version."""
        payload = json.dumps({"version": FEATURE_CODE_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


@functools.lru_cache(maxsize=8)
def mel_filters(recipe: FeatureRecipe) -> np.ndarray:
    """Mel filter bank (n_mels, n_fft // 2 + 1) float32, as librosa builds it.

    Cached per recipe, so a cache build and every TorchLogMel share one bank
    instead of rebuilding it per utterance; the returned array is read-only.
    """
    import librosa

    basis = librosa.filters.mel(
        sr=recipe.sample_rate,
        n_fft=recipe.n_fft,
        n_mels=recipe.n_mels,
        fmin=recipe.fmin,
        fmax=recipe.fmax,
        htk=recipe.htk,
        norm=recipe.mel_norm,
    ).astype(np.float32)
    basis.flags.writeable = False
    return basis


def analysis_window(recipe: FeatureRecipe) -> np.ndarray:
    """The periodic analysis window, zero-padded at both ends to n_fft samples (float32)."""
    import librosa

    window = librosa.filters.get_window(recipe.window, recipe.win_length, fftbins=True)
    return librosa.util.pad_center(window, size=recipe.n_fft).astype(np.float32)


def cmvn_numpy(features: np.ndarray, eps: float) -> np.ndarray:
    """Normalise (n_mels, frames) to zero mean, unit variance per band over frames."""
    mean = features.mean(axis=1, keepdims=True, dtype=np.float64)
    var = features.var(axis=1, keepdims=True, dtype=np.float64)
    return ((features - mean) / np.sqrt(var + eps)).astype(np.float32)


def logmel(wave: np.ndarray, recipe: FeatureRecipe = FeatureRecipe()) -> np.ndarray:
    """Log-Mel features of one mono waveform, computed with librosa (the reference).

    ``wave``: (samples,) float in [-1, 1] at ``recipe.sample_rate``.
    Returns (n_mels, frames) float32 with ``frames = recipe.num_frames(samples)``.
    """
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"logmel expects a mono waveform of shape (samples,), got {wave.shape}")
    if wave.shape[0] == 0:
        raise ValueError("logmel got an empty waveform")
    if not np.issubdtype(wave.dtype, np.floating):
        raise TypeError(f"logmel expects a floating-point waveform, got dtype {wave.dtype}")
    with warnings.catch_warnings():
        # Centring pads every frame to n_fft, so inputs shorter than n_fft are fine; silence librosa's notice.
        warnings.filterwarnings("ignore", message="n_fft=.* is too large for input signal", category=UserWarning)
        mel = _librosa_mel(wave, recipe)
    features = np.log(np.maximum(mel, recipe.log_floor)).astype(np.float32)
    if recipe.cmvn:
        features = cmvn_numpy(features, recipe.cmvn_eps)
    return features


def _librosa_mel(wave: np.ndarray, recipe: FeatureRecipe) -> np.ndarray:
    """Mel power spectrogram: librosa's STFT and filter bank (what melspectrogram computes)."""
    import librosa

    spectrum = librosa.stft(
        wave.astype(np.float32),
        n_fft=recipe.n_fft,
        hop_length=recipe.hop_length,
        win_length=recipe.win_length,
        window=recipe.window,
        center=recipe.center,
        pad_mode="constant",
    )
    power = spectrum.real**2 + spectrum.imag**2
    return mel_filters(recipe) @ power


class TorchLogMel(nn.Module):
    """Batched log-Mel features with ``torch.stft``, the same recipe as :func:`logmel`.

    ``forward(waves, lengths=None)``: ``waves`` (B, samples) float, zero-padded
    at the end when utterances differ in length, with ``lengths`` (B,) their
    true sample counts. Returns (B, n_mels, frames) in the dtype of ``waves``
    where ``frames = recipe.num_frames(samples)``. With ``lengths``, item b
    has ``recipe.num_frames(lengths[b])`` valid frames: its CMVN statistics use
    only those, and later frames are set to zero. Because the recipe pads the
    signal ends with zeros, the valid frames equal :func:`logmel` of the
    unpadded waveform. Works on any device the module is moved to.
    """

    def __init__(self, recipe: FeatureRecipe = FeatureRecipe()) -> None:
        super().__init__()
        if not isinstance(recipe, FeatureRecipe):
            raise TypeError(f"recipe must be a FeatureRecipe, got {type(recipe).__name__}")
        self.recipe = recipe
        self.register_buffer("window", torch.from_numpy(analysis_window(recipe)), persistent=False)
        self.register_buffer("mel_basis", torch.from_numpy(mel_filters(recipe).copy()), persistent=False)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid frames per item for sample counts ``lengths`` (B,) int64."""
        hop = self.recipe.hop_length
        if self.recipe.center:
            return 1 + torch.div(lengths, hop, rounding_mode="floor")
        return (1 + torch.div(lengths - self.recipe.n_fft, hop, rounding_mode="floor")).clamp_min(0)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if waves.dim() != 2:
            raise ValueError(f"TorchLogMel expects waves of shape (B, samples), got {tuple(waves.shape)}")
        if not waves.is_floating_point():
            raise TypeError(f"TorchLogMel expects floating-point waves, got {waves.dtype}")
        batch, samples = waves.shape
        if samples == 0:
            raise ValueError("TorchLogMel got waves with zero samples")
        recipe = self.recipe
        compute_dtype = torch.float64 if waves.dtype == torch.float64 else torch.float32
        x = waves.to(compute_dtype)
        spec = torch.stft(
            x,
            n_fft=recipe.n_fft,
            hop_length=recipe.hop_length,
            win_length=recipe.n_fft,
            window=self.window.to(compute_dtype),
            center=recipe.center,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # (B, freq, frames)
        mel = torch.matmul(self.mel_basis.to(compute_dtype), power)  # (B, n_mels, frames)
        features = torch.log(mel.clamp_min(recipe.log_floor))
        frames = features.shape[-1]
        if lengths is None:
            mask = None
        else:
            lengths = torch.as_tensor(lengths, device=waves.device)
            if lengths.shape != (batch,):
                raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
            if bool((lengths < 1).any()) or bool((lengths > samples).any()):
                raise ValueError(f"lengths must lie in [1, {samples}], got {lengths.tolist()}")
            valid = self.frame_lengths(lengths.long())
            mask = torch.arange(frames, device=waves.device)[None, :] < valid[:, None]  # (B, frames)
            mask = mask[:, None, :].to(compute_dtype)
        if recipe.cmvn:
            if mask is None:
                mean = features.mean(dim=-1, keepdim=True)
                var = features.var(dim=-1, unbiased=False, keepdim=True)
            else:
                count = mask.sum(dim=-1, keepdim=True).clamp_min(1.0)
                mean = (features * mask).sum(dim=-1, keepdim=True) / count
                var = (((features - mean) * mask).square()).sum(dim=-1, keepdim=True) / count
            features = (features - mean) * torch.rsqrt(var + recipe.cmvn_eps)
        if mask is not None:
            features = features * mask
        return features.to(waves.dtype)
