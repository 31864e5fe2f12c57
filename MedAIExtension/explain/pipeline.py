"""One explanation end to end: image + model + method → a map on the input grid with its sanity checks.

This is the logic behind ``medai explain``, the worker's ``explain`` job and the Slicer module:
:func:`explain_image` computes (no files), :func:`explain_to_folder` also writes every output
(:mod:`MedAIExtension.explain.outputs`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from MedAIExtension.atomic import check_output_directory
from MedAIExtension.dicom.source import frame_of_reference_allows, require_single_frame_source
from MedAIExtension.errors import InputError, ModelError
from MedAIExtension.explain.gradcam import GradCamResult, grad_cam
from MedAIExtension.explain.integrated_gradients import IntegratedGradientsResult, integrated_gradients
from MedAIExtension.explain.models import ExplainModel, load_explain_model, resolve_target_label, score_target
from MedAIExtension.explain.occlusion import occlusion_sensitivity
from MedAIExtension.explain.outputs import write_explanation_outputs
from MedAIExtension.explain.request import ExplainRequest, ExplainSettings, Roi
from MedAIExtension.explain.sanity import deletion_insertion, randomisation_test
from MedAIExtension.explain.torch_model import default_target_layer
from MedAIExtension.explain.types import GRADIENT_METHODS, ExplainMethod, Explanation, ScoreTarget
from MedAIExtension.explain.uncertainty import segmentation_uncertainty
from MedAIExtension.explain.window import (
    ExplanationWindow,
    check_patch_roi,
    explanation_window,
    to_input_grid,
)
from MedAIExtension.io.image import Image
from MedAIExtension.io.loader import load_image
from MedAIExtension.labels import SegmentLabel
from MedAIExtension.models.catalog import Catalog, ModelEntry, load_catalog
from MedAIExtension.models.memory import free_gpu_memory, is_out_of_memory
from MedAIExtension.progress import CancelToken, Progress

if TYPE_CHECKING:
    import torch

__all__ = ["explain_image", "explain_to_folder"]


def _display(values: np.ndarray, method: ExplainMethod, unit: str) -> dict[str, Any]:
    """Window and threshold that show the important part of a map (low values transparent)."""
    positive = values[values > 0]
    if method in (ExplainMethod.GRADCAM, ExplainMethod.GRADCAMPP):
        high = 1.0
    elif positive.size:
        high = float(np.percentile(positive, 99.5))
    else:
        high = 1.0
    high = high if high > 0 else 1.0
    return {"window": [0.0, high], "threshold": round(0.2 * high, 6), "colormap": "heat", "opacity": 0.5, "unit": unit}


def _probability(model: ExplainModel, data: np.ndarray, target: ScoreTarget) -> float:
    return float(target.score(model.predict(data), activate=True)[0])


def _segmentation_region(model: ExplainModel, window: ExplanationWindow, target: ScoreTarget) -> np.ndarray:
    """Without an ROI, a segmentation score covers the voxels the model labels with the target."""
    outputs = model.predict(window.data)
    predicted = window.from_network(np.argmax(outputs[0], axis=0) == target.channel)
    if not predicted.any():
        raise InputError(
            f"The model labels no voxel as {target.name} in this image, so there is nothing to explain. "
            "Give an ROI (--roi) around the structure whose score you want explained."
        )
    return predicted


def _gradient_map(
    method: ExplainMethod,
    module: torch.nn.Module,
    data: np.ndarray,
    target: ScoreTarget,
    layer: str | None,
    settings: ExplainSettings,
    device: str,
    notes: list[str],
) -> np.ndarray:
    """The map of a gradient method; on out-of-memory IG halves its batch, Grad-CAM says how to need less."""
    batch_size = settings.batch_size
    result: IntegratedGradientsResult | GradCamResult
    while True:
        try:
            if method == ExplainMethod.IG:
                result = integrated_gradients(
                    module, data, target, steps=settings.ig_steps, batch_size=batch_size, device=device
                )
            else:
                plus_plus = method == ExplainMethod.GRADCAMPP
                result = grad_cam(module, data, target, layer, plus_plus=plus_plus, device=device)
            break
        except Exception as error:  # torch raises RuntimeError subclasses (or MemoryError) when memory runs out
            if not is_out_of_memory(error):
                raise
            free_gpu_memory()
            if method == ExplainMethod.IG and batch_size > 1:
                batch_size //= 2
                notes.append(f"Ran out of memory; integrated gradients continued with {batch_size} image(s) per batch.")
                continue
            size = "x".join(str(v) for v in data.shape[2:])
            raise ModelError(
                f"{method.display_name} ran out of memory on a {size}-voxel window. Draw a smaller ROI around the "
                "structure, close other programs, or use occlusion (it needs no gradients)."
            ) from None
    values = getattr(result, "map", result)
    for note in getattr(result, "notes", ()):
        if note not in notes:
            notes.append(note)
    return np.asarray(values, dtype=np.float32)


def explain_image(
    image: Image,
    model: str | ModelEntry | ExplainModel,
    method: ExplainMethod | str,
    *,
    target: str | int | None = None,
    roi: Roi | None = None,
    settings: ExplainSettings | None = None,
    device: str = "auto",
    catalog: Catalog | None = None,
    progress: Callable[[float, str], None] | Progress | None = None,
    token: CancelToken | None = None,
) -> Explanation:
    """Explain what ``model`` bases its output for ``target`` on, in ``image``.

    Args:
        image: the input volume (any geometry).
        model: catalogue name, entry, or an already loaded :class:`ExplainModel`.
        method: gradcam, gradcampp, occlusion, ig or uncertainty.
        target: label value or name (default: catalogue's ``explain.target_label`` or the first label).
        roi: classification models look at the patch centred on it (required when the image is larger than the
            patch); segmentation models explain its region score (the sum of the target label's logits inside it).
        settings: method settings.
        device: auto, cpu or cuda.
        catalog: where names are looked up (default: shipped catalogue + user models).
        progress: receives (fraction, message); cancellation through ``token``.

    Raises:
        InputError, ModelError (e.g. gradients asked of an ONNX model), CancelledError.
    """
    started = time.perf_counter()
    method = ExplainMethod.parse(method)
    settings = settings or ExplainSettings()
    reporter = progress if isinstance(progress, Progress) else Progress(progress, token)
    if isinstance(model, ExplainModel):
        entry = model.entry
    else:
        entry = model if isinstance(model, ModelEntry) else (catalog or load_catalog()).get(model)
    wanted = entry.input.modality
    if wanted not in ("any", "") and image.modality and image.modality != wanted:
        raise InputError(
            f"Model {entry.name} expects {wanted} images but the input is {image.modality}. "
            "Pick a model made for this modality ('medai models' lists them)."
        )
    if method != ExplainMethod.UNCERTAINTY:
        check_patch_roi(image, entry, roi)  # before loading the model: a classifier needs to know where to look
    if isinstance(model, ExplainModel):
        loaded = model
    else:
        reporter(0.0, f"loading model {entry.name}")
        loaded = load_explain_model(entry, device)
    label = resolve_target_label(entry, target)
    notes: list[str] = []

    if method == ExplainMethod.UNCERTAINTY:
        return _uncertainty(image, loaded, label, roi, settings, reporter, notes, started)

    module = loaded.require_gradients(method) if method in GRADIENT_METHODS else None
    reporter(0.03, "preparing the input window")
    window = explanation_window(image, entry, roi)
    target_score = score_target(entry, label)
    if not entry.is_classifier:
        region = window.region if window.region is not None else _segmentation_region(loaded, window, target_score)
        target_score = score_target(entry, label, window.to_network(region))
    score = _probability(loaded, window.data, target_score)
    layer = None
    work = reporter.stage(0.05, 0.6 if settings.sanity else 0.95)
    if method in GRADIENT_METHODS:
        assert module is not None  # require_gradients gave it (or raised)
        layer = settings.layer or entry.explain.get("target_layer")
        if layer is None and method != ExplainMethod.IG:
            layer = default_target_layer(module, window.data)
            notes.append(f"No target layer in the catalogue; Grad-CAM uses {layer}.")
        work(0.0, f"{method.display_name} of {label.name}")
        values = _gradient_map(method, module, window.data, target_score, layer, settings, loaded.torch_device, notes)
        unit = "normalised relevance (0-1)" if method != ExplainMethod.IG else "attribution (logit units)"
    else:
        window_roi = None
        if target_score.region is not None and roi is not None:
            index = np.nonzero(target_score.region)
            window_roi = tuple(slice(int(a.min()), int(a.max()) + 1) for a in index)
        result = occlusion_sensitivity(
            loaded.predict,
            window.data,
            target_score,
            mask_size=settings.mask_size,
            stride=settings.stride,
            baseline=settings.baseline,
            roi=window_roi,
            batch_size=settings.batch_size,
            module=module if module is not None else loaded.module,
            progress=work,
        )
        values = np.asarray(result.sensitivity, dtype=np.float32)
        notes.extend(getattr(result, "notes", ()))
        unit = "drop in probability when hidden"
    work(1.0, "map computed")

    sanity: dict[str, Any] = {}
    if settings.sanity:
        sanity = _sanity_checks(method, loaded, window, target_score, layer, values, settings, reporter, notes)
    map_kji = window.from_network(values)
    reporter(0.96, "mapping the result onto the input grid")
    on_input = to_input_grid(map_kji, window.image, image)
    reporter(1.0, "done")
    return Explanation(
        method=method,
        entry=entry,
        label=label,
        provider=loaded.provider,
        map=on_input,
        display=_display(map_kji, method, unit),
        roi=roi,
        layer=layer,
        score=score,
        sanity=sanity,
        notes=notes,
        seconds=time.perf_counter() - started,
    )


def _window_extent(window: ExplanationWindow, entry: ModelEntry) -> str:
    """What the explained window is, with its size: "the 32 mm patch", "the 64x64x48 mm window around the region"."""
    size = np.asarray(window.image.size_ijk, dtype=float) * window.image.spacing
    text = f"{size[0]:.0f}" if np.allclose(size, size[0], atol=0.5) else "x".join(f"{v:.0f}" for v in size)
    return f"the {text} mm patch" if entry.is_classifier else f"the {text} mm window around the region"


def _sanity_checks(
    method: ExplainMethod,
    loaded: ExplainModel,
    window: ExplanationWindow,
    target: ScoreTarget,
    layer: str | None,
    values: np.ndarray,
    settings: ExplainSettings,
    reporter: Progress,
    notes: list[str],
) -> dict[str, Any]:
    sanity: dict[str, Any] = {}
    if method in GRADIENT_METHODS:
        stage = reporter.stage(0.6, 0.85)
        stage(0.0, "sanity check: randomising the model's weights")
        quick = ExplainSettings(
            layer=layer, sanity=False, ig_steps=min(settings.ig_steps, 16), batch_size=settings.batch_size
        )

        def explain_with(module: torch.nn.Module) -> np.ndarray:
            stage(0.5, "sanity check: explaining the randomised model")
            return _gradient_map(method, module, window.data, target, layer, quick, loaded.torch_device, [])

        module = loaded.require_gradients(method)  # present: checked before the map was made
        sanity["randomisation"] = randomisation_test(module, explain_with, max_steps=6).to_dict()
    else:
        notes.append(
            "Occlusion queries the model itself for every hidden window, so it cannot ignore the model; the "
            "weight-randomisation check is run for gradient methods only."
        )
    stage = reporter.stage(0.85, 0.95)
    stage(0.0, "sanity check: deletion / insertion")
    faithfulness = deletion_insertion(
        loaded.predict,
        window.data,
        values,
        target,
        batch_size=settings.batch_size,
        extent=_window_extent(window, loaded.entry),
    )
    sanity["faithfulness"] = faithfulness.to_dict()
    return sanity


def _uncertainty(
    image: Image,
    loaded: ExplainModel,
    label: SegmentLabel,
    roi: Roi | None,
    settings: ExplainSettings,
    reporter: Progress,
    notes: list[str],
    started: float,
) -> Explanation:
    entry = loaded.entry
    if entry.is_classifier:
        raise InputError(
            f"Uncertainty maps are for segmentation models; {entry.name} is a classifier. Use gradcam, gradcampp, "
            "occlusion or ig with it."
        )
    if roi is not None:
        notes.append("Uncertainty covers the whole image; the ROI was not used.")
    notes.append(
        "No sanity checks for an uncertainty map: it is the model's own disagreement under flips (or dropout), "
        "not an attribution, so there is nothing to randomise or delete."
    )
    result = segmentation_uncertainty(
        image,
        entry,
        loaded.backend,
        tta_flips=settings.tta_flips,
        mc_dropout=settings.mc_dropout,
        progress=reporter.stage(0.02, 1.0),
    )
    summary = result.to_dict()
    notes.extend(n for n in summary.get("notes", []) if n not in notes)
    unit = summary.get("unit", "entropy")
    entropy = result.entropy
    display = _display(entropy.array, ExplainMethod.UNCERTAINTY, unit)
    return Explanation(
        method=ExplainMethod.UNCERTAINTY,
        entry=entry,
        label=label,
        provider=loaded.provider,
        map=entropy,
        display=display,
        roi=roi,
        uncertainty=summary,
        labelmap=result.labelmap,
        notes=notes,
        seconds=time.perf_counter() - started,
    )


def explain_to_folder(
    request: ExplainRequest,
    progress: Callable[[float, str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    token: CancelToken | None = None,
    note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Load the input, explain it and write every output into ``request.output``; returns explanation.json.

    ``warn`` receives warnings about the input (odd DICOM headers, a frame of reference that rules out DICOM
    outputs); ``note`` receives the explanation's informational notes (default: ``warn``). Nothing is written
    when any step fails (the output folder is checked first, files are staged).
    """
    check_output_directory(request.output)
    reporter = Progress(progress, token)
    reporter(0.0, "reading the input")
    image = load_image(request.input, series_uid=request.series, warn=warn)
    write_dicom = request.write_dicom
    if write_dicom:  # the Parametric Map cannot reference a multi-frame source yet: say so before the work
        require_single_frame_source(image, "DICOM Parametric Map")
        write_dicom = frame_of_reference_allows([("input", image)], "the DICOM Parametric Map and captures", warn)
    catalog = load_catalog(models_dirs=request.models_dirs)
    explanation = explain_image(
        image,
        request.model,
        request.method,
        target=request.target,
        roi=request.roi,
        settings=request,
        device=request.device,
        catalog=catalog,
        progress=reporter.stage(0.02, 0.9),
    )
    document = write_explanation_outputs(
        explanation,
        image,
        request.output,
        dicom=write_dicom,
        input_label=str(request.input),
        progress=reporter.stage(0.9, 1.0),
    )
    tell = note if note is not None else warn
    if tell is not None:
        for text in explanation.notes:
            tell(text)
    return document
