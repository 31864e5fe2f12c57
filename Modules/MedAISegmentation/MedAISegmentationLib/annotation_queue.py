"""Stepping an annotator through a batch's annotation queue (``queue.csv`` of ``medai batch --annotation-queue``).

Each queue row names a study's CT (``source``: a NIfTI/NRRD file, a DICOM series folder, or a series on a DICOMweb
server, ``dicomweb:<study>/<series>``, whose retrieved copy the batch kept in the study's folder) and the folder that
``medai segment`` wrote for it (``output_dir``: ``segmentation.seg.nrrd`` and/or ``segmentation.nii.gz`` plus
``summary.json``). Loading a row puts the CT and its segmentation into the scene, named ``"Queue 3/12: <name>"``,
and removes the previously loaded queue case, so stepping never piles up nodes. No widgets, no dialogs.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import slicer

from MedAIExtension.batch.inputs import DICOMWEB_PREFIX
from MedAIExtension.batch.records import RETRIEVED_INPUT_DIR
from MedAIExtension.errors import InputError
from MedAIExtension.segmentation.output_folder import SEGMENTATION_FILES, find_segmentation_file, output_labels

__all__ = ["QUEUE_ATTRIBUTE", "AnnotationQueueMixin"]

#: Node attribute marking the nodes of the loaded queue case (value: the study's queue key).
QUEUE_ATTRIBUTE = "MedAI.queueKey"


def _study_name(source: str) -> str:
    """A short display name for a study: the file name without its volume extension, or the folder name."""
    name = Path(source.rstrip("/\\")).name or source
    for suffix in (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


class AnnotationQueueMixin:
    """Queue stepping for a logic that has a ``scene`` (the MRML scene the cases are loaded into)."""

    scene: Any
    _queueRows: list[dict[str, str]]
    _queueIndex: int
    _queueNodes: tuple[Any, ...]

    def openQueue(self, path: str | Path) -> int:
        """Read ``queue.csv`` (rank order) and return how many studies it holds; nothing is loaded yet.

        Raises:
            InputError: the file is missing, is not an annotation queue, or holds no study.
        """
        from MedAIExtension.batch.annotation_queue import read_annotation_queue

        try:
            rows = read_annotation_queue(path)
        except (ValueError, KeyError, UnicodeDecodeError, csv.Error) as exc:  # e.g. a rank that is not a number
            raise InputError(
                f"{path} is not a readable annotation queue ({exc}). Open the queue.csv that medai batch wrote."
            ) from None
        if not rows:
            raise InputError(f"The annotation queue {path} holds no study. Run medai batch with finished studies.")
        base = Path(path).parent
        self._queueRows = [{**row, "_base": str(base)} for row in rows]
        self._queueIndex = -1
        return len(rows)

    def queuePosition(self) -> tuple[int, int]:
        """``(index, total)`` of the loaded queue case (index from 0; -1 before the first is loaded)."""
        rows = getattr(self, "_queueRows", [])
        return (getattr(self, "_queueIndex", -1) if rows else -1), len(rows)

    def loadQueueItem(self, index: int) -> tuple[Any, Any]:
        """Load study ``index`` (from 0) of the open queue: returns ``(volumeNode, segmentationNode)``.

        The previous queue case's nodes are removed only once the new case loaded, so an error leaves it in place.

        Raises:
            InputError: no queue is open, ``index`` is out of range, or the study's files are missing or unreadable.
        """
        from MedAIExtension.io import load_image, read_volume_file
        from MedAIExtension.mrml import image_to_volume_node, labelmap_to_segmentation_node

        rows = getattr(self, "_queueRows", [])
        if not rows:
            raise InputError("No annotation queue is open. Open the queue.csv that medai batch wrote first.")
        if not 0 <= index < len(rows):
            raise InputError(f"The annotation queue has studies 1 to {len(rows)}; there is no study {index + 1}.")
        row = rows[index]
        outputDir = self._resolve(row["output_dir"], row)
        source = self._studyInput(row, outputDir, index)
        title = f"Queue {index + 1}/{len(rows)}: {_study_name(row['source'])}"
        segmentationFile = find_segmentation_file(outputDir)
        if segmentationFile is None:
            raise InputError(
                f"Study {index + 1} of the queue ({row['key']}) has no segmentation in {outputDir} (expected one of "
                f"{', '.join(SEGMENTATION_FILES)}). Run medai segment on {row['source']} again."
            )
        image = load_image(source)  # raises InputError for a missing or unreadable study
        newNodes: list[Any] = []
        try:
            volume = image_to_volume_node(self.scene, image, title)
            newNodes.append(volume)
            if segmentationFile.name.endswith(".seg.nrrd"):
                segmentation = self._readSegNrrd(segmentationFile, f"{title} segmentation", volume)
            else:
                labelmap = read_volume_file(segmentationFile)
                labels = output_labels(outputDir, labelmap)
                segmentation = labelmap_to_segmentation_node(
                    self.scene, labelmap, labels, f"{title} segmentation", volume
                )
            newNodes.append(segmentation)
        except BaseException:
            for node in newNodes:
                self._removeNode(node)
            raise
        for node in newNodes:
            node.SetAttribute(QUEUE_ATTRIBUTE, row["key"])
        self._removeQueueNodes()
        self._queueNodes, self._queueIndex = (volume, segmentation), index
        return volume, segmentation

    def nextInQueue(self) -> tuple[Any, Any]:
        """Load the next study of the queue (the first, before any is loaded)."""
        index, total = self.queuePosition()
        if total and index + 1 >= total:
            raise InputError(f"This is the last study of the annotation queue ({total} of {total}).")
        return self.loadQueueItem(index + 1)

    def previousInQueue(self) -> tuple[Any, Any]:
        """Load the previous study of the queue."""
        index, total = self.queuePosition()
        if total and index <= 0:
            raise InputError("This is the first study of the annotation queue; there is no previous one.")
        return self.loadQueueItem(index - 1)

    def _studyInput(self, row: dict[str, str], outputDir: Path, index: int) -> Path:
        """Where the study's image is: its input path, or for a DICOMweb study the series kept in its folder."""
        if not row["source"].startswith(DICOMWEB_PREFIX):
            return self._resolve(row["source"], row)
        kept = outputDir / RETRIEVED_INPUT_DIR
        if not kept.is_dir():
            raise InputError(
                f"Study {index + 1} of the queue ({row['key']}) is a series on a DICOMweb server, and its folder "
                f"{outputDir} does not hold a copy. Run medai batch with --annotation-queue, which keeps one."
            )
        return kept

    @staticmethod
    def _resolve(value: str, row: dict[str, str]) -> Path:
        """A path of the queue: absolute as written, or relative to the folder of queue.csv."""
        path = Path(value)
        return path if path.is_absolute() else Path(row["_base"]) / path

    def _removeQueueNodes(self) -> None:
        for node in getattr(self, "_queueNodes", ()):
            self._removeNode(node)
        self._queueNodes = ()

    def _removeNode(self, node: Any) -> None:
        """Remove a queue node with its display and storage nodes (MRML leaves those behind otherwise)."""
        if node.GetScene() is not self.scene:
            return
        extra = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        extra += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
        self.scene.RemoveNode(node)
        for other in extra:
            if other is not None and other.GetScene() is self.scene:
                self.scene.RemoveNode(other)

    def _readSegNrrd(self, path: Path, name: str, volume: Any) -> Any:
        """A ``.seg.nrrd`` read by MRML's own segmentation storage node (names, colours, terminology kept)."""
        node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        storage = slicer.vtkMRMLSegmentationStorageNode()  # not added: the case is not saved back by accident
        storage.SetFileName(str(path))
        if not storage.ReadData(node) or node.GetSegmentation().GetNumberOfSegments() == 0:
            self._removeNode(node)
            raise InputError(f"Could not read the segmentation {path}. Run medai segment on the study again.")
        node.SetName(name)  # reading names the node after the file
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        return node
