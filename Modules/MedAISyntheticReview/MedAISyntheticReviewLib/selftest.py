"""The in-Slicer self-test of MedAI Synthetic Review (run by the module's Test class, "Reload and Test" and CTest)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from MedAISyntheticReviewLib.jobs import ReviewJobLogic
from MedAISyntheticReviewLib.panels import SIDE_BY_SIDE

__all__ = ["SyntheticReviewSelfTest"]


class SyntheticReviewSelfTest(ScriptedLoadableModuleTest):
    """Builds a small phantom project, grades it, runs a blinded 2+2 session and checks its statistics, and runs the
    memorization check in the worker process (Cancel kills it and saves nothing)."""

    def runTest(self) -> None:
        slicer.mrmlScene.Clear()
        self.test_GradeAndBlindedSession()

    def test_GradeAndBlindedSession(self) -> None:
        logic = ReviewJobLogic()
        with tempfile.TemporaryDirectory() as folder:
            info = logic.createDemoProject(folder, realCount=2, lesionsPerImage=1, sizeIjk=(48, 48, 32))
            self.assertEqual(info["images"], {"synthetic": 2, "real": 2})
            for record in logic.syntheticImages():
                synthetic, reference = logic.loadPair(record.id)
                self.assertIsNotNone(reference, "a lesion-inserted image must show its parent")
                self.assertEqual(logic.showInViews({"Red": synthetic, "Yellow": reference}, SIDE_BY_SIDE), 2)
                logic.grade(record.id, "tester", record.id % 2 == 0, 4, [logic.artifacts()[0]], "self-test", 1.0)
            self.assertIsNone(logic.nextToGrade("tester"))
            session = logic.startBlindSession("tester", perClass=2, seed=1)
            truths = []
            while True:
                trial, node = logic.loadTrial(session)
                if trial is None:
                    break
                self.assertEqual(node.GetName(), f"Case {trial.index + 1}")
                self.assertFalse(node.GetAttributeNames(), "a blinded case must carry no attributes")
                truths.append(trial.is_synthetic)
                logic.answerTrial(session, trial.index, True, 1 + trial.index, 2.0)  # "synthetic" every time
            self.assertEqual(sorted(truths), [False, False, True, True])
            pooled = logic.readerStudy()["pooled"]
            stats = (pooled["n"], pooled["accuracy"], pooled["sensitivity"], pooled["specificity"])
            self.assertEqual(stats, (4, 0.5, 1.0, 0.0))
            self.assertIn("accuracy 0.500", logic.readerStudyText())
            cancelled = logic.startTask("memorization")
            logic.cancel(cancelled)
            while not cancelled.finished:
                logic.poll(cancelled)
                time.sleep(0.05)
            self.assertTrue(cancelled.cancelled and not cancelled.error)
            self.assertEqual(logic.memorizationText(), "Memorization check not run yet.")
            job = logic.runTask("memorization", timeoutSeconds=600)
            self.assertEqual(len(job.result["matches"]), 2)
            self.assertIn("Memorization: ", logic.memorizationText())
            files = logic.export(Path(folder) / "export")
            self.assertEqual(len(files["manifest_csv"].read_text().splitlines()), 1 + len(logic.project.accepted()))
            logic.closeProject()
