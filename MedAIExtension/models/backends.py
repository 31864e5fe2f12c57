"""Model backends behind one interface: ONNX Runtime, TorchScript and MONAI bundles (torch).

A backend maps a float32 batch ``(N, C, *spatial)`` to class scores ``(N, L, *spatial)``; the sliding-window
engine (:mod:`MedAIExtension.models.inference`) calls it window batch by window batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from MedAIExtension.errors import ModelError
from MedAIExtension.models.catalog import ModelEntry
from MedAIExtension.models.devices import Device, cpu_threads, onnx_providers_for, parse_device
from MedAIExtension.models.discovery import bundle_parser

if TYPE_CHECKING:
    import torch

__all__ = ["Backend", "OnnxBackend", "TorchBackend", "load_backend", "load_bundle_module"]


class Backend(Protocol):
    """A loaded model ready to predict."""

    #: What actually runs the model, e.g. ``"onnxruntime:CUDAExecutionProvider"`` or ``"torch:cpu"``.
    provider: str

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Class scores for a float32 batch ``(N, C, *spatial)``."""
        ...


class OnnxBackend:
    """ONNX Runtime session with full graph optimisation; CUDA provider when it really loads."""

    def __init__(self, model_path: Path, device: Device | str = Device.AUTO) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = cpu_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = onnx_providers_for(device)
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises many types for a bad file
            raise ModelError(
                f"ONNX Runtime cannot load {model_path.name}: {str(exc).splitlines()[0][:300]}. "
                "Check that the file is a valid ONNX model (opset ≤ the installed onnxruntime)."
            ) from None
        self.input_name = self.session.get_inputs()[0].name
        self.provider = f"onnxruntime:{self.session.get_providers()[0]}"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Run the session on one batch."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


class TorchBackend:
    """A torch module (TorchScript file, or a MONAI bundle network with a weights-only state dict).

    On the CPU, :meth:`predict` runs the network's inference form
    (:func:`~MedAIExtension.models.torch_inference.cpu_inference_module`: batch norms folded into convolutions,
    channels-last-3d layout), which is faster and agrees to float rounding; :attr:`module` stays the network as
    loaded, for methods that hook its layers. While any layer of :attr:`module` is in training mode (MC dropout
    switches its dropout layers on), :meth:`predict` runs :attr:`module` itself, so such switches take effect.
    """

    def __init__(self, module: torch.nn.Module, device: Device | str = Device.AUTO) -> None:
        import torch

        device = parse_device(device)
        if device == Device.CUDA and not torch.cuda.is_available():
            raise ModelError("CUDA was requested but torch sees no GPU here. Use --device cpu or --device auto.")
        use_cuda = device != Device.CPU and torch.cuda.is_available()
        self.torch_device = torch.device("cuda" if use_cuda else "cpu")
        if not use_cuda:
            torch.set_num_threads(cpu_threads())
        self.module = module.to(self.torch_device).eval()
        self.channels_last = False
        self._runner = self.module
        if not use_cuda:
            from MedAIExtension.models.torch_inference import cpu_inference_module  # lazy: imports torch

            prepared = cpu_inference_module(self.module)
            self._runner, self.channels_last = prepared.module, prepared.channels_last
        self.provider = f"torch:{self.torch_device.type}"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Run the module on one batch without autograd."""
        import torch

        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.torch_device)
            if self.channels_last and tensor.dim() == 5:
                tensor = tensor.contiguous(memory_format=torch.channels_last_3d)
            runner = self._runner
            if runner is not self.module and any(layer.training for layer in self.module.modules()):
                runner, tensor = self.module, tensor.contiguous()
            out = runner(tensor)
            if isinstance(out, (tuple, list)):
                out = out[0]
            return out.float().cpu().contiguous().numpy()


def load_bundle_module(entry: ModelEntry) -> torch.nn.Module:
    """The torch module of a MONAI-bundle entry: ``network_def`` plus weights, or a TorchScript ``models/model.ts``.

    Weights are read with ``weights_only=True``: arbitrary pickled objects are never loaded.
    """
    import torch

    bundle = entry.bundle_dir or entry.model_file.parent
    weights = entry.model_file
    if weights.suffix == ".ts":
        return torch.jit.load(str(weights), map_location="cpu")
    parser = bundle_parser(bundle)
    try:
        network = parser.get_parsed_content("network_def", instantiate=True)
    except Exception as exc:  # noqa: BLE001 - arbitrary config errors
        raise ModelError(
            f"MONAI bundle {bundle.name}: cannot build 'network_def' ({exc}). Check configs/inference.json."
        ) from None
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(
            f"MONAI bundle {bundle.name}: {weights.name} is not a weights-only checkpoint ({str(exc)[:200]}). "
            "MedAI never unpickles arbitrary objects; save the state_dict with torch.save(model.state_dict())."
        ) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"MONAI bundle {bundle.name}: weights do not fit network_def ({str(exc)[:300]}).") from None
    return network


def load_backend(entry: ModelEntry, device: Device | str = Device.AUTO, verify: bool = True) -> Backend:
    """Verify the model's files (sha256) and load it on ``device``."""
    if verify:
        entry.verify_files()
    if entry.backend == "onnx":
        return OnnxBackend(entry.model_file, device)
    if entry.backend == "torchscript":
        import torch

        try:
            module = torch.jit.load(str(entry.model_file), map_location="cpu")
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"Cannot load TorchScript file {entry.model_file.name}: {str(exc)[:300]}") from None
        return TorchBackend(module, device)
    if entry.backend == "monai_bundle":
        return TorchBackend(load_bundle_module(entry), device)
    raise ModelError(f"Model {entry.name}: unknown backend {entry.backend!r}.")
