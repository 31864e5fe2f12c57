"""Exact incremental inference for occlusion sensitivity on chain networks (the "Krypton" idea).

Occluding a small box of the input changes, in a network made of *local* layers (convolution, pooling,
element-wise layers), only the features inside that box's receptive-field cone. For a classifier whose local
layers end in a global average pool, every occluded forward pass therefore equals the cached baseline forward
pass plus a correction computed on small boxes: each layer is evaluated only on the box of its output that can
change, reading its input from the cached baseline activations with the previous layer's new values pasted in,
and the global mean is updated by the change of the sum inside the last box (Nakandala et al., "Incremental and
approximate inference for faster occlusion-based deep CNN explanations", SIGMOD 2019; here without the
approximate part, so the result is the full forward pass up to float rounding).

:func:`decompose_chain` recognises such networks (``torch.nn.Sequential`` or its TorchScript export, nested
sequentials flattened) and :class:`IncrementalOcclusion` evaluates windows in batches. The caller checks once
that the decomposed forward pass equals the module's own (:meth:`IncrementalOcclusion.verify`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from MedAIExtension.explain.torch_model import type_name

if TYPE_CHECKING:
    import torch

__all__ = ["ChainLayer", "IncrementalOcclusion", "NotAChainError", "decompose_chain"]

_POINTWISE = frozenset(
    {
        "BatchNorm1d",
        "BatchNorm2d",
        "BatchNorm3d",
        "ReLU",
        "ReLU6",
        "LeakyReLU",
        "PReLU",
        "ELU",
        "SELU",
        "CELU",
        "GELU",
        "SiLU",
        "Mish",
        "Sigmoid",
        "Tanh",
        "Hardtanh",
        "Hardswish",
        "Hardsigmoid",
        "Softplus",
        "Identity",
        "Dropout",
        "Dropout1d",
        "Dropout2d",
        "Dropout3d",
        "AlphaDropout",
    }
)
_CONV = ("Conv1d", "Conv2d", "Conv3d")
_MAXPOOL = ("MaxPool1d", "MaxPool2d", "MaxPool3d")
_AVGPOOL = ("AvgPool1d", "AvgPool2d", "AvgPool3d")
_GLOBAL = ("AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d")


class NotAChainError(ValueError):
    """The module is not a chain of local layers followed by a global average pool (use the generic path)."""


@dataclass(frozen=True)
class ChainLayer:
    """One local layer of the chain.

    Attributes:
        kind: ``"pointwise"``, ``"conv"``, ``"maxpool"`` or ``"avgpool"``.
        module: the layer (called directly for point-wise layers).
        kernel, stride, padding, dilation: per spatial dimension (1, 1, 0, 1 for point-wise layers).
        pad_value: value of the padding (0 for convolution and average pooling, -inf for max pooling).
    """

    kind: str
    module: Any  # an nn.Module or a ScriptModule: its layer attributes are read by the layer's type name
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    pad_value: float = 0.0

    def output_box(self, start: np.ndarray, stop: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        """The outputs whose receptive field meets inputs ``[start, stop)`` (int arrays ``(W, D)``): ``(W, D, 2)``."""
        if self.kind == "pointwise":
            return np.stack([start, stop], axis=-1)
        k, s = np.asarray(self.kernel), np.asarray(self.stride)
        p, d = np.asarray(self.padding), np.asarray(self.dilation)
        first = np.maximum(0, -((-(start + p - d * (k - 1))) // s))
        last = np.minimum(np.asarray(shape), (stop - 1 + p) // s + 1)
        return np.stack([first, np.maximum(first, last)], axis=-1)

    def input_span(self, box: np.ndarray) -> np.ndarray:
        """The inputs, in padded coordinates, that the outputs in ``box`` (``(W, D, 2)``) read: ``(W, D, 2)``."""
        k, s, d = np.asarray(self.kernel), np.asarray(self.stride), np.asarray(self.dilation)
        return np.stack([box[..., 0] * s, (box[..., 1] - 1) * s + d * (k - 1) + 1], axis=-1)

    def apply(self, patch: torch.Tensor) -> torch.Tensor:
        """The layer on an already padded ``patch`` (point-wise layers: on the patch as it is)."""
        import torch.nn.functional as F

        n = patch.ndim - 2
        if self.kind == "pointwise":
            return self.module(patch)
        if self.kind == "conv":
            conv = getattr(F, f"conv{n}d")
            return conv(
                patch,
                self.module.weight,
                self.module.bias,
                self.stride,
                0,
                self.dilation,
                int(self.module.groups),
            )
        if self.kind == "maxpool":
            return getattr(F, f"max_pool{n}d")(patch, self.kernel, self.stride, 0, self.dilation)
        return getattr(F, f"avg_pool{n}d")(patch, self.kernel, self.stride, 0)

    def pad(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` padded by this layer's padding with its pad value."""
        import torch.nn.functional as F

        if not any(self.padding):
            return tensor
        widths: list[int] = []
        for p in reversed(self.padding):
            widths += [p, p]
        return F.pad(tensor, widths, mode="constant", value=self.pad_value)


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    values = tuple(int(v) for v in value)
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise NotAChainError(f"layer parameter {value!r} does not fit {n} spatial dimensions")
    return values


