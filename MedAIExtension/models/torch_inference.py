"""The form of a torch network that runs inference fastest on the CPU, with the same scores up to rounding.

Three rewrites, all exact in arithmetic (only float rounding differs, ~1e-6 relative):

* batch norms are folded (with their running statistics) into the convolution or transposed convolution right
  before them in a sequential container, so a per-channel scale and shift over the whole activation disappears
  (MONAI's UNet has one after every convolution but the last);
* 3-D networks get torch's channels-last-3d memory layout, in which oneDNN's 3-D convolutions are much faster
  on x86 than in the default layout;
* in that layout, per-channel PReLUs run on a flat view whose rows hold many voxels' channels (the weight
  tiled to match): torch's own kernel broadcasts a 3-long channel axis slowly (about 10x slower here).

The original module is never modified (it is copied first): explanation methods keep hooking its layers.
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["ChannelsLastPReLU", "CpuInferenceModule", "cpu_inference_module", "fold_batch_norms"]

_TILE = 1024  # voxels per row of the flat view ChannelsLastPReLU works on


class ChannelsLastPReLU(nn.Module):
    """``torch.nn.functional.prelu(x, weight)``, fast on channels-last-3d input (same values).

    The input's memory is viewed as rows of ``tile`` voxels × channels and the weight is tiled to that length,
    so torch's kernel streams along contiguous rows instead of broadcasting a short channel axis.
    """

    def __init__(self, weight: nn.Parameter) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """PReLU of ``x``."""
        channels = self.weight.numel()
        if (
            channels > 1
            and x.dim() == 5
            and x.shape[1] == channels
            and x.is_contiguous(memory_format=torch.channels_last_3d)
        ):
            tile = math.gcd(x.numel() // channels, _TILE)
            if tile > 1:
                n, c, d, h, w = x.shape
                rows = x.permute(0, 2, 3, 4, 1).reshape(-1, channels * tile)  # a view: memory order kept
                out = functional.prelu(rows, self.weight.repeat(tile))
                return out.view(n, d, h, w, c).permute(0, 4, 1, 2, 3)
        return functional.prelu(x, self.weight)


def _swap_prelus(module: nn.Module) -> int:
    """Replace every ``nn.PReLU`` leaf of ``module`` (in place) by a :class:`ChannelsLastPReLU`; returns the count."""
    swapped = 0
    for name, layer in list(module.named_modules()):
        if type(layer) is nn.PReLU and name:
            parent_name, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent_name), child, ChannelsLastPReLU(layer.weight))
            swapped += 1
    return swapped


@dataclass(frozen=True)
class CpuInferenceModule:
    """A network prepared by :func:`cpu_inference_module` and what was done to it."""

    module: nn.Module
    folded_batch_norms: int
    channels_last: bool
    channels_last_prelus: int = 0


def _suits_channels_last_3d(module: nn.Module) -> bool:
    """Whether ``module`` is a volumetric network whose weights can take the channels-last-3d layout.

    True when it has 5-D weights (3-D convolutions) and no 4-D ones (``Module.to`` refuses those).
    """
    ranks = {parameter.dim() for parameter in module.parameters()}
    return 5 in ranks and 4 not in ranks


def _chain(container: nn.Sequential) -> list[tuple[nn.Module, str, nn.Module]]:
    """The leaves of a sequential container in the order data flows through them, as (parent, name, leaf).

    Nested containers are followed only when they are ``nn.Sequential`` (or a subclass that keeps its forward,
    such as MONAI's ``Convolution`` and ``ADN``); any other module ends the chain as one opaque step.
    """
    steps: list[tuple[nn.Module, str, nn.Module]] = []
    for name, child in container.named_children():
        if isinstance(child, nn.Sequential) and type(child).forward is nn.Sequential.forward:
            steps.extend(_chain(child))
        else:
            steps.append((container, name, child))
    return steps


def fold_batch_norms(module: nn.Module) -> tuple[nn.Module, int]:
    """A copy of an ``nn.Module`` (in eval mode) with each batch norm folded into the convolution feeding it.

    A batch norm is folded when it directly follows a convolution or transposed convolution inside a sequential
    container (so the convolution's output goes nowhere else) and that convolution appears once in the network.
    The batch norm is replaced by ``nn.Identity``. Works on the module structure, without tracing, so it is safe
    while other threads run networks. Returns ``(module, count)``; with nothing to fold (or a TorchScript
    module), ``module`` itself and 0.
    """
    if isinstance(module, torch.jit.ScriptModule) or not isinstance(module, nn.Module):
        return module, 0
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    if not any(isinstance(m, norms) for m in module.modules()):
        return module, 0
    copied = copy.deepcopy(module).eval()
    try:
        folded = _fold_sequences(copied, norms)
    except Exception:  # noqa: BLE001 - an older torch or an odd layer: the copy is dropped, the network kept
        return module, 0
    return (copied, folded) if folded else (module, 0)


def _fold_sequences(module: nn.Module, norms: tuple[type[nn.modules.batchnorm._BatchNorm], ...]) -> int:
    """Fold batch norms that follow a convolution in every sequential chain of ``module`` (in place)."""
    transposed = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    convolutions = (nn.Conv1d, nn.Conv2d, nn.Conv3d, *transposed)
    uses: dict[int, int] = {}
    for _, layer in module.named_modules(remove_duplicate=False):
        uses[id(layer)] = uses.get(id(layer), 0) + 1
    chains = [
        _chain(layer)
        for layer in module.modules()
        if isinstance(layer, nn.Sequential) and type(layer).forward is nn.Sequential.forward
    ]
    folded: set[int] = set()  # a nested container's pairs also appear in its parents' chains: fold each once
    for steps in chains:
        for (_, _, conv), (parent, name, norm) in itertools.pairwise(steps):
            if not isinstance(conv, convolutions) or not isinstance(norm, norms) or id(norm) in folded:
                continue
            mean, var = norm.running_mean, norm.running_var
            if mean is None or var is None or uses[id(conv)] != 1 or uses[id(norm)] != 1:
                continue  # (the running statistics are tracked together: both or neither)
            if isinstance(conv, transposed) and conv.groups != 1:
                continue  # a grouped transposed weight is laid out (in, out / groups, ...): not folded here
            gamma = norm.weight if isinstance(norm.weight, torch.Tensor) else None  # None when not affine
            beta = norm.bias if isinstance(norm.bias, torch.Tensor) else None
            weight, bias = fuse_conv_bn_weights(
                conv.weight,
                conv.bias,
                mean,
                var,
                norm.eps,
                gamma,
                beta,
                transpose=isinstance(conv, transposed),
            )
            conv.weight, conv.bias = weight, bias
            setattr(parent, name, nn.Identity())
            folded.add(id(norm))
    return len(folded)


def cpu_inference_module(module: nn.Module) -> CpuInferenceModule:
    """The inference form of ``module`` for the CPU: batch norms folded, channels-last-3d for 3-D networks.

    ``module`` itself is left as it is (the rewrites work on a copy).
    """
    prepared, folded = fold_batch_norms(module)
    channels_last = _suits_channels_last_3d(prepared)
    prelus = 0
    if channels_last:
        if prepared is module:
            prepared = copy.deepcopy(module).eval()
        with warnings.catch_warnings():  # ScriptModule.to reads .grad of non-leaf tensors and warns about it
            warnings.simplefilter("ignore", UserWarning)
            # torch documents Module.to(memory_format=...) but its overloads leave the keyword out
            prepared = prepared.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        if not isinstance(prepared, torch.jit.ScriptModule):
            prelus = _swap_prelus(prepared)
    return CpuInferenceModule(prepared, folded, channels_last, prelus)
