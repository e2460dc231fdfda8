"""librosa reference against the batched torch.stft log-Mel, and the recipe's hash."""

import numpy as np
import pytest
import torch
from conftest import requires_cuda
from helpers import assert_close

from jemfast.data.features import FeatureRecipe, TorchLogMel, logmel


def speech_like(samples: int, seed: int) -> np.ndarray:
    """A pitched tone with an energy envelope, a silent stretch and light noise, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000.0
    wave = 0.3 * np.sin(2 * np.pi * (150 + 40 * t) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    wave += 0.01 * rng.standard_normal(samples)
    wave[samples // 3 : samples // 3 + samples // 10] = 0.0
    return wave.astype(np.float32)


@pytest.mark.parametrize("samples", [400, 1601, 16000, 24077])
@pytest.mark.parametrize("cmvn", [False, True])
def test_torch_matches_librosa_single(samples, cmvn):
    recipe = FeatureRecipe(cmvn=cmvn)
    wave = speech_like(samples, seed=samples)
    expected = logmel(wave, recipe)
    actual = TorchLogMel(recipe)(torch.from_numpy(wave)[None])[0]
    assert expected.shape == (32, recipe.num_frames(samples))
    assert_close(actual, torch.from_numpy(expected), rtol=0, atol=1e-4, name="log-Mel")


def test_torch_batch_with_lengths_matches_each_utterance():
    recipe = FeatureRecipe()
    lengths = [16000, 9123, 4000]
    waves = [speech_like(n, seed=i) for i, n in enumerate(lengths)]
    batch = torch.zeros(len(waves), max(lengths))
    for i, wave in enumerate(waves):
        batch[i, : len(wave)] = torch.from_numpy(wave)
    module = TorchLogMel(recipe)
    out = module(batch, torch.tensor(lengths))
    frames = module.frame_lengths(torch.tensor(lengths))
    for i, wave in enumerate(waves):
        expected = torch.from_numpy(logmel(wave, recipe))
        assert frames[i].item() == expected.shape[1]
        assert_close(out[i, :, : frames[i]], expected, rtol=0, atol=1e-4, name=f"item {i}")
        assert torch.all(out[i, :, frames[i] :] == 0), "frames past an item's length must be zero"


def test_float64_input_keeps_dtype_and_matches():
    recipe = FeatureRecipe()
    wave = speech_like(8000, seed=3)
    out = TorchLogMel(recipe)(torch.from_numpy(wave.astype(np.float64))[None])
    assert out.dtype == torch.float64
    assert_close(out[0], torch.from_numpy(logmel(wave, recipe)).double(), rtol=0, atol=1e-4)


def test_cmvn_normalises_each_band():
    features = logmel(speech_like(16000, seed=1), FeatureRecipe())
    np.testing.assert_allclose(features.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(features.std(axis=1), 1.0, atol=1e-3)


def test_log_floor_bounds_silence():
    recipe = FeatureRecipe(cmvn=False, log_floor=1e-6)
    features = logmel(np.zeros(4000, dtype=np.float32), recipe)
    np.testing.assert_allclose(features, np.log(1e-6), rtol=1e-6)


def test_recipe_key_is_stable_and_sensitive():
    assert FeatureRecipe().key() == FeatureRecipe().key()
    assert len(FeatureRecipe().key()) == 16
    keys = {
        FeatureRecipe().key(),
        FeatureRecipe(n_mels=40).key(),
        FeatureRecipe(log_floor=1e-8).key(),
        FeatureRecipe(cmvn=False).key(),
        FeatureRecipe(hop_length_ms=12.5).key(),
    }
    assert len(keys) == 5
    assert FeatureRecipe.from_dict(FeatureRecipe(n_mels=40).to_dict()) == FeatureRecipe(n_mels=40)


def test_paper_recipe_geometry():
    recipe = FeatureRecipe()
    assert (recipe.win_length, recipe.hop_length, recipe.n_fft, recipe.n_mels) == (400, 160, 512, 32)
    assert recipe.num_frames(16000) == 101


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_mels=0), "n_mels"),
        (dict(win_length_ms=40.0), "win_length_ms"),
        (dict(log_floor=0.0), "log_floor"),
        (dict(fmax=9000.0), "fmax"),
    ],
)
def test_bad_recipe_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FeatureRecipe(**kwargs)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="mono"):
        logmel(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(TypeError, match="floating"):
        logmel(np.zeros(1000, dtype=np.int16))
    module = TorchLogMel()
    with pytest.raises(ValueError, match="shape"):
        module(torch.zeros(1000))
    with pytest.raises(ValueError, match="lengths"):
        module(torch.zeros(2, 1000), torch.tensor([1000, 1001]))


@requires_cuda
def test_cuda_matches_librosa():
    recipe = FeatureRecipe()
    lengths = [16000, 7001]
    waves = [speech_like(n, seed=10 + i) for i, n in enumerate(lengths)]
    batch = torch.zeros(2, max(lengths))
    for i, wave in enumerate(waves):
        batch[i, : len(wave)] = torch.from_numpy(wave)
    module = TorchLogMel(recipe).cuda()
    out = module(batch.cuda(), torch.tensor(lengths, device="cuda")).cpu()
    for i, wave in enumerate(waves):
        expected = torch.from_numpy(logmel(wave, recipe))
        assert_close(out[i, :, : expected.shape[1]], expected, rtol=0, atol=1e-4, name=f"cuda item {i}")
