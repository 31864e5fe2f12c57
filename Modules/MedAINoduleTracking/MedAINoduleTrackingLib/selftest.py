"""The in-Slicer self-test of MedAI Nodule Tracking (run by the module's Test class, "Reload and Test" and CTest)."""

from __future__ import annotations

import time
from typing import Any

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from MedAINoduleTrackingLib.logic import TrackingLogic

__all__ = ["TrackingSelfTest"]


class TrackingSelfTest(ScriptedLoadableModuleTest):
    """Tracks a small generated phantom pair (grown, stable and new nodules) through the real worker process."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        for test in (self.test_TrackPhantomPair, self.test_CancelStopsWorker):
            self.setUp()
            test()

    def _phantomPair(self) -> tuple[Any, Any, dict[str, Any]]:
        from MedAIExtension.mrml import image_to_volume_node
        from MedAIExtension.phantom import NoduleSpec, PhantomSpec
        from MedAIExtension.phantom.followup import followup_spec, generate_phantom_pair

        right = NoduleSpec(12.0, lung="right", position=(0.3, 0.2, 0.3))
        left = NoduleSpec(10.0, lung="left", position=(0.35, -0.2, -0.3))
        spec = PhantomSpec(size_ijk=(192, 192, 128), spacing=(1.8, 1.8, 2.5), seed=11, nodules=(right, left))
        new = (NoduleSpec(9.0, lung="right", position=(0.3, -0.3, -0.45)),)
        pair = generate_phantom_pair(followup_spec(spec, (2.0, 1.0), (0, 0, 3), (4, -3, 0), new), interval_days=120)
        baseline = image_to_volume_node(slicer.mrmlScene, pair.baseline.ct, "Baseline phantom")
        followup = image_to_volume_node(slicer.mrmlScene, pair.followup.ct, "Follow-up phantom")
        return baseline, followup, pair.truth

    def test_TrackPhantomPair(self) -> None:
        baseline, followup, truth = self._phantomPair()
        logic = TrackingLogic()
        job = logic.run(baseline, followup, None, "cpu", intervalDays=truth["interval_days"], timeoutSeconds=900)
        self.assertEqual(job.nodes.table.GetNumberOfRows(), len(truth["nodules"]))
        self.assertEqual(sorted(r["status"] for r in job.nodes.rows), sorted(n["status"] for n in truth["nodules"]))
        self.assertIsNotNone(logic.noduleLocation(job.nodes, 0, followup))
        logic.showFollowupRegistered(job.nodes, followup, True)
        self.assertIs(followup.GetParentTransformNode(), job.nodes.transform)
        self.assertFalse((job.workDir / "inputs").exists(), "the staged inputs were left behind")

    def test_CancelStopsWorker(self) -> None:
        baseline, followup, _ = self._phantomPair()
        logic = TrackingLogic()
        job = logic.start(baseline, followup, None, "cpu", intervalDays=90)
        logic.cancel(job)
        deadline = time.time() + 30
        while not job.finished and time.time() < deadline:
            logic.poll(job)
            time.sleep(0.1)
        self.assertTrue(job.finished and job.cancelled and not job.error and job.nodes is None)
        self.assertFalse(job.workDir.exists(), "temporary files were left behind")
