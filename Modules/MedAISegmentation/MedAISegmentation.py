"""MedAI Segmentation: a thin Slicer shell over ``MedAIExtension``.

The model runs in a child process (``python -m MedAIExtension.worker``) that a QTimer polls, so Slicer stays
responsive and Apply turns into Cancel. All image, model, MRML and DICOM work is done by ``MedAIExtension``.
"""

from __future__ import annotations

from typing import Annotated, Any

import slicer
from MedAICommonLib.widget import JobWidgetMixin
from MedAISegmentationLib import (
    STATISTICS_ROLE,
    InputError,
    MedAIError,
    SegmentationJob,
    SegmentationLogic,
)
from MedAISegmentationLib.queue_panel import AnnotationQueuePanel
from MedAISegmentationLib.selftest import SegmentationSelfTest
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin


class MedAISegmentation(ScriptedLoadableModule):
    """Module metadata shown by Slicer."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedAI Segmentation"
        self.parent.categories = ["MedAI"]
        self.parent.dependencies = ["MedAICommon"]  # installer, worker job, staging
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


class MedAISegmentationWidget(AnnotationQueuePanel, JobWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node, starts or cancels a job and shows its progress and result."""

    def __init__(self, parent: Any = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: MedAISegmentationLogic | None = None
        self._modelNames: list[str] = []

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedAISegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedAISegmentationLogic()
        self.setupJobWidget()
        self.ui.applyButton.clicked.connect(self.onApply)
        self.ui.exportDicomSegButton.clicked.connect(self.onExportDicomSeg)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self._onModelChanged)
        self._loadModels()
        self._setupQueue()
        self.initializeParameterNode()

    def defaultParameters(self, node: MedAISegmentationParameterNode) -> None:
        if not node.inputVolume:
            node.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if self._modelNames and node.model not in self._modelNames:
            node.model = self._modelNames[0]

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
        if self._parameterNode:
            self.defaultParameters(self._parameterNode)

    def _onModelChanged(self, index: int) -> None:
        if self._parameterNode and 0 <= index < len(self._modelNames):
            self._parameterNode.model = self._modelNames[index]

    def _updateGui(self, caller: Any = None, event: Any = None) -> None:
        node, running = self._parameterNode, self.jobRunning
        if node and node.model in self._modelNames:
            self.ui.modelComboBox.currentIndex = self._modelNames.index(node.model)
        self.ui.applyButton.text = "Cancel" if running else "Apply"
        self.ui.applyButton.enabled = running or bool(node and node.inputVolume)
        self.ui.exportDicomSegButton.enabled = not running and bool(node and node.outputSegmentation)
        self.ui.inputsCollapsibleButton.enabled = self.ui.outputsCollapsibleButton.enabled = not running
        output = node.outputSegmentation if node else None
        self.ui.statisticsTableView.setMRMLTableNode(output.GetNodeReference(STATISTICS_ROLE) if output else None)

    def onApply(self) -> None:
        self.startOrCancel("Segmentation", self._start, "Starting the model…")

    def _start(self) -> SegmentationJob:
        if not self._modelNames:
            self._loadModels()
        node = self._parameterNode
        if node.model not in self._modelNames:
            raise InputError("No segmentation model is available; check Resources/Models/catalog.json.")
        return self.logic.start(node.inputVolume, node.model, node.device, node.outputSegmentation)

    def onJobDone(self, job: SegmentationJob) -> None:
        if self._parameterNode:
            self._parameterNode.outputSegmentation = job.segmentationNode
        self.ui.statusLabel.text = f"Done in {job.seconds:.1f} s."

    def onExportDicomSeg(self) -> None:
        with self.showErrors("DICOM SEG export"), slicer.util.WaitCursor():
            path = self.logic.exportDicomSeg(self._parameterNode.outputSegmentation, self._parameterNode.inputVolume)
            self.ui.statusLabel.text = f"DICOM SEG written to {path} and added to the DICOM database."


class MedAISegmentationTest(SegmentationSelfTest):
    """Runs the first catalogue model on a small generated chest phantom through the real worker process (see
    MedAISegmentationLib.selftest)."""
