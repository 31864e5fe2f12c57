"""Slicer-side logic of MedAI Explainability: turn the GUI's choices into an explanation request, run it in the
worker process (``python -m MedAIExtension.worker explain``), load the result folder into the scene.

The volume goes to the worker as its DICOM series when Slicer's DICOM database holds its files (so the result also
gets a DICOM Parametric Map referencing it), as an NRRD file otherwise — staged like the Nodule Tracking
module does. Methods, request, MRML bridge and overlay are ``MedAIExtension``'s; no widgets, no dialogs here.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from MedAICommonLib.dependencies import workerPython
from MedAICommonLib.jobs import JobLogic, WorkerJob
from MedAICommonLib.staging import dicomFiles, stageInput, temporaryFolder

from MedAIExtension.errors import InputError, MedAIError
from MedAIExtension.explain.request import ExplainRequest, Roi
from MedAIExtension.explain.types import GRADIENT_METHODS, ExplainMethod

__all__ = ["ExplainJob", "ExplainabilityLogic"]

#: Backends whose models give no gradients (Grad-CAM, Grad-CAM++ and integrated gradients need them).
GRADIENT_FREE_BACKENDS = frozenset({"onnx"})


@dataclass
class ExplainJob(WorkerJob):
    """One run of the explanation worker and what came out of it (``outputDir`` holds explanation.json, the maps,
    PNGs and DICOM; ``result`` the worker's result data: files, sanity, notes)."""

    inputVolume: Any = None
    request: ExplainRequest | None = None
    nodes: Any = None  # MedAIExtension.explain.scene.ExplanationNodes once the result is loaded


class ExplainabilityLogic(JobLogic):
    """Builds requests, starts and polls the worker, loads its result, sets the overlay opacity."""

    processName = resultName = "explanation"

    # ---- choices offered by the GUI ----------------------------------------------------------------------------
    @staticmethod
    def _entry(modelName: str) -> Any:
        from MedAIExtension.models.catalog import load_catalog

        return load_catalog().get(modelName)

    @staticmethod
    def catalogueModels() -> list[tuple[str, str]]:
        """(name, title) of every catalogue model, classifiers first (every method applies to them)."""
        from MedAIExtension.models.catalog import load_catalog

        entries = sorted(load_catalog().entries(), key=lambda entry: not entry.is_classifier)
        return [(entry.name, f"{entry.title} ({entry.version})") for entry in entries]

    @classmethod
    def methodsFor(cls, modelName: str) -> list[ExplainMethod]:
        """The methods that apply to a model: no gradient methods for ONNX, uncertainty only for segmentation."""
        entry = cls._entry(modelName)
        methods = [m for m in ExplainMethod if not (entry.backend in GRADIENT_FREE_BACKENDS and m in GRADIENT_METHODS)]
        return [m for m in methods if not (entry.is_classifier and m is ExplainMethod.UNCERTAINTY)]

    @classmethod
    def targetsFor(cls, modelName: str) -> list[tuple[int, str]]:
        """(label value, name) of the labels a model scores, in catalogue order."""
        return [(label.value, label.name) for label in cls._entry(modelName).labels]

    @classmethod
    def targetChoices(cls, modelName: str) -> tuple[list[str], list[str]]:
        """Values and titles of the target combo box: "" (the catalogue's default) then each label of the model
        (only the default when the model is unknown or the catalogue cannot be read yet)."""
        try:
            targets = cls.targetsFor(modelName) if modelName else []
        except (MedAIError, ImportError):
            targets = []
        values = ["", *(str(value) for value, _ in targets)]
        return values, ["Catalogue default", *(f"{name} ({value})" for value, name in targets)]

    @staticmethod
    def roiFromNode(roiNode: Any) -> Roi | None:
        """The box of a markups ROI in world RAS (a rotated ROI gives the axis-aligned box around it); None if no
        ROI is selected.

        Raises:
            InputError: the node is not a ROI markup, or it has not been placed yet.
        """
        if roiNode is None:
            return None
        if not roiNode.IsA("vtkMRMLMarkupsROINode"):
            raise InputError(f"Select a ROI markup (not a {roiNode.GetClassName()}) or none.")
        bounds = [0.0] * 6
        roiNode.GetRASBounds(bounds)
        low, high = bounds[0::2], bounds[1::2]
        if any(h <= lo for lo, h in zip(low, high, strict=True)):
            raise InputError(f"The ROI {roiNode.GetName()!r} is not placed or has no size; draw it over the image.")
        center = tuple((lo + h) / 2 for lo, h in zip(low, high, strict=True))
        return Roi(center, tuple(h - lo for lo, h in zip(low, high, strict=True)))  # type: ignore[arg-type]

    def buildRequest(
        self,
        inputPath: Path,
        outputDir: Path,
        model: str,
        method: str | ExplainMethod,
        target: str | None = None,
        roiNode: Any = None,
        layer: str | None = None,
        device: str = "auto",
        sanity: bool = True,
    ) -> ExplainRequest:
        """The request the worker runs, from the GUI's choices (empty target/layer = the catalogue's default).

        Raises:
            InputError: the method does not apply to the model (the message names those that do), or a bad ROI.
            CatalogError: the model is not in the catalogue.
        """
        method = ExplainMethod.parse(method)
        methods = self.methodsFor(model)
        if method not in methods:
            names = ", ".join(m.display_name for m in methods)
            raise InputError(f"{method.display_name} does not apply to the model {model!r}; choose one of: {names}.")
        return ExplainRequest(
            input=Path(inputPath),
            model=model,
            method=method,
            output=Path(outputDir),
            target=str(target) if target not in (None, "") else None,
            roi=self.roiFromNode(roiNode),
            layer=layer or None,
            device=device,
            sanity=sanity,
        )

    @staticmethod
    def workerArgs(request: ExplainRequest) -> list[str]:
        """The worker's command line for ``request`` (run by Slicer's Python, PythonSlicer, inside Slicer)."""
        from MedAIExtension.runner import explanation_worker_args

        return explanation_worker_args(request, python=workerPython())

    # ---- running -----------------------------------------------------------------------------------------------
    def start(
        self,
        volume: Any,
        model: str,
        method: str | ExplainMethod,
        target: str | None = None,
        roiNode: Any = None,
        layer: str | None = None,
        device: str = "auto",
        sanity: bool = True,
    ) -> ExplainJob:
        """Stage the volume in a temporary folder and start the worker on it.

        Raises:
            InputError: no volume, an unavailable device, a method that does not apply, or a bad ROI.
        """
        from MedAIExtension.models.devices import available_devices

        if volume is None or volume.GetImageData() is None:
            raise InputError("Select an input volume that holds an image.")
        if device not in available_devices():
            raise InputError(f"Device '{device}' is not available here ({', '.join(available_devices())}).")
        files = dicomFiles(volume)
        workDir = Path(tempfile.mkdtemp(prefix="MedAI-explain-", dir=temporaryFolder()))
        try:
            request = self.buildRequest(
                workDir / "inputs" / "input", workDir / "results", model, method, target, roiNode, layer, device, sanity
            )
            inputPath = stageInput(volume, workDir / "inputs" / "input", files)
            request = replace(request, input=inputPath)
        except BaseException:
            shutil.rmtree(workDir, ignore_errors=True)
            raise
        return self.startJob(ExplainJob(None, workDir, volume, request), self.workerArgs(request))

    def startFromParameters(self, parameters: Any) -> ExplainJob:
        """:meth:`start` with the settings of the module's parameter node."""
        p = parameters
        return self.start(p.inputVolume, p.model, p.method, p.target, p.roi, p.layer, p.device, p.sanity)

    def run(self, volume: Any, model: str, method: str, timeoutSeconds: float = 1800, **options: Any) -> ExplainJob:
        """Blocking :meth:`start` + :meth:`poll`, for scripts and tests. Raises MedAIError when the run fails."""
        return self.runJob(lambda: self.start(volume, model, method, **options), timeoutSeconds)

    def loadResult(self, job: ExplainJob, data: dict[str, Any]) -> None:  # type: ignore[override]
        """The output folder becomes the heat map overlay, its sanity summary and (uncertainty) table."""
        from MedAIExtension.explain.scene import load_explanation_into_scene

        job.nodes = load_explanation_into_scene(self.scene, data.get("output") or job.outputDir, job.inputVolume)
        job.result = dict(data)

    def setOverlayOpacity(self, opacity: float) -> int:
        """Foreground opacity of every slice view (the map over the CT); returns how many views changed."""
        from MedAIExtension.mrml.overlays import set_overlay_opacity

        return set_overlay_opacity(self.scene, opacity)
