"""Slicer-side logic of MedAI Segmentation: run the worker process, load its result, export DICOM SEG.

Everything here talks to MRML, the DICOM database or the worker process; image, model, MRML-bridge and DICOM work
is delegated to ``MedAIExtension``. No widgets, no dialogs: the module widget shows what this returns.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import slicer
from MedAICommonLib.dependencies import workerPython
from MedAICommonLib.dicom_database import SlicerDicomDatabaseStore
from MedAICommonLib.jobs import JobLogic, WorkerJob
from MedAICommonLib.staging import temporaryFolder

from MedAIExtension.errors import InputError
from MedAISegmentationLib.annotation_queue import AnnotationQueueMixin

__all__ = ["INPUT_ROLE", "STATISTICS_ROLE", "SegmentationJob", "SegmentationLogic"]

#: Node reference roles of a result segmentation: the volume it was computed from and its statistics table.
INPUT_ROLE, STATISTICS_ROLE = "medaiInputVolume", "medaiStatistics"


@dataclass
class SegmentationJob(WorkerJob):
    """One run of the worker process and what came out of it."""

    inputVolume: Any = None
    modelName: str = ""
    outputSegmentation: Any = None
    segmentationNode: Any = None
    tableNode: Any = None


class SegmentationLogic(JobLogic, AnnotationQueueMixin):
    """Starts and polls the worker, loads its result into the scene, exports DICOM SEG, steps through an annotation
    queue (:class:`AnnotationQueueMixin`). No widgets, no dialogs."""

    processName, resultName, keepOutputs = "model", "segmentation", False

    def start(self, volume: Any, modelName: str, device: str = "auto", output: Any = None) -> SegmentationJob:
        """Write the volume to a temporary NRRD file and start the worker on it."""
        from MedAIExtension.io import write_volume_file
        from MedAIExtension.models.devices import available_devices
        from MedAIExtension.mrml import volume_node_to_image
        from MedAIExtension.runner import segmentation_worker_args

        if volume is None or volume.GetImageData() is None:
            raise InputError("Select an input volume that holds an image.")
        if device not in available_devices():
            raise InputError(f"Device '{device}' is not available here ({', '.join(available_devices())}).")
        workDir = Path(tempfile.mkdtemp(prefix="MedAI-", dir=temporaryFolder()))
        try:
            inputPath = write_volume_file(volume_node_to_image(volume), workDir / "input.nrrd")
        except BaseException:
            shutil.rmtree(workDir, ignore_errors=True)
            raise
        args = segmentation_worker_args(inputPath, modelName, workDir / "output", device, python=workerPython())
        return self.startJob(SegmentationJob(None, workDir, volume, modelName, output), args)

    def run(self, volume: Any, modelName: str, device: str = "auto", timeoutSeconds: float = 1800) -> SegmentationJob:
        """Blocking start + poll, for scripts and tests. Raises MedAIError when the run fails."""
        return self.runJob(lambda: self.start(volume, modelName, device), timeoutSeconds)

    def loadResult(self, job: SegmentationJob, data: dict[str, Any]) -> None:  # type: ignore[override]
        """The labelmap becomes a segmentation (the chosen node or a new one) with coded segments and statistics."""
        from MedAIExtension.io import read_volume_file
        from MedAIExtension.models.catalog import load_catalog
        from MedAIExtension.mrml import labelmap_to_segmentation_node, segment_statistics, statistics_to_table_node

        entry, labelmap = load_catalog().get(job.modelName), read_volume_file(data["labelmap"])
        name = f"{job.inputVolume.GetName()} {entry.title}"
        node = labelmap_to_segmentation_node(self.scene, labelmap, entry.labels, name, job.inputVolume)
        if job.outputSegmentation is not None:  # the user chose the node: replace its segments
            job.outputSegmentation.GetSegmentation().DeepCopy(node.GetSegmentation())
            job.outputSegmentation.SetReferenceImageGeometryParameterFromVolumeNode(job.inputVolume)
            job.outputSegmentation.CreateDefaultDisplayNodes()
            self.scene.RemoveNode(node)
            node = job.outputSegmentation
        for key, value in (("model", entry.name), ("modelVersion", entry.version), ("provider", data.get("provider"))):
            node.SetAttribute(f"MedAI.{key}", str(value or ""))
        node.SetNodeReferenceID(INPUT_ROLE, job.inputVolume.GetID())
        if node.GetNodeReference(STATISTICS_ROLE) is not None:
            self.scene.RemoveNode(node.GetNodeReference(STATISTICS_ROLE))
        rows = segment_statistics(node, labelmap, entry.labels)
        job.tableNode = statistics_to_table_node(self.scene, rows, f"{node.GetName()} statistics")
        node.SetNodeReferenceID(STATISTICS_ROLE, job.tableNode.GetID())
        job.segmentationNode = node

    def exportDicomSeg(self, segmentationNode: Any, volume: Any = None) -> Path:
        """Write DICOM SEG referencing the input's DICOM series and add it to the DICOM database."""
        from MedAIExtension.dicom import write_dicom_seg
        from MedAIExtension.io import read_dicom_files
        from MedAIExtension.labels import SegmentLabel
        from MedAIExtension.models.catalog import load_catalog
        from MedAIExtension.mrml import segment_label_values, segmentation_node_to_labelmap

        if segmentationNode is None:
            raise InputError("Select a segmentation to export (run a model first).")
        if segmentationNode.GetNodeReference(INPUT_ROLE) is not None:
            volume = segmentationNode.GetNodeReference(INPUT_ROLE)
        uids = (volume.GetAttribute("DICOM.instanceUIDs") or "").split() if volume is not None else []
        database = getattr(slicer, "dicomDatabase", None)
        files = [database.fileForInstance(uid) for uid in uids] if database is not None else []
        if not files or not all(files):
            raise InputError(
                "A DICOM SEG must reference the DICOM series it was computed from, but this volume was not loaded "
                "from Slicer's DICOM database. Load the series in the DICOM module and run the model on it, or save "
                "the segmentation as .seg.nrrd instead."
            )
        source, catalog = read_dicom_files(files), load_catalog()
        modelName = segmentationNode.GetAttribute("MedAI.model") or ""
        entry = catalog.get(modelName) if modelName in catalog.names() else None
        labels = {label.value: label for label in (entry.labels if entry else ())}
        for segmentId, value in segment_label_values(segmentationNode).items():
            if value not in labels:  # a segment the user added: described by its name and colour
                segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
                labels[value] = SegmentLabel(value, segment.GetName(), tuple(segment.GetColor()))
        path = Path(tempfile.mkdtemp(prefix="MedAI-SEG-", dir=temporaryFolder())) / "seg.dcm"
        write_dicom_seg(
            segmentation_node_to_labelmap(segmentationNode, source),
            source,
            [labels[value] for value in sorted(labels)],
            path,
            algorithm_name=entry.name if entry else "MedAI",  # as the CLI and the gateway write it
            algorithm_version=entry.version if entry else "unknown",
        )
        SlicerDicomDatabaseStore().store([path])
        return path
