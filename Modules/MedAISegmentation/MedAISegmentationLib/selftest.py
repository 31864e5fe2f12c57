"""The in-Slicer self-test of MedAI Segmentation (run by the module's Test class, "Reload and Test" and CTest)."""

from __future__ import annotations

import time
from typing import Any

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from MedAISegmentationLib.logic import SegmentationLogic

__all__ = ["SegmentationSelfTest"]


class SegmentationSelfTest(ScriptedLoadableModuleTest):
    """Runs the first catalogue model on a small generated chest phantom through the real worker process."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        for test in (self.test_SegmentPhantom, self.test_CancelStopsWorker):
            self.setUp()
            test()

    def _phantomAndModel(self) -> tuple[Any, Any]:
        from MedAIExtension.models.catalog import load_catalog
        from MedAIExtension.mrml import image_to_volume_node
        from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom

        phantom = generate_chest_phantom(PhantomSpec(size_ijk=(96, 96, 48), spacing=(3.0, 3.0, 4.0)))
        catalog = load_catalog()
        entries = [e for e in (catalog.get(name) for name in catalog.names()) if e.task == "segmentation"]
        self.assertTrue(entries, "the model catalogue has no segmentation model: nothing to test")
        return image_to_volume_node(slicer.mrmlScene, phantom.ct, "MedAI phantom"), entries[0]

    def test_SegmentPhantom(self) -> None:
        volume, entry = self._phantomAndModel()
        job = SegmentationLogic().run(volume, entry.name, "cpu")
        self.assertEqual(job.segmentationNode.GetSegmentation().GetNumberOfSegments(), len(entry.labels))
        table = job.tableNode
        self.assertEqual(table.GetNumberOfRows(), len(entry.labels))
        self.assertGreater(sum(int(table.GetCellText(row, 2)) for row in range(table.GetNumberOfRows())), 0)
        self.assertFalse(job.workDir.exists(), "temporary files were left behind")

    def test_CancelStopsWorker(self) -> None:
        volume, entry = self._phantomAndModel()
        logic = SegmentationLogic()
        job = logic.start(volume, entry.name, "cpu")
        logic.cancel(job)
        deadline = time.time() + 30
        while not job.finished and time.time() < deadline:
            logic.poll(job)
            time.sleep(0.1)
        self.assertTrue(job.finished and job.cancelled and not job.error and job.segmentationNode is None)
