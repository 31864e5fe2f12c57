"""Slicer-side logic of MedAI Nodule Tracking: run the tracking worker, load its result, export SR/SEG.

The two studies go to a child process (``python -m MedAIExtension.worker track``) as DICOM series when Slicer's DICOM
database holds their files (so the result keeps patient, study dates and UIDs and gets DICOM SEG + SR), as NRRD files
otherwise. Tracking, outputs and the MRML bridge are ``MedAIExtension``'s; no widgets, no dialogs here.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import slicer
from MedAICommonLib.dependencies import workerPython
from MedAICommonLib.jobs import JobLogic, WorkerJob
from MedAICommonLib.staging import dicomFiles, stageInput, temporaryFolder

from MedAIExtension.errors import InputError

__all__ = ["DICOM_FILE_KEYS", "OUTPUT_ATTRIBUTE", "TrackingJob", "TrackingLogic"]

#: Table node attribute holding the folder of the run's outputs (tracking.json, SEG/SR, report.html).
OUTPUT_ATTRIBUTE = "MedAI.trackingOutput"
#: Keys of the DICOM objects in tracking.json's "files" (written only when both studies came from DICOM).
DICOM_FILE_KEYS = ("baseline_seg", "baseline_sr", "followup_seg", "followup_sr")
_TIMEPOINTS = ("baseline", "followup")


@dataclass
class TrackingJob(WorkerJob):
    """One run of the tracking worker and what came out of it (``outputDir`` holds tracking.json, SEG/SR,
    report.html; ``result`` the worker's result data: files, counts, warnings)."""

    baselineVolume: Any = None
    followupVolume: Any = None
    nodes: Any = None  # MedAIExtension.tracking.scene.TrackingNodes once the result is loaded


class TrackingLogic(JobLogic):
    """Starts and polls the worker, loads its result into the scene, jumps to nodules, exports SR/SEG."""

    processName = resultName = "tracking"

    @staticmethod
    def noduleModels() -> list[tuple[str, str]]:
        """(name, title) of the catalogue models whose nodule label the tracking can use as candidates."""
        from MedAIExtension.models.catalog import load_catalog
        from MedAIExtension.tracking.pipeline import MODEL_NODULE_LABEL

        catalog, models = load_catalog(), []
        for name in catalog.names():
            entry = catalog.get(name)
            if entry.task != "segmentation":
                continue
            label = next((label for label in entry.labels if label.value == MODEL_NODULE_LABEL), None)
            if label is not None and label.type is not None and label.type.value == "27925004":  # SCT Nodule
                models.append((entry.name, f"{entry.title} ({entry.version})"))
        return models

    def start(
        self,
        baselineVolume: Any,
        followupVolume: Any,
        model: str | None = None,
        device: str = "auto",
        deformable: bool = False,
        force: bool = False,
        intervalDays: float | None = None,
    ) -> TrackingJob:
        """Stage both studies in a temporary folder and start the worker on them.

        Raises:
            InputError: a volume is missing or both are the same, the device is not available, or the interval is
                unknown (neither given nor readable from DICOM study dates).
        """
        from MedAIExtension.models.devices import available_devices
        from MedAIExtension.runner import tracking_worker_args

        for name, volume in (("baseline", baselineVolume), ("follow-up", followupVolume)):
            if volume is None or volume.GetImageData() is None:
                raise InputError(f"Select a {name} volume that holds an image.")
        if baselineVolume.GetID() == followupVolume.GetID():
            raise InputError("Baseline and follow-up are the same volume: select the earlier scan as baseline.")
        if model and device not in available_devices():
            raise InputError(f"Device '{device}' is not available here ({', '.join(available_devices())}).")
        files = [dicomFiles(baselineVolume), dicomFiles(followupVolume)]
        if intervalDays is None and not all(files):
            raise InputError(
                "The interval between the scans is unknown: only volumes loaded from Slicer's DICOM database carry "
                "their study dates. Enter the interval in days, or load both series in the DICOM module."
            )
        workDir = Path(tempfile.mkdtemp(prefix="MedAI-tracking-", dir=temporaryFolder()))
        try:
            inputs = [
                stageInput(volume, workDir / "inputs" / name, found)
                for volume, name, found in zip((baselineVolume, followupVolume), _TIMEPOINTS, files, strict=True)
            ]
        except BaseException:
            shutil.rmtree(workDir, ignore_errors=True)
            raise
        job = TrackingJob(None, workDir, baselineVolume, followupVolume)
        args = tracking_worker_args(
            *inputs, job.outputDir, model or None, device, deformable, force, intervalDays, python=workerPython()
        )
        return self.startJob(job, args)

    def startFromParameters(self, parameters: Any) -> TrackingJob:
        """:meth:`start` with the settings of the module's parameter node (interval 0 = from the study dates)."""
        p = parameters
        return self.start(
            p.baselineVolume, p.followupVolume, p.model or None, p.device, p.deformable, p.force, p.intervalDays or None
        )

    def run(
        self,
        baselineVolume: Any,
        followupVolume: Any,
        model: str | None = None,
        device: str = "auto",
        deformable: bool = False,
        force: bool = False,
        intervalDays: float | None = None,
        timeoutSeconds: float = 1800,
    ) -> TrackingJob:
        """Blocking :meth:`start` + :meth:`poll`, for scripts and tests. Raises MedAIError when the run fails."""
        options = (model, device, deformable, force, intervalDays)
        return self.runJob(lambda: self.start(baselineVolume, followupVolume, *options), timeoutSeconds)

    def loadResult(self, job: TrackingJob, data: dict[str, Any]) -> None:  # type: ignore[override]
        """The output folder becomes the nodule table, segmentations, points and registration in the scene."""
        from MedAIExtension.tracking.scene import load_tracking_into_scene

        output = Path(data.get("output") or job.outputDir)
        job.nodes = load_tracking_into_scene(self.scene, output, job.baselineVolume, job.followupVolume)
        job.nodes.table.SetAttribute(OUTPUT_ATTRIBUTE, str(output))
        job.result = dict(data)

    @staticmethod
    def showFollowupRegistered(nodes: Any, followupVolume: Any, show: bool) -> None:
        """Show the follow-up volume, its nodule segmentation and points in baseline space (or in their own)."""
        transformId = nodes.transform.GetID() if show and nodes.transform is not None else None
        for node in (followupVolume, nodes.followup_segmentation, nodes.followup_fiducials):
            if node is not None:
                node.SetAndObserveTransformNodeID(transformId)

    def defaultVolumes(self, baseline: Any = None, followup: Any = None) -> tuple[Any, Any]:
        """Fill an empty choice: the first scalar volume of the scene as baseline, the last other one as follow-up."""
        count = self.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
        volumes = [self.scene.GetNthNodeByClass(n, "vtkMRMLScalarVolumeNode") for n in range(count)]
        baseline = baseline or (volumes[0] if volumes else None)
        others = [v for v in volumes if baseline is None or v.GetID() != baseline.GetID()]
        return baseline, followup or (others[-1] if others else None)

    def clickedNoduleLocation(self, job: TrackingJob | None, viewRow: int) -> tuple[float, ...] | None:
        """Where to centre the slice views for row ``viewRow`` of the results table view of ``job``."""
        if job is None or job.nodes is None:
            return None
        return self.noduleLocation(job.nodes, self.tableRowIndex(job.nodes.table, viewRow), job.followupVolume)

    @staticmethod
    def tableRowIndex(tableNode: Any, viewRow: int) -> int | None:
        """The table row shown in row ``viewRow`` of a qMRMLTableView (which adds a header row unless the table
        uses its column titles as header); None for the header or outside the table."""
        titled = getattr(tableNode, "GetUseColumnTitleAsColumnHeader", None) or tableNode.GetUseColumnNameAsColumnHeader
        row = viewRow - (0 if titled() else 1)
        return row if 0 <= row < tableNode.GetNumberOfRows() else None

    @staticmethod
    def noduleLocation(nodes: Any, tableRow: int | None, followupVolume: Any = None) -> tuple[float, ...] | None:
        """World RAS position of a nodule of the table: its baseline centre, or for a new nodule its follow-up
        centre as the follow-up volume is shown now (through its parent transform, if any)."""
        if tableRow is None or not 0 <= tableRow < len(nodes.rows):
            return None
        row = nodes.rows[tableRow]
        if row.get("baseline_center_ras") is not None:
            return tuple(float(v) for v in row["baseline_center_ras"])
        if row.get("followup_center_ras") is None:
            return None
        point = [float(v) for v in row["followup_center_ras"]]
        parent = followupVolume.GetParentTransformNode() if followupVolume is not None else None
        if parent is None:
            return tuple(point)
        from vtkmodules.vtkCommonTransforms import vtkGeneralTransform

        toWorld = vtkGeneralTransform()
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(parent, None, toWorld)
        return tuple(toWorld.TransformPoint(point))

    @staticmethod
    def dicomOutputs(tableNode: Any) -> list[Path]:
        """The DICOM SEG and SR files of the run that made ``tableNode`` (empty if none were written).

        Raises:
            InputError: no tracking result, or its output folder is gone.
        """
        from MedAIExtension.tracking.scene import read_tracking_document

        folder = tableNode.GetAttribute(OUTPUT_ATTRIBUTE) if tableNode is not None else None
        if not folder:
            raise InputError("There is no tracking result to export: run the tracking first.")
        try:
            files = read_tracking_document(folder).get("files", {})
        except InputError:
            raise InputError(f"The tracking outputs in {folder} are gone or damaged: run the tracking again.") from None
        paths = [Path(folder) / files[key] for key in DICOM_FILE_KEYS if key in files]
        missing = [path.name for path in paths if not path.is_file()]
        if missing:
            raise InputError(f"{', '.join(missing)} are missing from {folder}: run the tracking again.")
        return paths

    def exportDicom(self, tableNode: Any) -> list[Path]:
        """Add the run's DICOM SEG and SR objects to Slicer's DICOM database; returns the files added."""
        paths = self.dicomOutputs(tableNode)
        if not paths:
            raise InputError(
                "This result has no DICOM SEG/SR: they must reference the source series, so both studies have to "
                "be loaded from Slicer's DICOM database. Load both series in the DICOM module and track again."
            )
        from MedAICommonLib.dicom_database import SlicerDicomDatabaseStore

        SlicerDicomDatabaseStore().store(paths)  # only the DICOM files: the folder also holds NIfTI, NRRD, PNG, HTML
        return paths
