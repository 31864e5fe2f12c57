"""MedAI Explainability: a thin Slicer shell over ``MedAIExtension.explain``, run in a child process (``python -m
MedAIExtension.worker explain``) that a QTimer polls, so Slicer stays responsive and Explain turns into Cancel."""

from __future__ import annotations

from typing import Annotated, Any

import slicer
from MedAICommonLib.widget import JobWidgetMixin
from MedAIExplainabilityLib import ExplainabilityLogic, ExplainJob, InputError, MedAIError
from MedAIExplainabilityLib.selftest import ExplainabilitySelfTest
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin


class MedAIExplainability(ScriptedLoadableModule):
    """Module metadata shown by Slicer."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedAI Explainability"
        self.parent.categories = ["MedAI"]
        self.parent.dependencies = ["MedAICommon"]  # installer, worker job, input staging
        self.parent.contributors = ["MedAI contributors"]
        self.parent.helpText = (
            "Shows where a catalogue model looked (Grad-CAM, Grad-CAM++, occlusion, integrated gradients) or how "
            "unsure a segmentation is, as a heat overlay with sanity checks. Place a ROI over the structure to explain."
        )
        self.parent.acknowledgementText = "Built on 3D Slicer, SlicerPyTorch, MONAI, ONNX Runtime and highdicom."


@parameterNodeWrapper
class MedAIExplainabilityParameterNode:
    """GUI state, saved with the scene; the .ui binds its widgets by ``SlicerParameterName``."""

    inputVolume: vtkMRMLScalarVolumeNode
    model: str = ""
    method: Annotated[str, Choice(["gradcam", "gradcampp", "occlusion", "ig", "uncertainty"])] = "gradcam"
    target: str = ""  # label value; "" = the catalogue's default
    roi: vtkMRMLMarkupsROINode
    layer: str = ""  # Grad-CAM layer; "" = the catalogue's default
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    sanity: bool = True
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5


class MedAIExplainabilityLogic(ExplainabilityLogic):
    """The module's logic (see MedAIExplainabilityLib.logic) with its typed parameter node."""

    def getParameterNode(self) -> MedAIExplainabilityParameterNode:
        return MedAIExplainabilityParameterNode(super().getParameterNode())


class MedAIExplainabilityWidget(JobWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node, runs or cancels a job, shows the overlay and its sanity checks."""

    def __init__(self, parent: Any = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: MedAIExplainabilityLogic | None = None
        self._result: ExplainJob | None = None  # the last finished run, whose table is shown
        self._models, self._targets = [], [""]  # combo box index -> model name / target value

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedAIExplainability.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedAIExplainabilityLogic()
        self.setupJobWidget()
        self.ui.applyButton.clicked.connect(self.onApply)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", lambda i: self._choose("model", self._models, i))
        self.ui.targetComboBox.connect("currentIndexChanged(int)", lambda i: self._choose("target", self._targets, i))
        self.ui.opacitySlider.connect("valueChanged(double)", self.logic.setOverlayOpacity)  # every slice view
        self._loadModels()
        self.initializeParameterNode()

    def onSceneStartClose(self, caller: Any = None, event: Any = None) -> None:
        self._result = None
        super().onSceneStartClose(caller, event)

    def defaultParameters(self, node: MedAIExplainabilityParameterNode) -> None:
        if not node.inputVolume:
            node.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if self._models and node.model not in self._models:
            node.model = self._models[0]
        self._loadTargets()

    def _fillCombo(self, combo: Any, titles: list[str]) -> None:
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        combo.addItems(titles)
        combo.blockSignals(wasBlocked)

    def _loadModels(self) -> None:
        """Fill the model list from the catalogue (which may need packages that the first run installs)."""
        try:
            models = ExplainabilityLogic.catalogueModels()
        except (MedAIError, ImportError) as exc:
            models = []
            self.ui.statusLabel.text = f"Model catalogue not loaded yet: {exc}"
        self._models = [name for name, _ in models]
        self._fillCombo(self.ui.modelComboBox, [title for _, title in models])

    def _loadTargets(self) -> None:
        """Offer the labels of the chosen model as targets, after 'catalogue default'."""
        node = self._parameterNode
        self._targets, titles = ExplainabilityLogic.targetChoices(node.model if node else "")
        self._fillCombo(self.ui.targetComboBox, titles)
        if node and node.target not in self._targets:
            node.target = ""

    def _choose(self, name: str, values: list[str], index: int) -> None:
        """A model or target chosen in its combo box (filled by code, so not bound to the parameter node)."""
        if self._parameterNode and 0 <= index < len(values):
            setattr(self._parameterNode, name, values[index])
            if name == "model":
                self._loadTargets()

    def _updateGui(self, caller: Any = None, event: Any = None) -> None:
        node, running, result = self._parameterNode, self.jobRunning, self._result
        if node and node.model in self._models:
            self.ui.modelComboBox.currentIndex = self._models.index(node.model)
        if node and node.target in self._targets:
            self.ui.targetComboBox.currentIndex = self._targets.index(node.target)
        self.ui.applyButton.text = "Cancel" if running else "Explain"
        self.ui.applyButton.enabled = running or bool(node and node.inputVolume and node.model)
        self.ui.inputsCollapsibleButton.enabled = self.ui.optionsCollapsibleButton.enabled = not running
        self.ui.sanityLabel.text = result.nodes.sanity_summary if result and result.nodes else ""
        self.ui.uncertaintyTableView.setMRMLTableNode(result.nodes.table if result and result.nodes else None)

    def onApply(self) -> None:
        self.startOrCancel("Explanation", self._start)

    def _start(self) -> ExplainJob:
        if not self._models:
            self._loadModels()
        if self._parameterNode.model not in self._models:
            raise InputError("No model is available; check Resources/Models/catalog.json.")
        return self.logic.startFromParameters(self._parameterNode)

    def onJobDone(self, job: ExplainJob) -> None:
        self._result = job
        if self._parameterNode:
            self.logic.setOverlayOpacity(self._parameterNode.opacity)
        notes = [f"⚠ {note}" for note in job.nodes.document.get("notes", [])]
        done = f"{job.nodes.map.GetName()} in {job.seconds:.1f} s."
        self.ui.statusLabel.text = "\n".join([done, *notes, f"Files: {job.outputDir}"])


class MedAIExplainabilityTest(ExplainabilitySelfTest):
    """Explains the shipped classifier on a generated phantom nodule patch through the real worker process (see
    MedAIExplainabilityLib.selftest)."""
