"""MedAI Segmentation: a thin Slicer shell over ``MedAIExtension``.

The model runs in a child process (``python -m MedAIExtension.worker``) that a QTimer polls, so Slicer stays
responsive and Apply turns into Cancel. All image, model, MRML and DICOM work is done by ``MedAIExtension``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Annotated, Any

import qt
import slicer
import vtk
from MedAISegmentationLib import (
    STATISTICS_ROLE,
    InputError,
    MedAIError,
    SegmentationJob,
    SegmentationLogic,
    ensureDependencies,
)
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

logger = logging.getLogger(__name__)


class MedAISegmentation(ScriptedLoadableModule):
    """Module metadata shown by Slicer."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedAI Segmentation"
        self.parent.categories = ["MedAI"]
        self.parent.dependencies = []
        self.parent.contributors = ["MedAI contributors"]
        self.parent.helpText = (
            "Segments a CT/MR volume with a model of the MedAI catalogue. The model runs in a separate process, so "
            "Slicer stays responsive; Apply becomes Cancel while it runs. The result is a segmentation with coded "
            "terminology plus a statistics table; <i>Export DICOM SEG</i> adds it to the DICOM database. Missing "
            "Python packages are installed on first use, after you confirm."
        )
        self.parent.acknowledgementText = "Built on 3D Slicer, SlicerPyTorch, MONAI, ONNX Runtime and highdicom."


@parameterNodeWrapper
class MedAISegmentationParameterNode:
    """GUI state, saved with the scene; the .ui binds its widgets by ``SlicerParameterName``."""

    inputVolume: vtkMRMLScalarVolumeNode
    model: str = ""
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    outputSegmentation: vtkMRMLSegmentationNode


class MedAISegmentationLogic(SegmentationLogic):
    """The module's logic (see MedAISegmentationLib.logic) with its typed parameter node."""

    def getParameterNode(self) -> MedAISegmentationParameterNode:
        return MedAISegmentationParameterNode(super().getParameterNode())


class MedAISegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node, starts or cancels a job and shows its progress and result."""

    def __init__(self, parent: Any = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: MedAISegmentationLogic | None = None
        self._parameterNode: MedAISegmentationParameterNode | None = None
        self._guiTag: Any = None
        self._job: SegmentationJob | None = None
        self._modelNames: list[str] = []

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedAISegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedAISegmentationLogic()
        self.ui.progressBar.hide()
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._onPoll)
        self.ui.applyButton.clicked.connect(self.onApply)
        self.ui.exportDicomSegButton.clicked.connect(self.onExportDicomSeg)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self._onModelChanged)
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
        self.setParameterNode(None)

    def onSceneEndClose(self, caller: Any, event: Any) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if self._modelNames and self._parameterNode.model not in self._modelNames:
            self._parameterNode.model = self._modelNames[0]

    def _disconnectGui(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._guiTag = None

    def setParameterNode(self, parameterNode: MedAISegmentationParameterNode | None) -> None:
        self._disconnectGui()
        self._parameterNode = parameterNode
        if parameterNode:
            self._guiTag = parameterNode.connectGui(self.ui)
            self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
            self._updateGui()

    def _loadModels(self) -> None:
        """Fill the model list from the catalogue (which may need packages that the first Apply installs)."""
        try:
            from MedAIExtension.models.catalog import load_catalog

            catalog = load_catalog()
            entries = [e for e in (catalog.get(name) for name in catalog.names()) if e.task == "segmentation"]
        except (MedAIError, ImportError) as exc:
            entries = []
            self.ui.statusLabel.text = f"Model catalogue not loaded yet: {exc}"
        self._modelNames = [entry.name for entry in entries]
        wasBlocked = self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.clear()
        for entry in entries:
            self.ui.modelComboBox.addItem(f"{entry.title} ({entry.version})")
        self.ui.modelComboBox.blockSignals(wasBlocked)
        if self._parameterNode and self._modelNames and self._parameterNode.model not in self._modelNames:
            self._parameterNode.model = self._modelNames[0]

    def _onModelChanged(self, index: int) -> None:
        if self._parameterNode and 0 <= index < len(self._modelNames):
            self._parameterNode.model = self._modelNames[index]

    def _updateGui(self, caller: Any = None, event: Any = None) -> None:
        node, running = self._parameterNode, self._job is not None
        if node and node.model in self._modelNames:
            self.ui.modelComboBox.currentIndex = self._modelNames.index(node.model)
        self.ui.applyButton.text = "Cancel" if running else "Apply"
        self.ui.applyButton.enabled = running or bool(node and node.inputVolume)
        self.ui.exportDicomSegButton.enabled = not running and bool(node and node.outputSegmentation)
        self.ui.inputsCollapsibleButton.enabled = self.ui.outputsCollapsibleButton.enabled = not running
        output = node.outputSegmentation if node else None
        self.ui.statisticsTableView.setMRMLTableNode(output.GetNodeReference(STATISTICS_ROLE) if output else None)

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
        with self._showErrors("Segmentation"):
            if not ensureDependencies():
                self.ui.statusLabel.text = "Python packages are missing; nothing was run."
                return
            if not self._modelNames:
                self._loadModels()
            node = self._parameterNode
            if node.model not in self._modelNames:
                raise InputError("No segmentation model is available; check Resources/Models/catalog.json.")
            self._job = self.logic.start(node.inputVolume, node.model, node.device, node.outputSegmentation)
            self.ui.progressBar.value = 0
            self.ui.progressBar.show()
            self.ui.statusLabel.text = "Starting the model…"
            self._timer.start()
        self._updateGui()

    def _onPoll(self) -> None:
        job = self._job
        try:
            events = self.logic.poll(job)
        except Exception as exc:  # the worker's output cannot be read: stop it and report
            logger.exception("Polling the MedAI worker failed")
            self.logic.cancel(job)
            job.finished, job.error, events = True, f"Lost contact with the model process: {exc}", []
        for event in events:
            if event.kind == "progress":
                self.ui.progressBar.value = round(100 * (event.fraction or 0.0))
                self.ui.statusLabel.text = event.message or self.ui.statusLabel.text
            elif event.kind == "log":
                logger.info("worker: %s", event.message)
        if job.finished:
            self._finish(job)

    def _finish(self, job: SegmentationJob) -> None:
        self._timer.stop()
        self._job = None
        self.ui.progressBar.hide()
        if job.error:
            self.ui.statusLabel.text = "Segmentation failed."
            slicer.util.errorDisplay(job.error, windowTitle="MedAI - Segmentation")
        elif job.cancelled:
            self.ui.statusLabel.text = "Cancelled; nothing was changed."
        else:
            if self._parameterNode:
                self._parameterNode.outputSegmentation = job.segmentationNode
            self.ui.statusLabel.text = f"Done in {time.time() - job.startTime:.1f} s."
        self._updateGui()

    def _cancelJob(self) -> None:
        if self._job is not None:
            self.logic.cancel(self._job)

    def onExportDicomSeg(self) -> None:
        with self._showErrors("DICOM SEG export"), slicer.util.WaitCursor():
            path = self.logic.exportDicomSeg(self._parameterNode.outputSegmentation, self._parameterNode.inputVolume)
            self.ui.statusLabel.text = f"DICOM SEG written to {path} and added to the DICOM database."


class MedAISegmentationTest(ScriptedLoadableModuleTest):
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
        job = MedAISegmentationLogic().run(volume, entry.name, "cpu")
        self.assertEqual(job.segmentationNode.GetSegmentation().GetNumberOfSegments(), len(entry.labels))
        table = job.tableNode
        self.assertEqual(table.GetNumberOfRows(), len(entry.labels))
        self.assertGreater(sum(int(table.GetCellText(row, 2)) for row in range(table.GetNumberOfRows())), 0)
        self.assertFalse(job.workDir.exists(), "temporary files were left behind")

    def test_CancelStopsWorker(self) -> None:
        volume, entry = self._phantomAndModel()
        logic = MedAISegmentationLogic()
        job = logic.start(volume, entry.name, "cpu")
        logic.cancel(job)
        deadline = time.time() + 30
        while not job.finished and time.time() < deadline:
            logic.poll(job)
            time.sleep(0.1)
        self.assertTrue(job.finished and job.cancelled and not job.error and job.segmentationNode is None)
