"""MedAI Synthetic Review: a thin Slicer shell over ``MedAIExtension.review`` (through MedAISyntheticReviewLib).

Grade synthetic images beside their reference, run a blinded reader study, compute metrics and export. Every grade
and answer is committed to the project file when given. Metrics and the memorization check run in a child process
(``python -m MedAIExtension.worker review``) that a QTimer polls; their button turns into Cancel meanwhile.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import qt
import slicer
from MedAICommonLib import MedAIError  # first: makes MedAIExtension importable
from MedAICommonLib.widget import JobWidgetMixin, showErrors
from MedAISyntheticReviewLib import gui
from MedAISyntheticReviewLib.jobs import ReviewJob, ReviewJobLogic
from MedAISyntheticReviewLib.panels import ReviewPanels
from MedAISyntheticReviewLib.selftest import SyntheticReviewSelfTest
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

#: The long steps: task, button, title.
TASKS = (("metrics", "metricsButton", "Metrics"), ("memorization", "memorizationButton", "Memorization"))


class MedAISyntheticReview(ScriptedLoadableModule):
    """Module metadata shown by Slicer."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedAI Synthetic Review"
        self.parent.categories = ["MedAI"]
        self.parent.dependencies = ["MedAICommon"]  # installer, worker jobs, MedAIExtension on sys.path
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


class MedAISyntheticReviewLogic(ReviewJobLogic):
    """The module's logic (see MedAISyntheticReviewLib.logic and .jobs) on the application scene, with its
    parameter node."""

    def getParameterNode(self) -> MedAISyntheticReviewParameterNode:
        return MedAISyntheticReviewParameterNode(super().getParameterNode())


class MedAISyntheticReviewWidget(JobWidgetMixin, ReviewPanels, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Project, grading, blinded-study and report tabs; keyboard shortcuts while the module is shown."""

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        VTKObservationMixin.__init__(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedAISyntheticReview.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedAISyntheticReviewLogic()
        self.setupJobWidget()
        self._imageId = self._session = self._trial = None
        self._images, self._checks, self._shownAt = [], [], time.time()
        ui = self.ui
        for button, action in (
            (ui.openProjectButton, lambda: self._openProject(create=False)),
            (ui.createProjectButton, lambda: self._openProject(create=True)),
            (ui.previousButton, lambda: self._step(-1)),
            (ui.nextButton, self._saveAndNext),
            (ui.startSessionButton, lambda: self._startSession(resume=False)),
            (ui.resumeSessionButton, lambda: self._startSession(resume=True)),
            (ui.realButton, lambda: self._answer(False)),
            (ui.syntheticButton, lambda: self._answer(True)),
            *((getattr(ui, name), lambda t=task, w=title: self._runTask(t, w)) for task, name, title in TASKS),
            (ui.readerStudyButton, self._readerStudy),
            (ui.exportButton, self._export),
        ):
            button.clicked.connect(action)
        ui.imageComboBox.connect("currentIndexChanged(int)", self._showImage)
        keys = {"A": lambda: self._decide(True), "R": lambda: self._decide(False), "N": self._saveAndNext}
        keys.update({"Q": lambda: self._answer(False), "W": lambda: self._answer(True)})
        keys.update({str(n): (lambda n=n: self._score(n)) for n in range(1, 6)})
        self._shortcuts = gui.keyboardShortcuts(keys, slicer.util.mainWindow())
        self.initializeParameterNode()
        self._updateProjectGui()

    def enter(self) -> None:
        super().enter()
        gui.enableShortcuts(self._shortcuts, True)  # the keys act only while the module is shown

    def exit(self) -> None:
        super().exit()
        gui.enableShortcuts(self._shortcuts, False)

    def cleanup(self) -> None:
        gui.enableShortcuts(self._shortcuts, False)
        super().cleanup()
        self.onSceneStartClose()

    def onSceneStartClose(self, caller: Any = None, event: Any = None) -> None:
        """The scene goes: stop a running step, close the project (every grade is already saved)."""
        super().onSceneStartClose(caller, event)
        self._session = self._trial = self._imageId = None
        self.logic.closeProject()
        self._updateProjectGui()

    # ---- project ---------------------------------------------------------------------------------------------------
    def _openProject(self, create: bool) -> None:
        with showErrors("Open project"):
            path = str(self._parameterNode.projectPath or "")
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
        reviewer = self._parameterNode.reviewer.strip() if self._parameterNode else ""
        following = self.logic.nextToGrade(reviewer) if reviewer and self._images else None
        index = next((i for i, r in enumerate(self._images) if following and r.id == following.id), 0)
        gui.fillCombo(self.ui.imageComboBox, [f"{r.id}: {Path(r.path).name}" for r in self._images], index)
        self.ui.tabWidget.enabled = info is not None
        self._showImage(index)

    # ---- metrics and report ----------------------------------------------------------------------------------------
    def _runTask(self, task: str, what: str) -> None:
        """Start a long step (metrics, memorization) in the worker, or cancel the running one."""
        self.startOrCancel(what, lambda: self.logic.startTask(task))

    def _updateGui(self, caller: Any = None, event: Any = None) -> None:
        job = self._job
        for task, name, title in TASKS:
            mine = job is not None and job.task == task
            getattr(self.ui, name).text = "Cancel" if mine else title
            getattr(self.ui, name).enabled = job is None or mine

    def onJobDone(self, job: ReviewJob) -> None:
        self.ui.statusLabel.text = f"{self._jobTitle} done in {job.seconds:.1f} s."
        self.ui.reportTextEdit.setPlainText(f"{self.logic.metricsText()}\n\n{self.logic.memorizationText()}")

    def onJobCancelled(self, job: ReviewJob) -> None:
        self.ui.statusLabel.text = ""
        self.ui.reportTextEdit.setPlainText(f"{self._jobTitle} cancelled; nothing was saved.")

    def _readerStudy(self) -> None:
        with showErrors("Reader study"):
            self.ui.reportTextEdit.setPlainText(self.logic.readerStudyText())

    def _export(self) -> None:
        with showErrors("Export"):
            if not self.ui.exportDirLineEdit.currentPath:
                raise MedAIError("Choose an export folder first.")
            warnings: list[str] = []
            files = self.logic.export(self.ui.exportDirLineEdit.currentPath, warn=warnings.append)
            lines = [f"warning: {message}" for message in warnings] + [f"{k}: {p}" for k, p in files.items()]
            self.ui.reportTextEdit.setPlainText("\n".join(lines))
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(files["report"])))


class MedAISyntheticReviewTest(SyntheticReviewSelfTest):
    """Builds a small phantom project, grades it, runs a blinded 2+2 session, checks its statistics and runs the
    memorization check in the worker (see MedAISyntheticReviewLib.selftest)."""
