"""Small real models for tests (built on the fly, no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["nodule_patch", "tiny_onnx"]


def tiny_onnx(
    path: Path, out_channels: int = 3, weights: list[float] | None = None, bias: list[float] | None = None
) -> Path:
    """A real 1x1x1-convolution segmentation model (N,1,D,H,W) -> (N,C,D,H,W): class c scores w_c * x + b_c."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.asarray(weights if weights is not None else np.linspace(-1, 1, out_channels), dtype=np.float32)
    weight = numpy_helper.from_array(w.reshape(out_channels, 1, 1, 1, 1), "w")
    b = np.asarray(bias if bias is not None else np.zeros(out_channels), dtype=np.float32)
    bias_tensor = numpy_helper.from_array(b, "b")
    node = helper.make_node("Conv", ["image", "w", "b"], ["logits"], kernel_shape=[1, 1, 1])
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 1, "d", "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", out_channels, "d", "h", "w"])],
        initializer=[weight, bias_tensor],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def nodule_patch(size: int = 32, center: tuple[float, ...] = (15.5, 14.0, 17.0), radius: float = 5.0) -> np.ndarray:
    """A solid nodule (40 HU) in lung parenchyma (-850 HU) with noise, scaled -1000..400 HU → 0..1, (1, 1, S³)."""
    grid = np.indices((size,) * 3, dtype=np.float32)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, center)))
    hu = -850 + 890 / (1 + np.exp((distance - radius) / 0.6))
    hu += np.random.default_rng(7).normal(0, 15, hu.shape)
    return np.clip((hu + 1000) / 1400, 0, 1).astype(np.float32)[None, None]
