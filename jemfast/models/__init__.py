"""Classifier backbones whose logits define the JEM energy."""

from jemfast.models.wideresnet import WideResNet, wrn16_2, wrn28_5

__all__ = ["WideResNet", "wrn28_5", "wrn16_2"]
