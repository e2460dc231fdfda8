"""Wide-ResNet backbone for log-Mel inputs (the classifier whose logits define the JEM energy).

The layout follows the pre-activation Wide-ResNet used by JEM (Grathwohl et
al. 2019, after Zagoruyko & Komodakis 2016): a 3x3 stem convolution to 16
channels, three groups of ``(depth - 4) / 6`` residual blocks of widths
16k, 32k and 64k with strides 1, 2 and 2, a final normalisation and
LeakyReLU(0.2), and a linear classifier. Two changes suit speech features:

* the input has one channel (a (32, T) log-Mel image) by default;
* the features are averaged over the whole remaining frequency-time map
  instead of a fixed 8x8 window, so any number of frames T works.

Weight initialisation (``WideResNet.reset_parameters``): convolution and
linear weights are drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which is
PyTorch's default scheme and the one the JEM reference relied on; all biases
start at zero; normalisation layers start as the identity (weight 1, bias 0).
The JEM models are usually trained without normalisation (``norm=None``,
because batch statistics interfere with SGLD sampling), so nothing rescales
the residual stream: He (Kaiming) initialisation, whose per-layer gain is 2
(3x the gain of this scheme), would let activations grow geometrically with
depth, whereas with this scheme the logits of an untrained wrn28_5 (norm=None)
have a standard deviation of about 0.03 on unit-variance inputs, so training
starts from a near-flat energy.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from jemfast._checks import check_choice, check_int, check_number

logger = logging.getLogger(__name__)

__all__ = ["WideResNet", "wrn28_5", "wrn16_2", "NORM_CHOICES", "LEAKY_RELU_SLOPE"]

LEAKY_RELU_SLOPE = 0.2
NORM_CHOICES = (None, "batch", "group")
# GroupNorm groups: at most this many, and always a divisor of the channel count.
_MAX_GROUPS = 32


def _group_count(channels: int) -> int:
    """gcd(channels, 32): 32 groups where the width allows, fewer (e.g. 16 for 80 channels) otherwise."""
    return math.gcd(channels, _MAX_GROUPS)


def _make_norm(norm: str | None, channels: int) -> nn.Module:
    if norm is None:
        return nn.Identity()
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(_group_count(channels), channels)
    raise ValueError(f"norm={norm!r} is not supported; expected one of {NORM_CHOICES}")


class PreActBlock(nn.Module):
    """Pre-activation residual block: norm-act-conv3x3-(dropout)-norm-act-conv3x3 plus a shortcut.

    The stride sits on the second convolution, as in the JEM reference. The
    shortcut is a 1x1 convolution when the width or resolution changes and
    the identity otherwise; it takes the block input before normalisation.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str | None, dropout: float) -> None:
        super().__init__()
        self.norm1 = _make_norm(norm, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.norm2 = _make_norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=True)
        self.act = nn.LeakyReLU(LEAKY_RELU_SLOPE)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=True)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act(self.norm1(x)))
        out = self.conv2(self.act(self.norm2(self.dropout(out))))
        return out + self.shortcut(x)


