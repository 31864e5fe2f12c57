"""Reaching inside a torch model: its layers, one layer's activation with the graph kept, and a default layer.

Gradient explanations need the activation of an inner layer while gradients still flow through it. Two kinds of
torch model reach this package:

- plain ``torch.nn.Module`` networks (MONAI bundles rebuilt from ``network_def``, freshly built networks): a
  forward hook on the named layer captures its output;
- TorchScript ``ScriptModule`` files (``torch.jit.load``): forward hooks do not exist there ("register_forward_hook
  is not supported on ScriptModules"), so the forward pass is split into a *chain* of the module's named children,
  expanding nested ``Sequential`` containers, and run step by step. That is only valid when the scripted forward
  really is such a chain; it is checked numerically once per module (the chain must reproduce ``module(x)``) and a
  :class:`~MedAIExtension.errors.ModelError` says which methods still apply when it is not.

Layer names are the dotted names of ``named_modules()`` (``"features.block4"``, ``"model.1.submodule.2"``).
"""

from __future__ import annotations

import contextlib
import difflib
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from MedAIExtension.errors import InputError, ModelError
from MedAIExtension.models.devices import Device, parse_device

if TYPE_CHECKING:
    import torch

__all__ = [
    "NON_GRADIENT_METHODS_HINT",
    "as_torch_module",
    "conv_layer_names",
    "default_target_layer",
    "forward_with_activation",
    "is_script_module",
    "layer_names",
    "prepared_module",
    "to_input_tensor",
    "torch_device",
    "type_name",
]

#: What to tell a user whose model cannot give gradients or layer activations.
NON_GRADIENT_METHODS_HINT = (
    "Occlusion sensitivity and uncertainty (test-time augmentation) work with any model, ONNX included"
)

