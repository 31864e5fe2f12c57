"""The ``explain`` job of the worker process: a real child process runs a real (tiny ONNX) classifier through the
explanation pipeline and reports progress, the result folder, or a clear error with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from MedAIExtension.explain.request import ExplainRequest, Roi
from MedAIExtension.io.image import Image
from MedAIExtension.io.volume_files import read_volume_file, write_volume_file
from MedAIExtension.models.catalog import sha256_of
from MedAIExtension.runner import WorkerEvent, WorkerProcess, explanation_worker_args

pytest.importorskip("MedAIExtension.explain.pipeline", reason="the explanation pipeline is not there yet")

MODEL = "tiny-blob-classifier"
BLOB = (slice(10, 16), slice(12, 18), slice(14, 20))  # [k, j, i] voxels of the bright object


def _tiny_classifier(folder: Path) -> Path:
    """A real ONNX classifier (N,1,D,H,W) -> (N,2): class 0 scores the mean brightness, class 1 its negative,
    described by a sidecar catalogue entry (16³ patch of 1 mm, clip-scale -1000..400 HU)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    weight = numpy_helper.from_array(np.array([1.0, -1.0], np.float32).reshape(2, 1, 1, 1, 1), "w")
    bias = numpy_helper.from_array(np.zeros(2, np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["maps"], kernel_shape=[1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["maps"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "blob",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 1, 16, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 2])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = folder / f"{MODEL}.onnx"
    onnx.save(model, str(path))
    entry = {
        "name": MODEL,
        "title": "Tiny blob classifier (test)",
        "version": "1",
        "task": "classification",
        "backend": "onnx",
        "files": [{"path": path.name, "sha256": sha256_of(path), "role": "model"}],
        "input": {
            "modality": "CT",
            "spacing": [1.0, 1.0, 1.0],
            "orientation": "LPS",
            "axis_order": "kji",
            "normalization": {
                "type": "clip_scale",
                "a_min": -1000.0,
                "a_max": 400.0,
                "b_min": 0.0,
                "b_max": 1.0,
                "clip": True,
            },
            "patch_size": [16, 16, 16],
            "channels": 1,
        },
        "labels": [
            {"value": 1, "name": "Bright", "color": [1.0, 0.8, 0.2]},
            {"value": 2, "name": "Dark", "color": [0.2, 0.4, 1.0]},
        ],
    }
    path.with_suffix(".json").write_text(json.dumps(entry), encoding="utf-8")
    return folder


def _input(folder: Path) -> tuple[Path, Image]:
    """A 24×28×32 "CT" of 1 mm voxels (LPS axial) with one bright block, written as NRRD."""
    array = np.full((24, 28, 32), -800, dtype=np.int16)
    array[BLOB] = 300
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = (16.0, 20.0, -12.0)
    image = Image(array, affine, modality="CT")
    return write_volume_file(image, folder / "ct.nrrd"), image


def _run(args: list[str], timeout: float = 300) -> tuple[int, list[WorkerEvent]]:
    process = WorkerProcess(args)
    process.start()
    code = process.wait(timeout=timeout)
    return code, process.poll()


def test_explain_job_reports_progress_and_the_result_folder(tmp_path: Path) -> None:
    models = _tiny_classifier(tmp_path / "models")
    path, image = _input(tmp_path)
    centre = (image.ijk_to_ras @ np.array([16.5, 14.5, 12.5, 1.0]))[:3]  # the blob's centre (i, j, k)
    out = tmp_path / "out"
    request = ExplainRequest(
        path, MODEL, "occlusion", out, target="1", roi=Roi(tuple(centre), (16.0, 16.0, 16.0)),
        mask_size=4, stride=2, sanity=False, models_dirs=(str(models),), device="cpu",
    )  # fmt: skip
    code, events = _run(explanation_worker_args(request))
    errors = [event for event in events if event.kind == "error"]
    assert code == 0 and not errors, [e.message for e in errors] or [e.message for e in events[-5:]]
    fractions = [event.fraction for event in events if event.kind == "progress"]
    assert len(fractions) >= 2 and fractions == sorted(fractions) and fractions[-1] <= 1.0
    result = events[-1]
    assert result.kind == "result" and result.data["output"] == str(out)
    document = json.loads(Path(result.data["document"]).read_text(encoding="utf-8"))
    assert document["method"] == "occlusion" and document["target"]["name"] == "Bright"
    heat = read_volume_file(result.data["map_nrrd"])
    assert heat.shape == image.shape
    np.testing.assert_allclose(heat.ijk_to_ras, image.ijk_to_ras, atol=1e-5)
    blob = np.zeros(image.shape, dtype=bool)
    blob[BLOB] = True
    assert heat.array[blob].mean() > heat.array[~blob].mean(), "occluding the bright block must matter most"
    assert not list(out.glob(".medai-staging-*")), "the staging folder was left behind"


def test_explain_job_refuses_a_bad_roi_before_any_work(tmp_path: Path) -> None:
    request = ExplainRequest(tmp_path / "ct.nrrd", MODEL, "occlusion", tmp_path / "out")
    args = explanation_worker_args(request)
    args += ["--roi", "0", "0", "0", "10", "-5", "10"]  # a negative size
    code, events = _run(args, timeout=120)
    errors = [event for event in events if event.kind == "error"]
    assert code == 2 and len(errors) == 1 and errors[0].data["type"] == "InputError"
    assert "must be positive" in errors[0].message
    assert not (tmp_path / "out").exists() and not [event for event in events if event.kind == "result"]
