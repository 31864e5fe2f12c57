"""MedAI Nodule Tracking: a thin Slicer shell over ``MedAIExtension.tracking``, run in a child process
(``python -m MedAIExtension.worker track``) that a QTimer polls, so Slicer stays responsive and Track turns into Cancel.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Annotated, Any

import qt
import slicer
import vtk
from MedAINoduleTrackingLib import InputError, MedAIError, TrackingJob, TrackingLogic, ensureDependencies
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

logger = logging.getLogger(__name__)


class MedAINoduleTracking(ScriptedLoadableModule):
    """Module metadata shown by Slicer."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedAI Nodule Tracking"
        self.parent.categories = ["MedAI"]
        self.parent.dependencies = ["MedAISegmentation"]  # shares its dependency installer and worker set-up
        self.parent.contributors = ["MedAI contributors"]
        self.parent.helpText = (
            "Follows lung nodules from a baseline to a follow-up chest CT: volume change, doubling time and Lung-RADS. "
            "Click a row to jump to the nodule. Series from the DICOM database also get DICOM SEG + SR to export."
        )
        self.parent.acknowledgementText = "Built on 3D Slicer, SimpleITK, ONNX Runtime and highdicom."


@parameterNodeWrapper
class MedAINoduleTrackingParameterNode:
    """GUI state, saved with the scene; the .ui binds its widgets by ``SlicerParameterName``."""

    baselineVolume: vtkMRMLScalarVolumeNode
    followupVolume: vtkMRMLScalarVolumeNode
    model: str = "chest-ct-lung-nodule"  # "" = classical detector only
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    deformable: bool = False
    force: bool = False
    intervalDays: Annotated[float, WithinRange(0.0, 36500.0)] = 0.0  # 0 = from the DICOM study dates
    showRegistered: bool = False


class MedAINoduleTrackingLogic(TrackingLogic):
    """The module's logic (see MedAINoduleTrackingLib.logic) with its typed parameter node."""

    def getParameterNode(self) -> MedAINoduleTrackingParameterNode:
        return MedAINoduleTrackingParameterNode(super().getParameterNode())


class MedAINoduleTrackingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node, runs or cancels a job, shows the table and jumps to nodules."""

    def __init__(self, parent: Any = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: MedAINoduleTrackingLogic | None = None
        self._parameterNode: MedAINoduleTrackingParameterNode | None = None
        self._guiTag: Any = None
        self._job: TrackingJob | None = None
        self._result: TrackingJob | None = None  # the last finished run, whose nodes the table shows
        self._modelNames: list[str] = [""]

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedAINoduleTracking.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedAINoduleTrackingLogic()
        self.ui.progressBar.hide()
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._onPoll)
        self.ui.applyButton.clicked.connect(self.onApply)
        self.ui.exportDicomButton.clicked.connect(self.onExportDicom)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self._onModelChanged)
        self.ui.showRegisteredCheckBox.connect("toggled(bool)", self._onShowRegistered)
        self.ui.resultsTableView.connect("clicked(QModelIndex)", self._onTableClicked)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self._loadModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelJob()
        self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._disconnectGui()  # keep the node: a running job still reports into it

    def onSceneStartClose(self, caller: Any, event: Any) -> None:
        self._cancelJob()
        self._result = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller: Any, event: Any) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        node = self._parameterNode
        if not node.baselineVolume or not node.followupVolume:
            node.baselineVolume, node.followupVolume = self.logic.defaultVolumes(
                node.baselineVolume, node.followupVolume
            )
        if len(self._modelNames) > 1 and node.model not in self._modelNames:  # else: the catalogue is not loaded yet
            node.model = self._modelNames[-1]

    def _disconnectGui(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._guiTag = None

    def setParameterNode(self, parameterNode: MedAINoduleTrackingParameterNode | None) -> None:
        self._disconnectGui()
        self._parameterNode = parameterNode
        if parameterNode:
            self._guiTag = parameterNode.connectGui(self.ui)
            self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
            self._updateGui()

    def _loadModels(self) -> None:
        """Offer 'classical detector only' and each catalogue model with a nodule label."""
        try:
            models = TrackingLogic.noduleModels()
        except (MedAIError, ImportError) as exc:  # packages that the first run installs may be missing
            models = []
            self.ui.statusLabel.text = f"Model catalogue not loaded yet: {exc}"
        self._modelNames = [""] + [name for name, _ in models]
        wasBlocked = self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.clear()
        self.ui.modelComboBox.addItems(["Classical detector only (no model)"] + [title for _, title in models])
        self.ui.modelComboBox.blockSignals(wasBlocked)

    def _onModelChanged(self, index: int) -> None:
        if self._parameterNode and 0 <= index < len(self._modelNames):
            self._parameterNode.model = self._modelNames[index]

    def _updateGui(self, caller: Any = None, event: Any = None) -> None:
        node, running, result = self._parameterNode, self._job is not None, self._result
        if node and node.model in self._modelNames:
            self.ui.modelComboBox.currentIndex = self._modelNames.index(node.model)
        self.ui.deviceComboBox.enabled = bool(node and node.model)
        self.ui.applyButton.text = "Cancel" if running else "Track nodules"
        self.ui.applyButton.enabled = running or bool(node and node.baselineVolume and node.followupVolume)
        self.ui.inputsCollapsibleButton.enabled = self.ui.optionsCollapsibleButton.enabled = not running
        self.ui.exportDicomButton.enabled = not running and bool(result and result.nodes)
        self.ui.showRegisteredCheckBox.enabled = bool(result and result.nodes and result.nodes.transform)
        self.ui.resultsTableView.setMRMLTableNode(result.nodes.table if result and result.nodes else None)

    @contextlib.contextmanager
    def _showErrors(self, what: str):
        """Show a MedAIError by its message (it names the fix); anything else also goes to the log."""
        try:
            yield
        except Exception as exc:
            if not isinstance(exc, MedAIError):
                logger.exception("%s failed", what)
            self.ui.statusLabel.text = f"{what} failed."
            slicer.util.errorDisplay(str(exc), windowTitle=f"MedAI - {what}")

    def onApply(self) -> None:
        if self._job is not None:
            self._cancelJob()
            self.ui.statusLabel.text = "Cancelling…"
            return
        with self._showErrors("Nodule tracking"):
            if not ensureDependencies():
                self.ui.statusLabel.text = "Python packages are missing; nothing was run."
                return
            node = self._parameterNode
            if len(self._modelNames) == 1:
                self._loadModels()
            if node.model and node.model not in self._modelNames:
                raise InputError(f"Model '{node.model}' is not in the catalogue; choose another one.")
            self._job = self.logic.startFromParameters(node)
            self.ui.progressBar.value = 0
            self.ui.progressBar.show()
            self.ui.statusLabel.text = "Starting…"
            self._timer.start()
        self._updateGui()

    def _onPoll(self) -> None:
        job = self._job
        for event in self.logic.poll(job):
            if event.kind == "progress":
                self.ui.progressBar.value = round(100 * (event.fraction or 0.0))
                self.ui.statusLabel.text = event.message or self.ui.statusLabel.text
            elif event.kind == "log":
                logger.info("worker: %s", event.message)
        if job.finished:
            self._finish(job)

    def _finish(self, job: TrackingJob) -> None:
        self._timer.stop()
        self._job = None
        self.ui.progressBar.hide()
        if job.error:
            self.ui.statusLabel.text = "Nodule tracking failed."
            slicer.util.errorDisplay(job.error, windowTitle="MedAI - Nodule tracking")
        elif job.cancelled:
            self.ui.statusLabel.text = "Cancelled; nothing was changed."
        else:
            self._result = job
            self._onShowRegistered(bool(self._parameterNode and self._parameterNode.showRegistered))
            slicer.util.setSliceViewerLayers(background=job.baselineVolume, fit=True)
            lines = [f"{len(job.nodes.rows)} nodules tracked in {time.time() - job.startTime:.1f} s."]
            lines += [f"⚠ {warning}" for warning in job.result.get("warnings", [])]
            self.ui.statusLabel.text = "\n".join([*lines, f"Report: {job.result.get('report', job.outputDir)}"])
        self._updateGui()

    def _cancelJob(self) -> None:
        if self._job is not None:
            self.logic.cancel(self._job)

    def _onShowRegistered(self, show: bool) -> None:
        if self._result is not None and self._result.nodes is not None:
            self.logic.showFollowupRegistered(self._result.nodes, self._result.followupVolume, show)

    def _onTableClicked(self, index: Any) -> None:
        """Centre the slice views on the nodule of the clicked row (baseline position; new nodules: follow-up)."""
        row = self.ui.resultsTableView.sortFilterProxyModel().mapToSource(index).row()
        location = self.logic.clickedNoduleLocation(self._result, row)
        if location is not None:
            slicer.modules.markups.logic().JumpSlicesToLocation(*location, True)

    def onExportDicom(self) -> None:
        with self._showErrors("DICOM SR/SEG export"), slicer.util.WaitCursor():
            paths = self.logic.exportDicom(self._result.nodes.table if self._result else None)
            self.ui.statusLabel.text = f"Added {len(paths)} DICOM objects (SEG, SR) to the DICOM database."


class MedAINoduleTrackingTest(ScriptedLoadableModuleTest):
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
        logic = MedAINoduleTrackingLogic()
        job = logic.run(baseline, followup, None, "cpu", intervalDays=truth["interval_days"], timeoutSeconds=900)
        self.assertEqual(job.nodes.table.GetNumberOfRows(), len(truth["nodules"]))
        self.assertEqual(sorted(r["status"] for r in job.nodes.rows), sorted(n["status"] for n in truth["nodules"]))
        self.assertIsNotNone(logic.noduleLocation(job.nodes, 0, followup))
        logic.showFollowupRegistered(job.nodes, followup, True)
        self.assertIs(followup.GetParentTransformNode(), job.nodes.transform)
        self.assertFalse((job.workDir / "inputs").exists(), "the staged inputs were left behind")

    def test_CancelStopsWorker(self) -> None:
        baseline, followup, _ = self._phantomPair()
        logic = MedAINoduleTrackingLogic()
        job = logic.start(baseline, followup, None, "cpu", intervalDays=90)
        logic.cancel(job)
        deadline = time.time() + 30
        while not job.finished and time.time() < deadline:
            logic.poll(job)
            time.sleep(0.1)
        self.assertTrue(job.finished and job.cancelled and not job.error and job.nodes is None)
        self.assertFalse(job.workDir.exists(), "temporary files were left behind")