class WideResNet(nn.Module):
    """Pre-activation Wide-ResNet classifier for (N, C, F, T) feature maps.

    Args:
        depth: total depth; (depth - 4) must be a positive multiple of 6. Each of
            the three groups holds (depth - 4) / 6 blocks.
        width: widening factor k; the groups have 16k, 32k and 64k channels.
        num_classes: number of logits.
        in_channels: input channels C (1 for log-Mel filter banks).
        norm: None (no normalisation, the JEM default), "batch" or "group"
            (GroupNorm with gcd(channels, 32) groups).
        dropout: dropout probability between the two convolutions of each block.

    Input: (N, in_channels, F, T) with F, T >= 1 (the paper uses F = 32 log-Mel
    bands and T = 192 or 320 frames); any F and T work because the features are
    averaged over the final frequency-time map. Output: logits (N, num_classes)
    in the input's autocast dtype. ``features(x)`` gives the penultimate
    (N, 64k) representation, ``first_layer`` is the stem convolution and
    ``forward_from_first_layer(h)`` finishes the forward pass from its output, so
    ``forward(x) == forward_from_first_layer(first_layer(x))``.
    """

    def __init__(
        self,
        depth: int = 28,
        width: int = 5,
        num_classes: int = 10,
        in_channels: int = 1,
        norm: str | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        depth = check_int("depth", depth, type_error=TypeError)
        width = check_int("width", width, minimum=1, type_error=TypeError)
        num_classes = check_int("num_classes", num_classes, minimum=1, type_error=TypeError)
        in_channels = check_int("in_channels", in_channels, minimum=1, type_error=TypeError)
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(
                f"depth={depth} is invalid: a Wide-ResNet needs (depth - 4) % 6 == 0 with at least one block "
                f"per group (depth 10, 16, 22, 28, 34, 40, ...)"
            )
        norm = check_choice("norm", norm, NORM_CHOICES)
        if check_number("dropout", dropout, minimum=0) >= 1.0:
            raise ValueError(f"dropout must be a finite number in [0, 1), got {dropout!r}")

        self.depth = depth
        self.width = width
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.norm = norm
        self.blocks_per_group = (depth - 4) // 6
        group_widths = (16 * width, 32 * width, 64 * width)
        self.feature_dim = group_widths[-1]

        self.first_layer = nn.Conv2d(in_channels, 16, kernel_size=3, padding=1, bias=True)
        groups = []
        channels = 16
        for group_width, stride in zip(group_widths, (1, 2, 2), strict=True):
            blocks = []
            for i in range(self.blocks_per_group):
                blocks.append(PreActBlock(channels, group_width, stride if i == 0 else 1, norm, float(dropout)))
                channels = group_width
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.Sequential(*groups)
        self.final_norm = _make_norm(norm, self.feature_dim)
        self.act = nn.LeakyReLU(LEAKY_RELU_SLOPE)
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise all weights with the scheme in the module docstring."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()  # in_channels * kernel area, or in_features
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(module.weight, -bound, bound)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
                if isinstance(module, nn.BatchNorm2d):
                    module.reset_running_stats()

    def features_from_first_layer(self, h: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, 64k) from the stem output ``h`` = first_layer(x), (N, 16, F, T)."""
        out = self.groups(h)
        out = self.act(self.final_norm(out))
        # Global average over frequency and time, so any input length works.
        return out.mean(dim=(2, 3))

    def forward_from_first_layer(self, h: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) from the stem output ``h`` = first_layer(x), (N, 16, F, T)."""
        return self.classifier(self.features_from_first_layer(h))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate representation (N, 64k) of inputs x, (N, in_channels, F, T)."""
        self._check_input(x)
        return self.features_from_first_layer(self.first_layer(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) of inputs x, (N, in_channels, F, T)."""
        self._check_input(x)
        return self.forward_from_first_layer(self.first_layer(x))

    def _check_input(self, x: torch.Tensor) -> None:
        # Shape checks only: they read metadata, never values, so they cost no
        # device sync and trace cleanly under torch.compile.
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (N, {self.in_channels}, F, T), got {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return f"depth={self.depth}, width={self.width}, num_classes={self.num_classes}, norm={self.norm!r}"


def wrn28_5(num_classes: int, **kwargs) -> WideResNet:
    """The paper's backbone: WideResNet(depth=28, width=5) on 1-channel log-Mel inputs."""
    return WideResNet(depth=28, width=5, num_classes=num_classes, **kwargs)


def wrn16_2(num_classes: int, **kwargs) -> WideResNet:
    """A small WideResNet(depth=16, width=2) used by the benchmarks and quick experiments."""
    return WideResNet(depth=16, width=2, num_classes=num_classes, **kwargs)
