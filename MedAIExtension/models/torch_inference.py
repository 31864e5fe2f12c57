"""The form of a torch network that runs inference fastest on the CPU, with the same scores up to rounding.

Three rewrites, all exact in arithmetic (only float rounding differs, ~1e-6 relative):

* batch norms in eval mode are folded into the convolution (or transposed convolution) right before them, so
  a per-channel scale and shift over the whole activation disappears (MONAI's UNet has one after every
  convolution but the last);
* 3-D networks get torch's channels-last-3d memory layout, in which oneDNN's 3-D convolutions are much faster
  on x86 than in the default layout;
* in that layout, per-channel PReLUs run on a flat view whose rows hold many voxels' channels (the weight
  tiled to match): torch's own kernel broadcasts a 3-long channel axis slowly (about 10x slower here).

The original module is never modified (it is copied first): explanation methods keep hooking its layers.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
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


def _swap_prelus(module: Any) -> int:
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

    module: Any
    folded_batch_norms: int
    channels_last: bool
    channels_last_prelus: int = 0


def _suits_channels_last_3d(module: Any) -> bool:
    """Whether ``module`` is a volumetric network whose weights can take the channels-last-3d layout.

    True when it has 5-D weights (3-D convolutions) and no 4-D ones (``Module.to`` refuses those).
    """
    ranks = {parameter.dim() for parameter in module.parameters()}
    return 5 in ranks and 4 not in ranks


def _fold_in_graph(graph_module: Any, convolutions: tuple[type, ...], norms: tuple[type, ...]) -> int:
    """Fold the foldable batch norms of a traced network into their convolutions (in place); returns how many."""
    transposed = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    layers = dict(graph_module.named_modules())
    calls: dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    folded = 0
    for node in list(graph_module.graph.nodes):
        norm = layers.get(node.target) if node.op == "call_module" else None
        if not isinstance(norm, norms) or norm.running_mean is None or len(node.args) != 1 or node.kwargs:
            continue
        source = node.args[0]
        if not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        conv = layers.get(source.target)
        if not isinstance(conv, convolutions) or calls[source.target] != 1:
            continue
        if isinstance(conv, transposed) and conv.groups != 1:
            continue  # a grouped transposed weight is laid out (in, out / groups, ...): not folded here
        weight, bias = fuse_conv_bn_weights(
            conv.weight,
            conv.bias,
            norm.running_mean,
            norm.running_var,
            norm.eps,
            norm.weight,
            norm.bias,
            transpose=isinstance(conv, transposed),
        )
        conv.weight, conv.bias = weight, bias
        node.replace_all_uses_with(source)
        graph_module.graph.erase_node(node)
        folded += 1
    return folded


def fold_batch_norms(module: Any) -> tuple[Any, int]:
    """A copy of an ``nn.Module`` (in eval mode) with each batch norm folded into the convolution feeding it.

    A batch norm is folded when its only input is a convolution or transposed convolution module that is called
    once in the whole network and whose output goes nowhere else. Returns ``(module, count)``; when the network
    cannot be traced symbolically (data-dependent control flow, TorchScript), the module is returned unchanged
    with a count of 0.
    """
    if isinstance(module, torch.jit.ScriptModule) or not isinstance(module, nn.Module):
        return module, 0
    convolutions = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    if not any(isinstance(m, norms) for m in module.modules()):
        return module, 0
    try:
        graph_module = fx.symbolic_trace(copy.deepcopy(module).eval())
    except Exception:  # noqa: BLE001 - any tracing failure means: leave the network as it is
        return module, 0
    try:
        folded = _fold_in_graph(graph_module, convolutions, norms)
    except Exception:  # noqa: BLE001 - an older torch or an odd graph: the copy is dropped, the network kept
        return module, 0
    if not folded:
        return module, 0
    graph_module.graph.lint()
    graph_module.recompile()
    graph_module.delete_all_unused_submodules()
    return graph_module.eval(), folded


def cpu_inference_module(module: Any) -> CpuInferenceModule:
    """The inference form of ``module`` for the CPU: batch norms folded, channels-last-3d for 3-D networks.

    ``module`` itself is left as it is (the rewrites work on a copy).
    """
    module = module.eval()
    prepared, folded = fold_batch_norms(module)
    channels_last = _suits_channels_last_3d(prepared)
    prelus = 0
    if channels_last:
        if prepared is module:
            prepared = copy.deepcopy(module)
        with warnings.catch_warnings():  # ScriptModule.to reads .grad of non-leaf tensors and warns about it
            warnings.simplefilter("ignore", UserWarning)
            prepared = prepared.to(memory_format=torch.channels_last_3d)
        if not isinstance(prepared, torch.jit.ScriptModule):
            prelus = _swap_prelus(prepared)
    return CpuInferenceModule(prepared, folded, channels_last, prelus)