def _flatten(module: torch.nn.Module) -> list[Any]:  # leaves read by type name (see ChainLayer.module)
    import torch.nn as nn

    is_sequential = (isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward) or type_name(
        module
    ) == "Sequential"
    if not is_sequential:
        return [module]
    layers: list[Any] = []
    for _, child in module.named_children():
        layers += _flatten(child)
    return layers


def _local_layer(module: Any, name: str, n: int) -> ChainLayer:
    ones, zeros = (1,) * n, (0,) * n
    if bool(getattr(module, "training", False)):
        raise NotAChainError(f"{name} is in training mode (call model.eval() first)")
    if name in _POINTWISE:
        return ChainLayer("pointwise", module, ones, ones, zeros, ones)
    if name in _CONV:
        if str(getattr(module, "padding_mode", "zeros")) != "zeros":
            raise NotAChainError(f"{name} pads with {module.padding_mode!r}, only zero padding is supported")
        kernel, dilation = _tuple(module.kernel_size, n), _tuple(module.dilation, n)
        padding: Any = module.padding
        if isinstance(padding, str):
            if padding == "valid":
                padding = zeros
            elif all(d * (k - 1) % 2 == 0 for k, d in zip(kernel, dilation, strict=True)):
                padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
            else:
                raise NotAChainError(f"{name} with asymmetric 'same' padding is not supported")
        if name[-2] != str(n):
            raise NotAChainError(f"{name} does not fit a {n}-D input")
        return ChainLayer("conv", module, kernel, _tuple(module.stride, n), _tuple(padding, n), dilation)
    if name in _MAXPOOL or name in _AVGPOOL:
        if bool(getattr(module, "ceil_mode", False)) or bool(getattr(module, "return_indices", False)):
            raise NotAChainError(f"{name} with ceil_mode/return_indices is not supported")
        kernel = _tuple(module.kernel_size, n)
        stride = _tuple(module.stride if module.stride is not None else module.kernel_size, n)
        padding = _tuple(module.padding, n)
        if name in _MAXPOOL:
            return ChainLayer("maxpool", module, kernel, stride, padding, _tuple(module.dilation, n), -math.inf)
        if any(padding) and not bool(module.count_include_pad):
            raise NotAChainError(f"{name} with padding and count_include_pad=False is not supported")
        if getattr(module, "divisor_override", None) is not None:
            raise NotAChainError(f"{name} with divisor_override is not supported")
        return ChainLayer("avgpool", module, kernel, stride, padding, ones)
    raise NotAChainError(f"layer {name} is not a known local layer")


def decompose_chain(module: torch.nn.Module, spatial_dims: int) -> tuple[list[ChainLayer], list[torch.nn.Module]]:
    """Split ``module`` into local layers, a global average pool and the tail applied to the pooled features.

    Raises:
        NotAChainError: when the module is not such a chain (the caller uses the generic path).
    """
    layers = _flatten(module)
    local: list[ChainLayer] = []
    for index, layer in enumerate(layers):
        name = type_name(layer)
        if name in _GLOBAL:
            output_size = layer.output_size
            sizes = (output_size,) if isinstance(output_size, int) else tuple(output_size)
            if any(s != 1 for s in sizes) or name[-2] != str(spatial_dims):
                raise NotAChainError(f"{name}({output_size}) is not a global average pool")
            if not local:
                raise NotAChainError("the network starts with its global pool")
            return local, layers[index + 1 :]
        local.append(_local_layer(layer, name, spatial_dims))
    raise NotAChainError("no global average pool (AdaptiveAvgPool(1)) after the local layers")


