"""MedAI Synthetic Review: a thin Slicer shell over ``MedAIExtension.review`` (through MedAISyntheticReviewLib).

Grade synthetic images beside their reference, run a blinded reader study, compute metrics and export. Every grade
and answer is committed to the project file when given. Metrics and the memorization check run in Slicer's process
behind a cancellable progress dialog (see MedAISyntheticReviewLib.gui).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import qt
import slicer
from MedAISegmentationLib import MedAIError, ensureDependencies  # first: makes MedAIExtension importable
from MedAISyntheticReviewLib import ReviewLogic, gui
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

SIDE_BY_SIDE = slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView  # Red = synthetic, Yellow = reference


class MedAISyntheticReview(ScriptedLoadableModule):
    """Module metadata shown by Slicer."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedAI Synthetic Review"
        self.parent.categories = ["MedAI"]
        self.parent.dependencies = ["MedAISegmentation"]  # dependency installer, MedAIExtension on sys.path
        self.parent.contributors = ["MedAI contributors"]
        self.parent.helpText = (
            "Expert review of synthetic images: grade each beside its reference (keys A/R, 1-5, N), run a blinded "
            "reader study (keys Q/W, 1-5 confidence), compute realism metrics and a memorization check, export the "
            "accepted images and an HTML report. Projects are SQLite files shared with `medai review`."
        )
        self.parent.acknowledgementText = "Built on 3D Slicer, MONAI, scikit-image and SciPy."


@parameterNodeWrapper
class MedAISyntheticReviewParameterNode:
    """GUI state, saved with the scene; the .ui binds its widgets by ``SlicerParameterName``."""

    projectPath: Path
    reviewer: str = ""
    perClass: Annotated[int, WithinRange(1, 10000)] = 10
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0  # 0 = a new random order


