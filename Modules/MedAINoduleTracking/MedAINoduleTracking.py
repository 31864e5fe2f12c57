"""MedAI Nodule Tracking: a thin Slicer shell over ``MedAIExtension.tracking``, run in a child process
(``python -m MedAIExtension.worker track``) that a QTimer polls, so Slicer stays responsive and Track turns into Cancel.
"""

from __future__ import annotations

from typing import Annotated, Any

import slicer
from MedAICommonLib.widget import JobWidgetMixin
from MedAINoduleTrackingLib import InputError, MedAIError, TrackingJob, TrackingLogic
from MedAINoduleTrackingLib.selftest import TrackingSelfTest
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin


class MedAINoduleTracking(ScriptedLoadableModule):
    """Module metadata shown by Slicer."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedAI Nodule Tracking"
        self.parent.categories = ["MedAI"]
        self.parent.dependencies = ["MedAICommon"]  # installer, worker job, staging, DICOM database
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


class MedAINoduleTrackingWidget(JobWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node, runs or cancels a job, shows the table and jumps to nodules."""

    def __init__(self, parent: Any = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: MedAINoduleTrackingLogic | None = None
        self._result: TrackingJob | None = None  # the last finished run, whose nodes the table shows
        self._modelNames: list[str] = [""]

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedAINoduleTracking.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedAINoduleTrackingLogic()
        self.setupJobWidget()
        self.ui.applyButton.clicked.connect(self.onApply)
        self.ui.exportDicomButton.clicked.connect(self.onExportDicom)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self._onModelChanged)
        self.ui.showRegisteredCheckBox.connect("toggled(bool)", self._onShowRegistered)
        self.ui.resultsTableView.connect("clicked(QModelIndex)", self._onTableClicked)
        self._loadModels()
        self.initializeParameterNode()

    def onSceneStartClose(self, caller: Any = None, event: Any = None) -> None:
        self._result = None
        super().onSceneStartClose(caller, event)

    def defaultParameters(self, node: MedAINoduleTrackingParameterNode) -> None:
        if not node.baselineVolume or not node.followupVolume:
            node.baselineVolume, node.followupVolume = self.logic.defaultVolumes(
                node.baselineVolume, node.followupVolume
            )
        if len(self._modelNames) > 1 and node.model not in self._modelNames:  # else: the catalogue is not loaded yet
            node.model = self._modelNames[-1]

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
        node, running, result = self._parameterNode, self.jobRunning, self._result
        if node and node.model in self._modelNames:
            self.ui.modelComboBox.currentIndex = self._modelNames.index(node.model)
        self.ui.deviceComboBox.enabled = bool(node and node.model)
        self.ui.applyButton.text = "Cancel" if running else "Track nodules"
        self.ui.applyButton.enabled = running or bool(node and node.baselineVolume and node.followupVolume)
        self.ui.inputsCollapsibleButton.enabled = self.ui.optionsCollapsibleButton.enabled = not running
        self.ui.exportDicomButton.enabled = not running and bool(result and result.nodes)
        self.ui.showRegisteredCheckBox.enabled = bool(result and result.nodes and result.nodes.transform)
        self.ui.resultsTableView.setMRMLTableNode(result.nodes.table if result and result.nodes else None)

    def onApply(self) -> None:
        self.startOrCancel("Nodule tracking", self._start)

    def _start(self) -> TrackingJob:
        node = self._parameterNode
        if len(self._modelNames) == 1:
            self._loadModels()
        if node.model and node.model not in self._modelNames:
            raise InputError(f"Model '{node.model}' is not in the catalogue; choose another one.")
        return self.logic.startFromParameters(node)

    def onJobDone(self, job: TrackingJob) -> None:
        self._result = job
        self._onShowRegistered(bool(self._parameterNode and self._parameterNode.showRegistered))
        slicer.util.setSliceViewerLayers(background=job.baselineVolume, fit=True)
        lines = [f"{len(job.nodes.rows)} nodules tracked in {job.seconds:.1f} s."]
        lines += [f"⚠ {warning}" for warning in job.result.get("warnings", [])]
        self.ui.statusLabel.text = "\n".join([*lines, f"Report: {job.result.get('report', job.outputDir)}"])

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
        with self.showErrors("DICOM SR/SEG export"), slicer.util.WaitCursor():
            paths = self.logic.exportDicom(self._result.nodes.table if self._result else None)
            self.ui.statusLabel.text = f"Added {len(paths)} DICOM objects (SEG, SR) to the DICOM database."


class MedAINoduleTrackingTest(TrackingSelfTest):
    """Tracks a small generated phantom pair (grown, stable and new nodules) through the real worker process (see
    MedAINoduleTrackingLib.selftest)."""
