"""The network architecture of the shipped lung/nodule model (a small MONAI 3D U-Net)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["NETWORK_ARGS", "build_network"]

#: Arguments of ``monai.networks.nets.UNet`` for the shipped model (also written into the MONAI bundle).
NETWORK_ARGS: dict[str, Any] = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 3,
    "channels": [16, 32, 64, 128],
    "strides": [2, 2, 2],
    "num_res_units": 1,
    "norm": "batch",
}


def build_network(**overrides: Any) -> torch.nn.Module:
    """A fresh ``monai.networks.nets.UNet`` with :data:`NETWORK_ARGS` (plus overrides)."""
    from monai.networks.nets import UNet

    return UNet(**{**NETWORK_ARGS, **overrides})
