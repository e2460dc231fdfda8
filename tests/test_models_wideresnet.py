"""Tests for jemfast.models.wideresnet: shapes, parameter count, validation, memory formats, autocast, compile."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close
from torch import nn

from jemfast.models import WideResNet, wrn16_2, wrn28_5


def expected_param_count(
    depth: int, width: int, num_classes: int, in_channels: int = 1, norm: str | None = None
) -> int:
    """Closed-form parameter count of the pre-activation WRN (convolutions carry biases)."""
    n = (depth - 4) // 6
    norm_params = 0 if norm is None else 2  # weight and bias per channel

    def block(c_in: int, c_out: int, stride: int) -> int:
        count = 9 * c_in * c_out + c_out + 9 * c_out * c_out + c_out
        if stride != 1 or c_in != c_out:
            count += c_in * c_out + c_out
        return count + norm_params * (c_in + c_out)

    total = 9 * in_channels * 16 + 16
    c_in = 16
    for c_out, stride in ((16 * width, 1), (32 * width, 2), (64 * width, 2)):
        for i in range(n):
            total += block(c_in, c_out, stride if i == 0 else 1)
            c_in = c_out
    total += norm_params * 64 * width
    return total + 64 * width * num_classes + num_classes


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("depth,width", [(10, 1), (16, 2), (22, 1)])
@pytest.mark.parametrize("frames", [1, 7, 33])
def test_output_shapes_for_any_length(depth, width, frames):
    torch.manual_seed(0)
    model = WideResNet(depth=depth, width=width, num_classes=5)
    x = torch.randn(3, 1, 32, frames)
    with torch.no_grad():
        logits = model(x)
        feats = model.features(x)
    assert logits.shape == (3, 5)
    assert feats.shape == (3, 64 * width)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("norm", [None, "batch", "group"])
def test_wrn28_5_parameter_count_matches_formula(norm):
    model = wrn28_5(7, norm=norm)
    assert model.depth == 28 and model.width == 5 and model.feature_dim == 320
    assert n_params(model) == expected_param_count(28, 5, 7, norm=norm)
    # Sanity check of the formula itself against the well-known ~9.1M of WRN-28-5 (1 input channel).
    assert 9.0e6 < n_params(model) < 9.2e6


def test_wrn16_2_and_in_channels():
    model = wrn16_2(3)
    assert n_params(model) == expected_param_count(16, 2, 3)
    stereo = WideResNet(depth=10, width=1, num_classes=4, in_channels=2)
    assert n_params(stereo) == expected_param_count(10, 1, 4, in_channels=2)
    assert stereo(torch.randn(2, 2, 32, 9)).shape == (2, 4)


@pytest.mark.parametrize("depth", [0, 4, 9, 11, 27, 29])
def test_depth_validation(depth):
    with pytest.raises(ValueError, match=rf"depth={depth}.*\(depth - 4\) % 6"):
        WideResNet(depth=depth, width=1, num_classes=2)


@pytest.mark.parametrize(
    "kwargs,error",
    [
        (dict(width=0), ValueError),
        (dict(num_classes=0), ValueError),
        (dict(norm="layer"), ValueError),
        (dict(dropout=1.0), ValueError),
        (dict(depth=16.0), TypeError),
    ],
)
def test_argument_validation(kwargs, error):
    args = dict(depth=10, width=1, num_classes=2)
    args.update(kwargs)
    with pytest.raises(error):
        WideResNet(**args)


def test_wrong_input_shape_is_rejected():
    model = WideResNet(depth=10, width=1, num_classes=2)
    with pytest.raises(ValueError, match=r"\(N, 1, F, T\)"):
        model(torch.randn(2, 32, 9))
    with pytest.raises(ValueError, match=r"\(N, 1, F, T\)"):
        model(torch.randn(2, 3, 32, 9))


def test_first_layer_composes_with_the_rest():
    torch.manual_seed(1)
    model = WideResNet(depth=10, width=2, num_classes=6)
    x = torch.randn(4, 1, 32, 19)
    assert isinstance(model.first_layer, nn.Conv2d) and model.first_layer.out_channels == 16
    with torch.no_grad():
        h = model.first_layer(x)
        assert_close(model.forward_from_first_layer(h), model(x), name="logits via first_layer")
        assert_close(model.features_from_first_layer(h), model.features(x), name="features via first_layer")
        assert_close(model.classifier(model.features(x)), model(x), name="classifier(features)")


@pytest.mark.parametrize("norm", [None, "group", "batch"])
def test_channels_last_matches_contiguous(norm):
    torch.manual_seed(2)
    model = WideResNet(depth=10, width=2, num_classes=3, norm=norm).eval()
    x = torch.randn(2, 1, 32, 21)
    with torch.no_grad():
        reference = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out = model_cl(x.contiguous(memory_format=torch.channels_last))
    assert_close(out, reference, rtol=1e-4, atol=1e-5, name="channels_last logits")


def test_bf16_autocast_forward_on_cpu():
    torch.manual_seed(3)
    model = WideResNet(depth=10, width=2, num_classes=4, norm="group")
    x = torch.randn(2, 1, 32, 15)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.dtype == torch.bfloat16
    # bf16 keeps ~3 significant digits; errors accumulate over the layers.
    assert_close(out.float(), reference, rtol=5e-2, atol=5e-2 * reference.abs().max().item(), name="bf16 logits")


@pytest.mark.parametrize("norm", [None, "batch", "group"])
def test_input_gradients_flow(norm):
    torch.manual_seed(4)
    model = WideResNet(depth=10, width=1, num_classes=3, norm=norm)
    x = torch.randn(3, 1, 32, 11, requires_grad=True)
    energy = -torch.logsumexp(model(x), dim=1).sum()
    (grad,) = torch.autograd.grad(energy, x)
    assert grad.shape == x.shape
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    # Every sample's gradient is its own (no norm layer mixes the batch in eval mode).
    model.eval()
    x_one = x[:1].detach().clone().requires_grad_(True)
    (grad_one,) = torch.autograd.grad(-torch.logsumexp(model(x_one), dim=1).sum(), x_one)
    x_all = x.detach().clone().requires_grad_(True)
    (grad_all,) = torch.autograd.grad(-torch.logsumexp(model(x_all), dim=1).sum(), x_all)
    assert_close(grad_all[:1], grad_one, rtol=1e-4, atol=1e-6, name="per-sample input gradient")


def test_dropout_only_in_training():
    torch.manual_seed(5)
    model = WideResNet(depth=10, width=1, num_classes=3, dropout=0.5)
    x = torch.randn(2, 1, 32, 8)
    model.eval()
    with torch.no_grad():
        assert_close(model(x), model(x), name="eval is deterministic")
        model.train()
        assert not torch.equal(model(x), model(x))


def test_initialisation_is_documented_scheme():
    model = WideResNet(depth=10, width=1, num_classes=3, norm="group")
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            assert module.weight.abs().max() <= fan_in**-0.5
            assert torch.count_nonzero(module.bias) == 0
        if isinstance(module, nn.GroupNorm):
            assert torch.all(module.weight == 1) and torch.count_nonzero(module.bias) == 0
            assert module.num_channels % module.num_groups == 0


def test_torch_compile_fullgraph():
    torch.manual_seed(6)
    model = WideResNet(depth=10, width=1, num_classes=3)
    x = torch.randn(2, 1, 32, 13, requires_grad=True)
    # aot_eager traces forward and backward through dynamo and AOTAutograd
    # (graph breaks fail with fullgraph=True) without a C++ toolchain.
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    assert_close(out, model(x), rtol=1e-5, atol=1e-6, name="compiled logits")
    (grad,) = torch.autograd.grad(out.sum(), x)
    (grad_ref,) = torch.autograd.grad(model(x).sum(), x)
    assert_close(grad, grad_ref, rtol=1e-5, atol=1e-6, name="compiled input gradient")
