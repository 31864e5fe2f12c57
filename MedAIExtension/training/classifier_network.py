"""The network of the shipped nodule-vs-vessel patch classifier (a small 3D CNN).

The layout is deliberately a plain chain so every explanation method can reach every layer, also in the
TorchScript export (where forward hooks do not exist): ``features`` (four conv blocks, each
``conv → batch norm → ReLU``, max-pooling after the first two), then ``pool`` (global average), ``flatten`` and
``head`` (linear, one logit per class). Grad-CAM's default target layer is the last conv block.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["CLASSIFIER_ARGS", "CLASSIFIER_TARGET_LAYER", "build_classifier"]

#: Arguments of :func:`build_classifier` for the shipped model.
CLASSIFIER_ARGS: dict[str, Any] = {"in_channels": 1, "classes": 2, "widths": [8, 16, 32, 32]}

#: Dotted name of the layer Grad-CAM looks at by default (output of the last conv block, 1/4 resolution).
CLASSIFIER_TARGET_LAYER = "features.block4"


def build_classifier(in_channels: int = 1, classes: int = 2, widths: list[int] | None = None) -> torch.nn.Module:
    """A fresh classifier: four conv blocks (``features.block1``…``block4``), global average pool, linear head."""
    import torch.nn as nn

    widths = list(widths or CLASSIFIER_ARGS["widths"])
    blocks: OrderedDict[str, Any] = OrderedDict()
    channels = in_channels
    for index, width in enumerate(widths, start=1):
        blocks[f"block{index}"] = nn.Sequential(
            OrderedDict(
                conv=nn.Conv3d(channels, width, kernel_size=3, padding=1, bias=False),
                norm=nn.BatchNorm3d(width),
                act=nn.ReLU(),
            )
        )
        if index <= 2:
            blocks[f"down{index}"] = nn.MaxPool3d(2)
        channels = width
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(blocks),
            pool=nn.AdaptiveAvgPool3d(1),
            flatten=nn.Flatten(),
            head=nn.Linear(channels, classes),
        )
    )
