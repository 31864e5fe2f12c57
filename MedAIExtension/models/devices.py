"""Choosing where a model runs: CUDA when it really works, otherwise the CPU."""

from __future__ import annotations

import functools
import os
from enum import StrEnum

from MedAIExtension.errors import ModelError

__all__ = ["Device", "available_devices", "cpu_threads", "cuda_available", "onnx_providers_for", "parse_device"]


class Device(StrEnum):
    """Where to run: ``auto`` picks CUDA when it works, else CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


def parse_device(value: str | Device) -> Device:
    """Accept ``"auto"``, ``"cpu"``, ``"cuda"`` (any case) or a :class:`Device`."""
    try:
        return Device(str(value.value if isinstance(value, Device) else value).lower())
    except ValueError:
        raise ModelError(f"Unknown device {value!r}; use auto, cpu or cuda.") from None


def cpu_threads() -> int:
    """Threads for CPU inference: ``MEDAI_NUM_THREADS`` or the CPUs this process may use."""
    env = os.environ.get("MEDAI_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@functools.lru_cache(maxsize=1)
def _onnx_cuda() -> bool:
    """Whether ONNX Runtime's CUDA provider really loads (a tiny session is created to find out)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        from onnx import TensorProto, helper

        node = helper.make_node("Identity", ["x"], ["y"])
        graph = helper.make_graph(
            [node],
            "probe",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        options = ort.SessionOptions()
        options.log_severity_level = 4
        ort.set_default_logger_severity(4)  # a missing CUDA library is an answer here, not an error to print
        try:
            session = ort.InferenceSession(
                model.SerializeToString(), options, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
            )
        finally:
            ort.set_default_logger_severity(3)
        return session.get_providers()[0] == "CUDAExecutionProvider"
    except Exception:  # noqa: BLE001 - any failure means CUDA is not usable
        return False


def cuda_available(backend: str = "onnx") -> bool:
    """Whether CUDA really works for ``backend`` (``onnx`` → ONNX Runtime; else torch)."""
    return _onnx_cuda() if backend == "onnx" else _torch_cuda()


def available_devices(backend: str = "onnx") -> list[str]:
    """Device choices to offer the user, e.g. ``["auto", "cpu"]`` or ``["auto", "cpu", "cuda"]``."""
    devices = [Device.AUTO.value, Device.CPU.value]
    if cuda_available(backend):
        devices.append(Device.CUDA.value)
    return devices


def onnx_providers_for(device: Device | str) -> list[str]:
    """ONNX Runtime providers to try, best first, for ``device``; raises if CUDA is asked for but unusable."""
    device = parse_device(device)
    if device == Device.CPU:
        return ["CPUExecutionProvider"]
    if cuda_available("onnx"):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == Device.CUDA:
        raise ModelError(
            "CUDA was requested but ONNX Runtime cannot use a GPU here (no CUDA device or libraries). "
            "Use --device cpu or --device auto."
        )
    return ["CPUExecutionProvider"]
