"""MedAI Explainability: a thin Slicer shell over ``MedAIExtension.explain``, run in a child process (``python -m
MedAIExtension.worker explain``) that a QTimer polls, so Slicer stays responsive and Explain turns into Cancel."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Annotated, Any

import qt
import slicer
import vtk
from MedAIExplainabilityLib import ExplainabilityLogic, ExplainJob, InputError, MedAIError, ensureDependencies
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

logger = logging.getLogger(__name__)


class MedAIExplainability(ScriptedLoadableModule):
    """Module metadata shown by Slicer."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedAI Explainability"
        self.parent.categories = ["MedAI"]
        self.parent.dependencies = ["MedAISegmentation"]  # installer, worker python, input staging
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


class MedAIExplainabilityWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node, runs or cancels a job, shows the overlay and its sanity checks."""

    def __init__(self, parent: Any = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: MedAIExplainabilityLogic | None = None
        self._parameterNode: MedAIExplainabilityParameterNode | None = None
        self._guiTag: Any = None
        self._job: ExplainJob | None = None
        self._result: ExplainJob | None = None  # the last finished run, whose table is shown
        self._models, self._targets = [], [""]  # combo box index -> model name / target value

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedAIExplainability.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedAIExplainabilityLogic()
        self.ui.progressBar.hide()
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._onPoll)
        self.ui.applyButton.clicked.connect(self.onApply)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", lambda i: self._choose("model", self._models, i))
        self.ui.targetComboBox.connect("currentIndexChanged(int)", lambda i: self._choose("target", self._targets, i))
        self.ui.opacitySlider.connect("valueChanged(double)", self.logic.setOverlayOpacity)  # every slice view
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
        if not node.inputVolume:
            node.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if self._models and node.model not in self._models:
            node.model = self._models[0]
        self._loadTargets()

    def _disconnectGui(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._guiTag = None

    def setParameterNode(self, parameterNode: MedAIExplainabilityParameterNode | None) -> None:
        self._disconnectGui()
        self._parameterNode = parameterNode
        if parameterNode:
            self._guiTag = parameterNode.connectGui(self.ui)
            self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
            self._updateGui()

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
        node, running, result = self._parameterNode, self._job is not None, self._result
        if node and node.model in self._models:
            self.ui.modelComboBox.currentIndex = self._models.index(node.model)
        if node and node.target in self._targets:
            self.ui.targetComboBox.currentIndex = self._targets.index(node.target)
        self.ui.applyButton.text = "Cancel" if running else "Explain"
        self.ui.applyButton.enabled = running or bool(node and node.inputVolume and node.model)
        self.ui.inputsCollapsibleButton.enabled = self.ui.optionsCollapsibleButton.enabled = not running
        self.ui.sanityLabel.text = result.nodes.sanity_summary if result and result.nodes else ""
        self.ui.uncertaintyTableView.setMRMLTableNode(result.nodes.table if result and result.nodes else None)

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
        with self._showErrors("Explanation"):
            if not ensureDependencies():
                self.ui.statusLabel.text = "Python packages are missing; nothing was run."
                return
            if not self._models:
                self._loadModels()
            if self._parameterNode.model not in self._models:
                raise InputError("No model is available; check Resources/Models/catalog.json.")
            self._job = self.logic.startFromParameters(self._parameterNode)
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

    def _finish(self, job: ExplainJob) -> None:
        self._timer.stop()
        self._job = None
        self.ui.progressBar.hide()
        if job.error:
            self.ui.statusLabel.text = "Explanation failed."
            slicer.util.errorDisplay(job.error, windowTitle="MedAI - Explanation")
        elif job.cancelled:
            self.ui.statusLabel.text = "Cancelled; nothing was changed."
        else:
            self._result = job
            if self._parameterNode:
                self.logic.setOverlayOpacity(self._parameterNode.opacity)
            notes = [f"⚠ {note}" for note in job.nodes.document.get("notes", [])]
            done = f"{job.nodes.map.GetName()} in {time.time() - job.startTime:.1f} s."
            self.ui.statusLabel.text = "\n".join([done, *notes, f"Files: {job.outputDir}"])
        self._updateGui()

    def _cancelJob(self) -> None:
        if self._job is not None:
            self.logic.cancel(self._job)


class MedAIExplainabilityTest(ScriptedLoadableModuleTest):
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
        logic = MedAIExplainabilityLogic()
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
        logic = MedAIExplainabilityLogic()
        job = logic.start(volume, model, "occlusion", roiNode=roi, device="cpu")
        logic.cancel(job)
        deadline = time.time() + 30
        while not job.finished and time.time() < deadline:
            logic.poll(job)
            time.sleep(0.1)
        self.assertTrue(job.finished and job.cancelled and not job.error and job.nodes is None)
        self.assertFalse(job.workDir.exists(), "temporary files were left behind")
