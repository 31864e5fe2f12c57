"""The CPU inference form of torch networks: same scores as the network as loaded, the original left untouched."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet
from torch import nn
from torch.nn import functional

from MedAIExtension.models.backends import TorchBackend, load_backend, load_bundle_module
from MedAIExtension.models.catalog import load_catalog
from MedAIExtension.models.torch_inference import ChannelsLastPReLU, cpu_inference_module, fold_batch_norms


def _with_running_stats(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm non-trivial running statistics and affine parameters (as after training)."""
    generator = torch.Generator().manual_seed(seed)
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            size = layer.num_features
            layer.running_mean.copy_(torch.randn(size, generator=generator))
            layer.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            layer.weight.data.copy_(torch.randn(size, generator=generator))
            layer.bias.data.copy_(torch.randn(size, generator=generator))
    return module.eval()


def _unet() -> nn.Module:
    torch.manual_seed(0)
    net = UNet(3, 1, 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=1, norm="batch")
    return _with_running_stats(net)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = float(b.abs().max())
    assert float((a - b).abs().max()) <= 1e-5 * max(scale, 1.0)


def test_unet_folds_every_batch_norm_and_keeps_its_scores() -> None:
    net = _unet()
    before = copy.deepcopy(net.state_dict())
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.inference_mode():
        expected = net(x)
    prepared = cpu_inference_module(net)
    norms = sum(isinstance(m, nn.BatchNorm3d) for m in net.modules())
    assert prepared.folded_batch_norms == norms > 0
    assert prepared.channels_last
    assert not any(isinstance(m, nn.BatchNorm3d) for m in prepared.module.modules())
    assert prepared.channels_last_prelus == sum(isinstance(m, nn.PReLU) for m in net.modules()) > 0
    with torch.inference_mode():
        got = prepared.module(x.contiguous(memory_format=torch.channels_last_3d))
    _close(got, expected)
    # the network as loaded is untouched: same weights, batch norms still in place, same output
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert sum(isinstance(m, nn.BatchNorm3d) for m in net.modules()) == norms
    with torch.inference_mode():
        assert torch.equal(net(x), expected)


class _CustomForward(nn.Module):
    """The convolution's output feeds the batch norm *and* a skip, in a forward of its own: not folded."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1)
        self.norm = nn.BatchNorm3d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.norm(y) + y


def _shared_convolution() -> nn.Module:
    """One convolution module used twice: folding the first norm into it would change the second use."""
    conv = nn.Conv3d(2, 2, 3, padding=1)
    return nn.Sequential(conv, nn.BatchNorm3d(2), conv, nn.BatchNorm3d(2))


def _grouped_transposed() -> nn.Module:
    """A grouped transposed convolution's weight is (in, out / groups, ...): left unfolded."""
    return nn.Sequential(nn.ConvTranspose3d(4, 6, 3, padding=1, groups=2), nn.BatchNorm3d(6))


def test_transposed_convolution_folds_too() -> None:
    torch.manual_seed(1)
    net = _with_running_stats(
        nn.Sequential(
            nn.ConvTranspose3d(4, 3, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm3d(3), nn.PReLU(3)
        ),
        seed=1,
    )
    x = torch.rand(2, 4, 8, 8, 8)
    with torch.inference_mode():
        expected = net(x)
        prepared = cpu_inference_module(net)
        assert prepared.folded_batch_norms == 1
        assert isinstance(prepared.module[1], nn.Identity) and isinstance(net[1], nn.BatchNorm3d)
        _close(prepared.module(x.contiguous(memory_format=torch.channels_last_3d)), expected)


@pytest.mark.parametrize(
    "network",
    [_CustomForward, _shared_convolution, _grouped_transposed],
    ids=["custom-forward", "shared-convolution", "grouped-transposed"],
)
def test_networks_that_cannot_be_folded_stay_as_they_are(network) -> None:
    torch.manual_seed(2)
    net = _with_running_stats(network(), seed=2)
    folded, count = fold_batch_norms(net)
    assert count == 0 and folded is net
    channels = next(m for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))).in_channels
    x = torch.rand(1, channels, 6, 6, 6)
    with torch.inference_mode():
        _close(cpu_inference_module(net).module(x.contiguous(memory_format=torch.channels_last_3d)), net(x))


def test_torchscript_and_two_dimensional_networks() -> None:
    net = _unet()
    scripted = torch.jit.script(net)
    prepared = cpu_inference_module(scripted)
    assert prepared.folded_batch_norms == 0 and prepared.channels_last  # TorchScript: layout only
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.inference_mode():
        _close(prepared.module(x.contiguous(memory_format=torch.channels_last_3d)), net(x))
    flat = _with_running_stats(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.PReLU(4)))
    prepared = cpu_inference_module(flat)
    assert prepared.folded_batch_norms == 1 and not prepared.channels_last  # 2-D weights keep their layout
    image = torch.rand(1, 1, 12, 12)
    with torch.inference_mode():
        _close(prepared.module(image), flat(image))


@pytest.mark.parametrize("channels", [1, 3, 16])
def test_channels_last_prelu_gives_torch_prelu_values_exactly(channels: int) -> None:
    torch.manual_seed(channels)
    weight = nn.Parameter(torch.rand(channels))
    layer = ChannelsLastPReLU(weight)
    x = torch.randn(2, channels, 12, 10, 6)
    for tensor in (x, x.contiguous(memory_format=torch.channels_last_3d), torch.randn(3, channels, 5)):
        with torch.inference_mode():
            out = layer(tensor)
            assert torch.equal(out, functional.prelu(tensor, weight))
            assert out.is_contiguous(memory_format=torch.channels_last_3d) == (
                tensor.dim() == 5 and tensor.is_contiguous(memory_format=torch.channels_last_3d)
            )


def test_shipped_bundle_predicts_as_the_network_as_loaded() -> None:
    entry = load_catalog(include_user_models=False).get("chest-ct-lung-nodule-torch")
    backend = load_backend(entry, "cpu")
    assert isinstance(backend, TorchBackend) and backend.channels_last
    plain = load_bundle_module(entry).eval()
    batch = np.random.default_rng(0).random((1, 1, 96, 96, 96), dtype=np.float32)
    with torch.inference_mode():
        expected = plain(torch.from_numpy(batch)).numpy()
    got = backend.predict(batch)
    assert got.shape == expected.shape and got.flags.c_contiguous
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
    assert np.mean(got.argmax(axis=1) == expected.argmax(axis=1)) > 0.9999
