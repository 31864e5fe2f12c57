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
that the decomposed forward pass equals the module's own (``base_output()`` against ``module(x)``).

Where the time goes on a small input (the shipped classifier's 32³ patch, 8³ windows): the cones of the deep
layers cover most of their 8³ grid, so the work is the convolutions on the exact boxes, plus per-batch overhead.
Hence: windows are batched by the exact size of their boxes (a batch shares one box size per layer, so mixing a
border window with a central one would compute the central one's larger boxes for both), a convolution and the
batch normalisation after it are folded into one, activations stay channels-last (max pooling is several times
faster so), each layer's input is one ``index_select`` from the cached baseline rows and the batch's new values,
and the baseline part of the last box comes from a summed-volume table.
"""

from __future__ import annotations

import itertools
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


#: Fixed cost of running one layer on a batch (operations, gathers), in multiply-adds: a batch of windows is
#: merged with the next size class while enlarging the boxes costs less than this per layer.
_BATCH_OVERHEAD_PER_LAYER = 5e6


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


@dataclass(frozen=True)
class _FusedConv:
    """A convolution with the batch normalisation that follows it folded into its weights and bias."""

    weight: torch.Tensor
    bias: torch.Tensor
    groups: int


def _fuse(layers: Sequence[ChainLayer]) -> list[ChainLayer]:
    """``layers`` with every convolution + following ``BatchNorm`` (eval) folded into one convolution and ReLU
    layers applied as ``torch.relu`` (fewer, cheaper operations per window; the same function up to float
    rounding, which the caller's check against the module's own output covers)."""
    import torch

    fused: list[ChainLayer] = []
    for layer in layers:
        name = type_name(layer.module) if layer.kind == "pointwise" else ""
        previous = fused[-1] if fused else None
        folds = name.startswith("BatchNorm") and getattr(layer.module, "running_var", None) is not None
        if folds and previous is not None and previous.kind == "conv":
            conv, norm = previous.module, layer.module
            weight = conv.weight.detach().double()
            bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(weight.shape[0]).double()
            scale = (norm.running_var.double() + float(norm.eps)).rsqrt()
            if norm.weight is not None:
                scale = scale * norm.weight.double()
            shift = -norm.running_mean.double() * scale + (norm.bias.double() if norm.bias is not None else 0.0)
            folded = _FusedConv(
                (weight * scale.view(-1, *(1,) * (weight.ndim - 1))).to(conv.weight.dtype),
                (bias * scale + shift).to(conv.weight.dtype),
                int(conv.groups),
            )
            fused[-1] = ChainLayer(
                "conv", folded, previous.kernel, previous.stride, previous.padding, previous.dilation
            )
        elif name == "ReLU":
            fused.append(ChainLayer("pointwise", torch.relu, layer.kernel, layer.stride, layer.padding, layer.dilation))
        else:
            fused.append(layer)
    return fused


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
    if name.startswith("BatchNorm") and getattr(module, "running_var", None) is None:
        raise NotAChainError(f"{name} without running statistics normalises every batch by its own statistics")
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

    Windows are run in batches that share one box size per layer; :meth:`order` sorts windows so that neighbours
    in the order have the same exact box sizes and :meth:`outputs` groups them so that little work is spent on
    boxes enlarged to a common size. Activations of a batch are kept channels-last (fast pooling on CPU), and each
    layer's input box is assembled in one gather from the cached baseline activations and the previous layer's
    new values.

    Args:
        layers: the local layers (from :func:`decompose_chain`).
        tail: modules applied to the globally pooled features ``(N, C, 1, ...)``.
        x: the unoccluded input ``(1, C, *S)`` as a torch tensor on the module's device.
    """

    def __init__(self, layers: Sequence[ChainLayer], tail: Sequence[torch.nn.Module], x: torch.Tensor) -> None:
        import torch

        self.tail = list(tail)
        self.x = x
        with torch.inference_mode():
            self.layers = _fuse(layers)
            activations = [x]
            padded = []
            for layer in self.layers:
                padded.append(layer.pad(activations[-1]))
                activations.append(layer.apply(padded[-1]))
            #: per layer, its padded baseline input as rows (padded voxels × channels); None for point-wise layers
            self.sources = [None if layer.kind == "pointwise" else _Source(p) for layer, p in zip(self.layers, padded)]
            self.last = activations[-1]
            dims = tuple(range(2, self.last.ndim))
            self.pooled = self.last.double().sum(dim=dims, keepdim=True) / float(np.prod(self.last.shape[2:]))
            self.integral = _integral(self.last[0].double())
        #: spatial shape of every layer's padded input and of its output
        self.padded_shapes = [tuple(int(s) for s in p.shape[2:]) for p in padded]
        self.shapes = [tuple(int(s) for s in a.shape[2:]) for a in activations[1:]]
        self.channels = [int(a.shape[1]) for a in activations[1:]]
        self.count = float(np.prod(self.shapes[-1]))
        inputs = [int(x.shape[1]), *self.channels[:-1]]
        #: multiply-adds per output voxel of every layer (for grouping windows into batches)
        self.unit_costs = np.asarray(
            [
                c_out
                * (c_in // int(getattr(layer.module, "groups", 1)) if layer.kind == "conv" else 1)
                * float(np.prod(layer.kernel))
                for layer, c_in, c_out in zip(self.layers, inputs, self.channels, strict=True)
            ]
        )
        #: cost of one batch beyond its windows' multiply-adds (a few operations per layer), same units
        self.batch_overhead = _BATCH_OVERHEAD_PER_LAYER * len(self.layers)

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
        boxes = _uniform(self._exact_boxes(window[None]), self.shapes)
        full = sum(c * float(np.prod(shape)) for c, shape in zip(self.channels, self.shapes, strict=True))
        part = sum(c * float(np.prod(b[0, :, 1] - b[0, :, 0])) for c, b in zip(self.channels, boxes, strict=True))
        return full / max(part, 1.0)

    def _exact_boxes(self, windows: np.ndarray) -> list[np.ndarray]:
        """Per layer, the output box ``(W, D, 2)`` that occluding each window can change."""
        current = windows
        boxes = []
        for layer, shape in zip(self.layers, self.shapes, strict=True):
            current = layer.output_box(current[..., 0], current[..., 1], shape)
            boxes.append(current)
        return boxes

    @staticmethod
    def _sizes(boxes: Sequence[np.ndarray]) -> np.ndarray:
        """The sizes ``(W, layers, D)`` of per-layer ``boxes``, deepest layer first (at least 1 voxel)."""
        return np.stack([np.maximum(b[..., 1] - b[..., 0], 1) for b in boxes[::-1]], axis=1)

    def order(self, windows: np.ndarray) -> np.ndarray:
        """A permutation of ``windows`` that puts windows with the same box sizes at every layer next to each other
        (deepest, most expensive layers as the first sort keys)."""
        if not len(windows):
            return np.zeros(0, dtype=np.int64)
        sizes = self._sizes(self._exact_boxes(windows)).reshape(len(windows), -1)
        return np.lexsort(sizes.T[::-1])

    def _cost(self, sizes: np.ndarray) -> float:
        """Multiply-adds of one window with box sizes ``(layers, D)`` (deepest first)."""
        return float(np.dot(self.unit_costs[::-1], np.prod(sizes, axis=1)))

    def plan(self, sizes: np.ndarray, max_batch: int) -> list[np.ndarray]:
        """Batches (index arrays into the windows) of at most ``max_batch`` windows each, given the windows' exact
        box sizes ``(W, layers, D)`` (:meth:`_sizes`).

        Windows of one size class (the same exact box sizes at every layer) are batched together; consecutive
        classes (in :meth:`order`) are merged while enlarging every box to the batch's common size costs less than
        running another batch, and a lone window always joins its neighbours (torch runs a batch of one through
        its slow reference convolution).
        """
        classes, inverse = np.unique(sizes.reshape(len(sizes), -1), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        batches: list[np.ndarray] = []
        members: list[np.ndarray] = []
        common = np.zeros(0)
        count = 0
        for index, row in enumerate(classes):
            row = row.reshape(sizes.shape[1:])
            group = np.flatnonzero(inverse == index)
            for chunk in np.array_split(group, -(-len(group) // max_batch)):
                if members and count + len(chunk) <= max_batch:
                    merged = np.maximum(common, row)
                    separate = self._cost(common) * count + self._cost(row) * len(chunk) + self.batch_overhead
                    if count == 1 or len(chunk) == 1 or self._cost(merged) * (count + len(chunk)) <= separate:
                        members.append(chunk)
                        common, count = merged, count + len(chunk)
                        continue
                if members:
                    batches.append(np.concatenate(members))
                members, common, count = [chunk], row, len(chunk)
        if members:
            batches.append(np.concatenate(members))
        return batches

    def outputs(self, windows: np.ndarray, fill: torch.Tensor) -> torch.Tensor:
        """Network outputs ``(W, L)`` with each window occluded.

        Args:
            windows: ``(W, D, 2)`` integer ``[start, stop)`` of each occluded box on the input grid (all the same
                size).
            fill: the occluded box's values: a scalar tensor, or one box per window ``(W, C, *box)``.
        """
        import torch

        with torch.inference_mode():
            results = []
            exact = self._exact_boxes(windows)
            batches = self.plan(self._sizes(exact), len(windows))
            for batch in batches:
                batch_fill = fill[torch.from_numpy(batch).to(fill.device)] if fill.ndim else fill
                results.append(self._batch(windows[batch], [box[batch] for box in exact], batch_fill))
            out = torch.cat(results)
            inverse = np.empty(len(windows), dtype=np.int64)
            inverse[np.concatenate(batches)] = np.arange(len(windows))
            return out[torch.from_numpy(inverse).to(out.device)]

    def _batch(self, windows: np.ndarray, exact: Sequence[np.ndarray], fill: torch.Tensor) -> torch.Tensor:
        """Outputs for one batch of windows with their exact per-layer boxes."""
        import torch

        boxes = _uniform(exact, self.shapes)
        sizes = tuple(int(v) for v in windows[0, :, 1] - windows[0, :, 0])
        patch = torch.empty((len(windows), self.x.shape[1], *sizes), dtype=self.x.dtype, device=self.x.device)
        patch[:] = fill
        previous = windows
        for layer, source, box in zip(self.layers, self.sources, boxes, strict=True):
            if source is not None:
                spans = layer.input_span(box)
                lengths = tuple(int(v) for v in spans[0, :, 1] - spans[0, :, 0])
                # baseline inputs of the box, with the previous layer's new values in place
                patch = source.assemble(patch, previous[..., 0] + np.asarray(layer.padding), spans[..., 0], lengths)
            patch = layer.apply(patch)
            previous = box
        dims = tuple(range(2, patch.ndim))
        delta = patch.sum(dim=dims, dtype=torch.float64) - _box_sums(self.integral, previous)
        return self._head(self.pooled + delta.view(*delta.shape, *(1,) * len(dims)) / self.count)


def _uniform(boxes: Sequence[np.ndarray], shapes: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """``boxes`` enlarged to one size per layer (the largest, at least 1), kept inside each layer's grid."""
    uniform = []
    for box, shape in zip(boxes, shapes, strict=True):
        size = np.asarray(shape)
        lengths = np.minimum(np.maximum((box[..., 1] - box[..., 0]).max(axis=0), 1), size)
        start = np.minimum(box[..., 0], size - lengths)
        uniform.append(np.stack([start, start + lengths], axis=-1))
    return uniform


class _Source:
    """A layer's padded baseline input as rows (voxels × channels, channels last), with room after them for the new
    values of a batch, so that a box of the layer's input is one ``index_select``."""

    def __init__(self, padded: torch.Tensor) -> None:
        self.grid = tuple(int(v) for v in padded.shape[2:])
        self.channels = int(padded.shape[1])
        self.count = int(np.prod(self.grid))
        self.buffer = padded[0].movedim(0, -1).reshape(self.count, self.channels).clone()

    def assemble(
        self, patch: torch.Tensor, patch_starts: np.ndarray, starts: np.ndarray, lengths: Sequence[int]
    ) -> torch.Tensor:
        """Boxes ``(W, C, *lengths)`` (channels-last memory) of the padded input starting at ``starts`` ``(W, D)``:
        the baseline, except where ``patch`` ``(W, C, *P)``, starting at ``patch_starts``, covers them."""
        import torch

        n, d = starts.shape
        patch_sizes = tuple(int(v) for v in patch.shape[2:])
        needed = self.count + n * int(np.prod(patch_sizes))
        if len(self.buffer) < needed:
            grown = self.buffer.new_empty((needed, self.channels))
            grown[: self.count] = self.buffer[: self.count]
            self.buffer = grown
        self.buffer[self.count : needed].view(n, *patch_sizes, self.channels).copy_(patch.movedim(1, -1))
        # flat row of every voxel of the boxes: the baseline's, or the new value's where the patch covers it
        # (int32 and per-axis terms: only the last step of each builds a full-size array)
        one = (n,) + (1,) * d
        base = np.zeros(one, dtype=np.int32)
        new = np.arange(n, dtype=np.int32).reshape(one)
        inside = np.ones(one, dtype=bool)
        for axis in range(d):
            shape = list(one)
            shape[axis + 1] = lengths[axis]
            position = (starts[:, axis, None] + np.arange(lengths[axis])).reshape(shape).astype(np.int32)
            offset = position - patch_starts[:, axis].reshape(one).astype(np.int32)
            covered = (offset >= 0) & (offset < patch_sizes[axis])
            offset = np.minimum(np.maximum(offset, 0), patch_sizes[axis] - 1)
            if axis == d - 1:
                offset += self.count
            base = base * self.grid[axis] + position
            new = new * patch_sizes[axis] + offset
            inside = inside & covered
        index = torch.from_numpy(np.where(inside, new, base).reshape(-1)).to(self.buffer.device)
        picked = self.buffer.index_select(0, index)
        return picked.view(n, *lengths, self.channels).movedim(-1, 1)


def _integral(tensor: torch.Tensor) -> torch.Tensor:
    """Summed-volume table of ``tensor`` ``(C, *S)``: ``(C, *(S + 1))`` with a zero first plane on every axis."""
    import torch.nn.functional as F

    table = tensor
    for axis in range(1, tensor.ndim):
        table = table.cumsum(axis)
    return F.pad(table, [1, 0] * (tensor.ndim - 1))


def _box_sums(integral: torch.Tensor, boxes: np.ndarray) -> torch.Tensor:
    """Per-channel sums ``(W, C)`` of the boxes ``(W, D, 2)`` from a summed-volume table (inclusion-exclusion)."""
    import torch

    d = boxes.shape[1]
    corners = np.asarray(list(itertools.product((0, 1), repeat=d)))  # (2^D, D): 0 = start, 1 = stop
    points = np.where(corners[:, None, :] == 1, boxes[None, :, :, 1], boxes[None, :, :, 0])  # (2^D, W, D)
    flat = np.ravel_multi_index(tuple(np.moveaxis(points, -1, 0)), tuple(integral.shape[1:]))
    signs = np.where((d - corners.sum(axis=1)) % 2, -1.0, 1.0)
    values = integral.reshape(integral.shape[0], -1)[:, torch.from_numpy(flat.reshape(-1)).to(integral.device)]
    weighted = values.view(integral.shape[0], *flat.shape) * torch.from_numpy(signs).to(values).view(1, -1, 1)
    return weighted.sum(dim=1).T