_CONV_TYPES = frozenset(
    {"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "LazyConv3d"}
)
_SEQUENTIAL_TYPES = frozenset({"Sequential"})
#: Modules whose chain was already checked against ``module(x)``: module -> True (reproduces) / False.
_CHAIN_CHECKED: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def type_name(module: object) -> str:
    """The Python class name of a module, also for ScriptModules (``original_name``)."""
    name = getattr(module, "original_name", None)
    return str(name) if name else type(module).__name__


def is_script_module(module: object) -> bool:
    """Whether ``module`` is a TorchScript module (scripted or traced), which has no forward hooks."""
    import torch

    return isinstance(module, torch.jit.ScriptModule)


def as_torch_module(model: object) -> torch.nn.Module:
    """The torch module behind ``model`` (an ``nn.Module``, a ScriptModule or a loaded ``TorchBackend``).

    Raises:
        ModelError: ``model`` is not a torch model (e.g. an ONNX Runtime backend), naming the methods that apply.
    """
    import torch

    module = getattr(model, "module", model)
    if isinstance(module, torch.nn.Module):
        return module
    provider = getattr(model, "provider", type(model).__name__)
    raise ModelError(
        f"Grad-CAM, Grad-CAM++ and integrated gradients need the model's gradients, which {provider} does not "
        "give (they need a torch, TorchScript or MONAI bundle model). "
        f"{NON_GRADIENT_METHODS_HINT}: choose --method occlusion or --method uncertainty, or use the model's "
        "TorchScript/MONAI bundle version."
    )


def torch_device(device: str | Device | None = None, module: torch.nn.Module | None = None) -> torch.device:
    """The ``torch.device`` for ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when torch sees a GPU).

    None means where ``module``'s parameters already are (the CPU for a module without parameters).
    """
    import torch

    if device is None:
        parameter = next(module.parameters(), None) if module is not None else None
        return parameter.device if parameter is not None else torch.device("cpu")
    choice = parse_device(device)
    if choice == Device.CUDA and not torch.cuda.is_available():
        raise ModelError("CUDA was requested but torch sees no GPU here. Use --device cpu or --device auto.")
    use_cuda = choice != Device.CPU and torch.cuda.is_available()
    return torch.device("cuda" if use_cuda else "cpu")


@contextlib.contextmanager
def prepared_module(module: torch.nn.Module, device: str | Device | None = None) -> Iterator[torch.device]:
    """Put ``module`` in eval mode with deterministic kernels (and on ``device``); restore its train flags after.

    Yields the ``torch.device`` used. ``device=None`` keeps the module where it is; otherwise it is moved there in
    place (like :class:`~MedAIExtension.models.backends.TorchBackend`). Parameter gradients are never accumulated
    by the methods that use this context.
    """
    import torch

    target = torch_device(device, module)
    flags = [(m, m.training) for m in module.modules()]
    cudnn_deterministic = torch.backends.cudnn.deterministic
    cudnn_benchmark = torch.backends.cudnn.benchmark
    if device is not None:
        first = next(iter(module.parameters()), None)
        if first is None or first.device != target:  # .to() on a deep-copied ScriptModule warns about .grad
            module.to(target)
    module.eval()
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        with torch.enable_grad():
            yield target
    finally:
        torch.backends.cudnn.deterministic = cudnn_deterministic
        torch.backends.cudnn.benchmark = cudnn_benchmark
        for sub, flag in flags:
            sub.training = flag


def to_input_tensor(x: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A float32 tensor ``(1, C, *S)`` on ``device`` from a numpy array or tensor; InputError for other shapes."""
    import torch

    tensor = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x)
    if tensor.ndim < 3 or tensor.shape[0] != 1:
        raise InputError(
            f"Explanations take one network input of shape (1, C, *spatial); got {tuple(tensor.shape)}. "
            "Pass a single patch with a batch axis of 1."
        )
    return tensor.detach().to(device=device, dtype=torch.float32)


def _first_output(output: Any) -> Any:
    if isinstance(output, (tuple, list)):
        return output[0]
    if isinstance(output, dict):
        return next(iter(output.values()))
    return output


# ---------------------------------------------------------------------------------------------------- chains


def _chain(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The forward pass of a ScriptModule as ``[(dotted name, child)]``: children in order, Sequentials expanded."""

    def expand(prefix: str, parent: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        steps: list[tuple[str, torch.nn.Module]] = []
        for name, child in parent.named_children():
            full = f"{prefix}{name}"
            if type_name(child) in _SEQUENTIAL_TYPES and any(True for _ in child.children()):
                steps.extend(expand(f"{full}.", child))
            else:
                steps.append((full, child))
        return steps

    return expand("", module)


def _chain_layer_names(steps: list[tuple[str, torch.nn.Module]]) -> list[str]:
    """Every name whose output a chain exposes: each step and each expanded Sequential (output of its last step)."""
    names: list[str] = []
    for name, _ in steps:
        parts = name.split(".")
        for depth in range(1, len(parts)):
            prefix = ".".join(parts[:depth])
            if prefix not in names:
                names.append(prefix)
        names.append(name)
    return names


def _last_step_of(steps: list[tuple[str, torch.nn.Module]], layer: str) -> int | None:
    """Index of the chain step whose output is ``layer``'s output (the layer itself or its container's last step)."""
    found = None
    for index, (name, _) in enumerate(steps):
        if name == layer or name.startswith(f"{layer}."):
            found = index
    return found


def _run_chain(
    steps: list[tuple[str, torch.nn.Module]], x: torch.Tensor, stop_after: int | None = None
) -> tuple[Any, Any]:
    activation = None
    out = x
    for index, (_, child) in enumerate(steps):
        out = child(out)
        if index == stop_after:
            activation = out
    return activation, out


def _check_chain(module: torch.nn.Module, steps: list[tuple[str, torch.nn.Module]], x: torch.Tensor) -> None:
    import torch

    verdict = _CHAIN_CHECKED.get(module)
    if verdict is None:
        verdict = False
        if steps:
            try:
                with torch.no_grad():
                    _, chained = _run_chain(steps, x)
                    direct = _first_output(module(x))
                if isinstance(chained, torch.Tensor) and chained.shape == direct.shape:
                    scale = float(direct.abs().max()) + 1e-6
                    verdict = bool(torch.allclose(chained, direct, rtol=1e-4, atol=1e-5 * scale))
            except Exception:  # noqa: BLE001 - any failure means the forward is not a plain chain
                verdict = False
        _CHAIN_CHECKED[module] = verdict
    if not verdict:
        raise ModelError(
            "Grad-CAM cannot reach the layers of this TorchScript model: its forward pass is not a chain of its "
            "named layers (TorchScript has no forward hooks, so MedAI runs the layers one by one and that did not "
            "reproduce the model's output). Grad-CAM needs a TorchScript model whose forward is a chain of layers "
            "(e.g. exported from nn.Sequential) or the MONAI bundle / plain torch version of the model. "
            f"{NON_GRADIENT_METHODS_HINT}; integrated gradients also works."
        )


# ---------------------------------------------------------------------------------------------------- layers


def layer_names(module: torch.nn.Module) -> list[str]:
    """Dotted names of the layers whose output can be explained, in definition order.

    Plain modules: every submodule. ScriptModules: the steps of the forward chain and the Sequential containers
    they expand (layers hidden inside other blocks cannot be reached there).
    """
    if is_script_module(module):
        return _chain_layer_names(_chain(module))
    return [name for name, _ in module.named_modules() if name]


def _modules_by_name(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: sub for name, sub in module.named_modules() if name}


def _is_conv(module: torch.nn.Module) -> bool:
    return type_name(module) in _CONV_TYPES


def conv_layer_names(module: torch.nn.Module) -> list[str]:
    """Reachable layers that are convolutions or conv blocks (modules with a convolution as a direct child)."""
    reachable = set(layer_names(module))
    names = []
    for name, sub in _modules_by_name(module).items():
        if name in reachable and (_is_conv(sub) or any(_is_conv(c) for c in sub.children())):
            names.append(name)
    return names


def _unknown_layer(module: torch.nn.Module, layer: str) -> ModelError:
    names = layer_names(module)
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
    convs = conv_layer_names(module)
    shown = ", ".join(convs[-12:]) + (f" (and {len(convs) - 12} earlier)" if len(convs) > 12 else "")
    where = " reachable in this TorchScript model" if is_script_module(module) else ""
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ModelError(
        f"The model has no layer {layer!r}{where}.{hint} Convolution layers/blocks available: {shown or 'none'}. "
        "Pick one of them as the target layer (Grad-CAM usually looks at the last convolution block)."
    )


def forward_with_activation(module: torch.nn.Module, x: torch.Tensor, layer: str) -> tuple[Any, Any]:
    """Run ``module`` on tensor ``x`` and return ``(activation of layer, output)`` with the autograd graph kept.

    Args:
        module: a plain ``nn.Module`` or a ScriptModule whose forward is a chain of layers.
        x: input tensor ``(N, C, *S)`` on the module's device.
        layer: dotted layer name (see :func:`layer_names`).

    Raises:
        ModelError: unknown layer (with close names and the conv layers available), a layer that is not used or
            does not output one tensor, or a ScriptModule whose forward is not a chain.
    """
    import torch

    if is_script_module(module):
        steps = _chain(module)
        stop = _last_step_of(steps, layer)
        if stop is None:
            raise _unknown_layer(module, layer)
        _check_chain(module, steps, x)
        activation, output = _run_chain(steps, x, stop_after=stop)
        return activation, _first_output(output)

    subs = _modules_by_name(module)
    if layer not in subs:
        raise _unknown_layer(module, layer)
    captured: list[Any] = []

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        captured.append(output)

    handle = subs[layer].register_forward_hook(hook)
    try:
        output = _first_output(module(x))
    finally:
        handle.remove()
    if not captured:
        raise ModelError(
            f"Layer {layer!r} is not used when the model runs, so it has no activation to explain. "
            f"Pick a layer on the forward path, e.g. {', '.join(conv_layer_names(module)[-3:])}."
        )
    activation = captured[-1]
    if not isinstance(activation, torch.Tensor):
        raise ModelError(
            f"Layer {layer!r} outputs {type(activation).__name__}, not one tensor; Grad-CAM needs a layer with a "
            "single feature-map output. Pick a convolution layer or block."
        )
    return activation, output


def _monai_unet_decoder_layer(module: torch.nn.Module) -> str | None:
    """The decoder layer at half resolution of a MONAI ``UNet``, else None (see :func:`default_target_layer`)."""
    if type_name(module) != "UNet":
        return None
    subs = _modules_by_name(module)
    skip = subs.get("model.1")
    inner = subs.get("model.1.submodule")
    if skip is None or type_name(skip) != "SkipConnection" or inner is None:
        return None
    if is_script_module(module):
        return "model.1" if "model.1" in layer_names(module) else None
    children = [name for name, _ in inner.named_children()]
    if type_name(inner) != "Sequential" or len(children) < 3:
        return None
    return f"model.1.submodule.{children[-1]}"


def default_target_layer(module: torch.nn.Module, x: np.ndarray | torch.Tensor) -> str:
    """The layer Grad-CAM looks at when the catalogue names none.

    - MONAI ``UNet``: ``model.1.submodule.<last>``, the decoder's up-sampling block at half the input resolution
      (for the shipped lung U-Net with channels 16-32-64-128: 16 feature maps at 1/2 resolution, 48³ for a 96³
      patch). It is the last layer that has passed through the whole encoder-decoder (so it carries the
      semantic evidence for every label) before the skip connection concatenates the shallow, edge-like
      full-detail encoder features and before the output convolution, whose "activation" would just be the
      logits themselves. The coarser decoder levels (1/4, 1/8) are blurrier after up-sampling. In a TorchScript
      UNet only the top-level blocks are reachable, so it is ``model.1``: the same decoder output at 1/2
      resolution concatenated with the first encoder block's features.
    - Any other model (found by one probe forward pass on ``x``): the last *conv block* (a module with a
      convolution as a direct child, or a bare convolution) whose output is still spatial (more than one voxel).
      For classifiers that is the last block before global pooling (``features.block4`` for the shipped
      classifier); for dense models only blocks at a reduced resolution are considered when there are any.

    Args:
        module: the torch module (plain or ScriptModule).
        x: an example input ``(1, C, *S)`` (numpy or tensor) for the probe pass.
    """
    import torch

    unet = _monai_unet_decoder_layer(module)
    if unet is not None:
        return unet
    candidates = set(conv_layer_names(module))
    if not candidates:
        raise ModelError(
            "The model has no convolution layer that Grad-CAM could look at. "
            f"{NON_GRADIENT_METHODS_HINT}; integrated gradients also works."
        )
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    tensor = to_input_tensor(x, device)
    spatial_in = tuple(tensor.shape[2:])
    order: list[tuple[str, tuple[int, ...]]] = []
    with torch.no_grad():
        if is_script_module(module):
            steps = _chain(module)
            _check_chain(module, steps, tensor)
            out = tensor
            for index, (_, child) in enumerate(steps):
                out = child(out)
                # The step and every container it closes complete now.
                ending = [n for n in _chain_layer_names(steps) if _last_step_of(steps, n) == index]
                for name in sorted(ending, key=lambda n: -n.count(".")):
                    order.append((name, tuple(out.shape[2:]) if isinstance(out, torch.Tensor) else ()))
            output = _first_output(out)
        else:
            handles = []
            for name, sub in _modules_by_name(module).items():
                if name in candidates:
                    handles.append(
                        sub.register_forward_hook(
                            lambda _m, _i, o, name=name: order.append(
                                (name, tuple(o.shape[2:]) if isinstance(o, torch.Tensor) else ())
                            )
                        )
                    )
            try:
                output = _first_output(module(tensor))
            finally:
                for handle in handles:
                    handle.remove()
    spatial = [(n, s) for n, s in order if n in candidates and len(s) == len(spatial_in) and max(s, default=1) > 1]
    dense = tuple(output.shape[2:]) == spatial_in
    if dense:
        reduced = [(n, s) for n, s in spatial if any(a < b for a, b in zip(s, spatial_in))]
        spatial = reduced or spatial
    if not spatial:
        raise ModelError(
            "No convolution block of this model has a spatial output, so Grad-CAM has nothing to map. "
            f"{NON_GRADIENT_METHODS_HINT}; integrated gradients also works."
        )
    return spatial[-1][0]