class IncrementalOcclusion:
    """Occluded forward passes of a chain network, computed on the changed boxes only.

    Args:
        layers: the local layers (from :func:`decompose_chain`).
        tail: modules applied to the globally pooled features ``(N, C, 1, ...)``.
        x: the unoccluded input ``(1, C, *S)`` as a torch tensor on the module's device.
    """

    def __init__(self, layers: Sequence[ChainLayer], tail: Sequence[torch.nn.Module], x: torch.Tensor) -> None:
        import torch

        self.layers = list(layers)
        self.tail = list(tail)
        self.x = x
        with torch.inference_mode():
            activations = [x]
            padded = []
            for layer in self.layers:
                padded.append(layer.pad(activations[-1]))
                activations.append(layer.apply(padded[-1]))
        #: baseline input of every layer, padded by that layer's padding
        self.padded_inputs = padded
        #: spatial shape of every layer's output
        self.shapes = [tuple(int(s) for s in a.shape[2:]) for a in activations[1:]]
        self.channels = [int(a.shape[1]) for a in activations[1:]]
        self.last = activations[-1]
        dims = tuple(range(2, self.last.ndim))
        self.count = float(np.prod(self.shapes[-1]))
        self.pooled = self.last.double().sum(dim=dims, keepdim=True) / self.count

    def base_output(self) -> torch.Tensor:
        """The network output of the unoccluded input through the decomposed chain."""
        import torch

        with torch.inference_mode():
            return self._head(self.pooled)

    def _head(self, pooled: torch.Tensor) -> torch.Tensor:
        out = pooled.to(self.last.dtype)
        for module in self.tail:
            out = module(out)
        return out

    def memory_ratio(self, window: np.ndarray) -> float:
        """How many windows like ``window`` (``(D, 2)``) fit in the activation memory of one full forward pass."""
        boxes = self._boxes(window[None])
        full = sum(c * float(np.prod(shape)) for c, shape in zip(self.channels, self.shapes, strict=True))
        part = sum(c * float(np.prod(b[0, :, 1] - b[0, :, 0])) for c, b in zip(self.channels, boxes, strict=True))
        return full / max(part, 1.0)

    def _boxes(self, windows: np.ndarray) -> list[np.ndarray]:
        """Per layer, the output box ``(W, D, 2)`` computed for each window (uniform size across windows)."""
        current = windows.copy()
        boxes = []
        for layer, shape in zip(self.layers, self.shapes, strict=True):
            box = layer.output_box(current[..., 0], current[..., 1], shape)
            size = np.asarray(shape)
            lengths = np.minimum(np.maximum((box[..., 1] - box[..., 0]).max(axis=0), 1), size)
            start = np.minimum(box[..., 0], size - lengths)
            current = np.stack([start, start + lengths], axis=-1)
            boxes.append(current)
        return boxes

    def outputs(self, windows: np.ndarray, fill: torch.Tensor) -> torch.Tensor:
        """Network outputs ``(W, L)`` with each window occluded.

        Args:
            windows: ``(W, D, 2)`` integer ``[start, stop)`` of each occluded box on the input grid (all the same
                size).
            fill: the occluded box's values, a tensor broadcastable to ``(W, C, *box)``.
        """
        import torch

        with torch.inference_mode():
            boxes = self._boxes(windows)
            sizes = tuple(int(v) for v in windows[0, :, 1] - windows[0, :, 0])
            patch = torch.empty((len(windows), self.x.shape[1], *sizes), dtype=self.x.dtype, device=self.x.device)
            patch[:] = fill
            previous = windows
            for layer, padded, box in zip(self.layers, self.padded_inputs, boxes, strict=True):
                if layer.kind != "pointwise":
                    spans = layer.input_span(box)
                    # baseline inputs of the box, with the previous layer's new values pasted in
                    inputs = _gather(padded[0], spans[..., 0], tuple(int(v) for v in spans[0, :, 1] - spans[0, :, 0]))
                    patch = _paste(inputs, patch, previous[..., 0] + np.asarray(layer.padding), spans[..., 0])
                patch = layer.apply(patch)
                previous = box
            baseline = _gather(self.last[0], previous[..., 0], tuple(int(v) for v in patch.shape[2:]))
            dims = tuple(range(2, patch.ndim))
            delta = (patch.double() - baseline.double()).sum(dim=dims, keepdim=True)
            return self._head(self.pooled + delta / self.count)


def _gather(tensor: torch.Tensor, starts: np.ndarray, lengths: Sequence[int]) -> torch.Tensor:
    """Boxes of ``tensor`` ``(C, *S)`` starting at ``starts`` ``(W, D)``: a new tensor ``(W, C, *lengths)``."""
    import torch

    return torch.stack(
        [
            tensor[(slice(None), *(slice(int(a), int(a) + n) for a, n in zip(row, lengths, strict=True)))]
            for row in starts
        ]
    )


def _paste(
    target: torch.Tensor, source: torch.Tensor, source_starts: np.ndarray, target_starts: np.ndarray
) -> torch.Tensor:
    """Write the overlapping part of ``source`` ``(W, C, *P)`` into ``target`` ``(W, C, *T)`` (in place).

    Both are boxes of one grid, starting at ``source_starts`` and ``target_starts`` (``(W, D)``).
    """
    source_size, target_size = np.asarray(source.shape[2:]), np.asarray(target.shape[2:])
    low = np.maximum(source_starts, target_starts)
    high = np.minimum(source_starts + source_size, target_starts + target_size)
    for w in np.flatnonzero(np.all(high > low, axis=1)):
        box = list(zip(low[w], high[w], strict=True))
        into: tuple[int | slice, ...] = (
            int(w),
            slice(None),
            *(slice(int(a - s), int(b - s)) for (a, b), s in zip(box, target_starts[w])),
        )
        read: tuple[int | slice, ...] = (
            int(w),
            slice(None),
            *(slice(int(a - s), int(b - s)) for (a, b), s in zip(box, source_starts[w])),
        )
        target[into] = source[read]
    return target