class MedAISyntheticReviewLogic(ScriptedLoadableModuleLogic, ReviewLogic):
    """The module's logic (see MedAISyntheticReviewLib.logic) on the application scene, with its parameter node."""

    def __init__(self, scene: Any = None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        ReviewLogic.__init__(self, scene if scene is not None else slicer.mrmlScene)

    def getParameterNode(self) -> MedAISyntheticReviewParameterNode:
        return MedAISyntheticReviewParameterNode(super().getParameterNode())


class MedAISyntheticReviewWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Project, grading, blinded-study and report tabs; keyboard shortcuts while the module is shown."""

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        VTKObservationMixin.__init__(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedAISyntheticReview.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedAISyntheticReviewLogic()
        self._node = self._guiTag = self._imageId = self._session = self._trial = None
        self._images, self._checks, self._shownAt = [], [], time.time()
        self._connectParameterNode()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self._onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self._connectParameterNode)
        ui, logic = self.ui, self.logic
        for button, action in (
            (ui.openProjectButton, lambda: self._openProject(create=False)),
            (ui.createProjectButton, lambda: self._openProject(create=True)),
            (ui.previousButton, lambda: self._step(-1)),
            (ui.nextButton, self._saveAndNext),
            (ui.startSessionButton, lambda: self._startSession(resume=False)),
            (ui.resumeSessionButton, lambda: self._startSession(resume=True)),
            (ui.realButton, lambda: self._answer(False)),
            (ui.syntheticButton, lambda: self._answer(True)),
            (ui.metricsButton, lambda: self._report("Metrics", logic.runMetrics)),
            (ui.memorizationButton, lambda: self._report("Memorization", logic.runMemorization)),
            (ui.readerStudyButton, lambda: self._report("Reader study")),
            (ui.exportButton, self._export),
        ):
            button.clicked.connect(action)
        ui.imageComboBox.connect("currentIndexChanged(int)", self._showImage)
        keys = {"A": lambda: self._decide(True), "R": lambda: self._decide(False), "N": self._saveAndNext}
        keys.update({"Q": lambda: self._answer(False), "W": lambda: self._answer(True)})
        keys.update({str(n): (lambda n=n: self._score(n)) for n in range(1, 6)})
        self._shortcuts = gui.keyboardShortcuts(keys, slicer.util.mainWindow())
        self._updateProjectGui()

    def enter(self) -> None:
        gui.enableShortcuts(self._shortcuts, True)  # the keys act only while the module is shown

    def exit(self) -> None:
        gui.enableShortcuts(self._shortcuts, False)

    def cleanup(self) -> None:
        self.exit()
        self.removeObservers()
        self._onSceneStartClose()

    def _connectParameterNode(self, *_: Any) -> None:
        self._node = self.logic.getParameterNode()
        self._guiTag = self._node.connectGui(self.ui)

    def _onSceneStartClose(self, *_: Any) -> None:
        """The scene goes: close the project (every grade is already saved) and let go of the parameter node."""
        if self._node is not None:
            self._node.disconnectGui(self._guiTag)
        self._node = self._session = self._trial = self._imageId = None
        self.logic.closeProject()
        self._updateProjectGui()

    def _reviewer(self) -> str:
        name = self._node.reviewer.strip() if self._node else ""
        if not name:
            self.ui.reviewerLineEdit.setFocus()
            raise MedAIError("Enter your name as reviewer first: it is stored with every grade and answer.")
        return name

    # ---- project ---------------------------------------------------------------------------------------------------
    def _openProject(self, create: bool) -> None:
        with gui.showErrors("Open project"):
            path = str(self._node.projectPath or "")
            if path in ("", "."):
                raise MedAIError("Choose a project file first (or type the path of a new one and press Create new).")
            if create:
                self.logic.createProject(path, Path(path).stem)
            else:
                self.logic.openProject(path)
            self._session = self._trial = None
            self._updateProjectGui()

    def _updateProjectGui(self) -> None:
        info = self.logic.projectInfo() if self.logic.store else None
        counts = f"{info['images']['synthetic']} synthetic, {info['images']['real']} real images" if info else ""
        self.ui.projectInfoLabel.text = f"{info['name']}: {counts}, {info['grades']} grades." if info else "No project."
        self._checks = gui.replaceCheckBoxes(self.ui.artifactsGroupBox, self._checks, info["artifacts"] if info else [])
        self._images = self.logic.syntheticImages() if info else []
        reviewer = self._node.reviewer.strip() if self._node else ""
        following = self.logic.nextToGrade(reviewer) if reviewer and self._images else None
        index = next((i for i, r in enumerate(self._images) if following and r.id == following.id), 0)
        gui.fillCombo(self.ui.imageComboBox, [f"{r.id}: {Path(r.path).name}" for r in self._images], index)
        self.ui.tabWidget.enabled = info is not None
        self._showImage(index)

    # ---- grading ---------------------------------------------------------------------------------------------------
    def _step(self, delta: int) -> None:
        if self._images:
            self.ui.imageComboBox.currentIndex = (self.ui.imageComboBox.currentIndex + delta) % len(self._images)

    def _showImage(self, index: int) -> None:
        if not 0 <= index < len(self._images):
            return
        with gui.showErrors("Load image"):
            self._imageId = self._images[index].id
            synthetic, reference = self.logic.loadPair(self._imageId)
            self.logic.showInViews({"Red": synthetic, "Yellow": reference}, SIDE_BY_SIDE)
            slicer.util.resetSliceViews()
            self.ui.undecidedRadioButton.checked = True
            self.ui.realismSpinBox.value = 0
            self.ui.commentLineEdit.text = ""
            for check in self._checks:
                check.checked = False
            self.ui.gradeStatusLabel.text = "" if reference else "No reference (no parent, no memorization result)."
            self._shownAt = time.time()

    def _decide(self, accept: bool) -> None:
        if self.ui.tabWidget.currentIndex == 0:
            (self.ui.acceptRadioButton if accept else self.ui.rejectRadioButton).checked = True

    def _score(self, value: int) -> None:
        spin = {0: self.ui.realismSpinBox, 1: self.ui.confidenceSpinBox}.get(self.ui.tabWidget.currentIndex)
        if spin is not None:
            spin.value = value

    def _saveAndNext(self) -> None:
        if self.ui.tabWidget.currentIndex != 0 or self._imageId is None:
            return
        with gui.showErrors("Save grade"):
            accept = True if self.ui.acceptRadioButton.checked else False if self.ui.rejectRadioButton.checked else None
            flags = [check.text for check in self._checks if check.checked]
            seconds, reviewer = round(time.time() - self._shownAt, 1), self._reviewer()
            realism, comment = self.ui.realismSpinBox.value or None, self.ui.commentLineEdit.text
            self.logic.grade(self._imageId, reviewer, accept, realism, flags, comment, seconds)
            if self.logic.nextToGrade(reviewer):
                self._updateProjectGui()
                self.ui.gradeStatusLabel.text = "Saved."
            else:
                self._step(1)
                self.ui.gradeStatusLabel.text = "Saved. You have graded every image."

    # ---- blinded reader study --------------------------------------------------------------------------------------
    def _startSession(self, resume: bool) -> None:
        with gui.showErrors("Reader study"):
            reader = self._reviewer()
            if resume:
                self._session = self.logic.unfinishedSession(reader)
                if self._session is None:
                    raise MedAIError(f"{reader} has no unfinished session; start a new one.")
            else:
                self._session = self.logic.startBlindSession(reader, self._node.perClass, self._node.seed or None)
            self._nextTrial()

    def _nextTrial(self) -> None:
        self._trial, node = self.logic.loadTrial(self._session)
        if self._trial is None:
            self.ui.trialLabel.text = "Session complete. Thank you! See the statistics under Metrics and report."
            self._session = None
            return
        self.logic.showInViews({"Red": node}, slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView)
        slicer.util.resetSliceViews()
        answered, total = self.logic.sessionProgress(self._session)
        self.ui.trialLabel.text = f"{node.GetName()} ({answered + 1} of {total}): real (Q) or synthetic (W)?"
        self._shownAt = time.time()

    def _answer(self, saidSynthetic: bool) -> None:
        if self.ui.tabWidget.currentIndex != 1 or self._trial is None:
            return
        with gui.showErrors("Reader study"):
            seconds, confidence = round(time.time() - self._shownAt, 1), self.ui.confidenceSpinBox.value
            self.logic.answerTrial(self._session, self._trial.index, saidSynthetic, confidence, seconds)
            self._nextTrial()

    # ---- metrics and report ----------------------------------------------------------------------------------------
    def _report(self, what: str, run: Any = None) -> None:
        """Run a long step (metrics, memorization) behind a progress dialog, or the reader-study statistics."""
        with gui.showErrors(what):
            if run is None:
                self.ui.reportTextEdit.setPlainText(self.logic.readerStudyText())
            elif ensureDependencies() and not gui.runWithProgress(what, run):
                self.ui.reportTextEdit.setPlainText(f"{what} cancelled; nothing was saved.")
            else:  # finished (or packages declined): show what the project holds
                self.ui.reportTextEdit.setPlainText(f"{self.logic.metricsText()}\n\n{self.logic.memorizationText()}")

    def _export(self) -> None:
        with gui.showErrors("Export"):
            if not self.ui.exportDirLineEdit.currentPath:
                raise MedAIError("Choose an export folder first.")
            files = self.logic.export(self.ui.exportDirLineEdit.currentPath)
            self.ui.reportTextEdit.setPlainText("\n".join(f"{kind}: {path}" for kind, path in files.items()))
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(files["report"])))


class MedAISyntheticReviewTest(ScriptedLoadableModuleTest):
    """Builds a small phantom project, grades it, runs a blinded 2+2 session and checks its statistics."""

    def runTest(self) -> None:
        slicer.mrmlScene.Clear()
        self.test_GradeAndBlindedSession()

    def test_GradeAndBlindedSession(self) -> None:
        logic = MedAISyntheticReviewLogic()
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
            files = logic.export(Path(folder) / "export")
            self.assertEqual(len(files["manifest_csv"].read_text().splitlines()), 1 + len(logic.project.accepted()))
            logic.closeProject()
