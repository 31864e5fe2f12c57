"""The in-Slicer self-test of MedAI Explainability (run by the module's Test class, "Reload and Test" and CTest)."""

from __future__ import annotations

import time
from typing import Any

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from MedAIExplainabilityLib.logic import ExplainabilityLogic

__all__ = ["ExplainabilitySelfTest"]


class ExplainabilitySelfTest(ScriptedLoadableModuleTest):
    """Explains the shipped classifier on a generated phantom nodule patch through the real worker process."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        for test in (self.test_ExplainPhantomPatch, self.test_CancelStopsWorker):
            self.setUp()
            test()

    def _patchAndModel(self) -> tuple[Any, Any, Any, str]:
        from MedAIExtension.models.catalog import load_catalog
        from MedAIExtension.mrml import image_to_volume_node
        from MedAIExtension.phantom.patches import CLASS_NODULE, nodule_vessel_patches

        classifiers = [entry.name for entry in load_catalog().entries() if entry.is_classifier]
        patch = next(p for p in nodule_vessel_patches(seed=3, count=2) if p.label == CLASS_NODULE)
        volume = image_to_volume_node(slicer.mrmlScene, patch.ct, "MedAI phantom patch")
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "Nodule")
        roi.SetCenter(*patch.center_ras)
        roi.SetSize(30.0, 30.0, 30.0)
        self.assertTrue(classifiers, "the catalogue has no classifier to explain")
        return volume, roi, patch, classifiers[0]

    def test_ExplainPhantomPatch(self) -> None:
        volume, roi, patch, model = self._patchAndModel()
        logic = ExplainabilityLogic()
        method = "gradcam" if "gradcam" in logic.methodsFor(model) else "occlusion"
        job = logic.run(volume, model, method, target="1", roiNode=roi, device="cpu", timeoutSeconds=600)
        heat = slicer.util.arrayFromVolume(job.nodes.map)
        self.assertEqual(heat.shape, patch.ct.shape)
        self.assertGreater(heat[patch.object_mask].mean(), heat[~patch.object_mask].mean(), "the map misses the nodule")
        self.assertTrue(job.nodes.sanity_summary and "No sanity checks" not in job.nodes.sanity_summary)
        composites = slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode")
        self.assertTrue(all(c.GetForegroundVolumeID() == job.nodes.map.GetID() for c in composites))
        self.assertEqual(logic.setOverlayOpacity(0.8), len(composites))
        self.assertFalse((job.workDir / "inputs").exists(), "the staged input was left behind")

    def test_CancelStopsWorker(self) -> None:
        volume, roi, _, model = self._patchAndModel()
        logic = ExplainabilityLogic()
        job = logic.start(volume, model, "occlusion", roiNode=roi, device="cpu")
        logic.cancel(job)
        deadline = time.time() + 30
        while not job.finished and time.time() < deadline:
            logic.poll(job)
            time.sleep(0.1)
        self.assertTrue(job.finished and job.cancelled and not job.error and job.nodes is None)
        self.assertFalse(job.workDir.exists(), "temporary files were left behind")
