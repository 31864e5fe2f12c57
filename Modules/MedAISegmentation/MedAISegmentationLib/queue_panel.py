"""The annotation-queue section of the MedAI Segmentation widget (Qt, Slicer application code).

``AnnotationQueuePanel`` is a mixin of the module widget: it uses the widget's ``layout``, ``ui``, ``logic`` (the
queue calls of :mod:`MedAISegmentationLib.annotation_queue`), ``showErrors`` and parameter node. It steps an
annotator through the ``queue.csv`` of ``medai batch --annotation-queue``, most informative study first.
"""

from __future__ import annotations

from typing import Any

import ctk
import qt
import slicer
from MedAICommonLib import ensureDependencies

__all__ = ["AnnotationQueuePanel"]


class AnnotationQueuePanel:
    """Open a queue.csv, then Previous / Next through its studies (each loaded with its segmentation)."""

    layout: Any
    logic: Any
    ui: Any
    _parameterNode: Any
    showErrors: Any

    def _setupQueue(self) -> None:
        """The annotation queue section (built in code: three buttons and a label over the logic's queue calls)."""
        section = ctk.ctkCollapsibleButton()
        section.text = "Annotation queue"
        layout = qt.QGridLayout(section)
        self.queueOpenButton = qt.QPushButton("Open annotation queue…")
        self.queueOpenButton.toolTip = "Open the queue.csv of medai batch --annotation-queue (most informative first)."
        self.queuePreviousButton, self.queueNextButton = qt.QPushButton("Previous"), qt.QPushButton("Next")
        self.queueLabel = qt.QLabel("No queue open.")
        layout.addWidget(self.queueOpenButton, 0, 0, 1, 2)
        layout.addWidget(self.queuePreviousButton, 1, 0)
        layout.addWidget(self.queueNextButton, 1, 1)
        layout.addWidget(self.queueLabel, 2, 0, 1, 2)
        self.layout.addWidget(section)
        self.queueOpenButton.clicked.connect(self.onOpenQueue)
        self.queuePreviousButton.clicked.connect(lambda: self._stepQueue(self.logic.previousInQueue))
        self.queueNextButton.clicked.connect(lambda: self._stepQueue(self.logic.nextInQueue))
        self._updateQueueButtons()

    def _updateQueueButtons(self) -> None:
        index, total = self.logic.queuePosition() if self.logic else (-1, 0)
        self.queuePreviousButton.enabled = index > 0
        self.queueNextButton.enabled = index + 1 < total

    def onOpenQueue(self) -> None:
        """Ask for a queue.csv, open it and load its first (most informative) study."""
        path = qt.QFileDialog.getOpenFileName(self.parent, "Open annotation queue", "", "Annotation queue (*.csv)")
        if not path:
            return
        with self.showErrors("Annotation queue"):
            if not ensureDependencies():  # reading the queue and the studies needs MedAIExtension's packages
                self.ui.statusLabel.text = "Python packages are missing; the queue was not opened."
                return
            total = self.logic.openQueue(path)
            self.queueLabel.text = f"{total} studies, most informative first."
            self._stepQueue(self.logic.nextInQueue)
        self._updateQueueButtons()

    def _stepQueue(self, step: Any) -> None:
        with self.showErrors("Annotation queue"), slicer.util.WaitCursor():
            volume, segmentation = step()
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
            if self._parameterNode:
                self._parameterNode.inputVolume = volume
                self._parameterNode.outputSegmentation = segmentation
            self.queueLabel.text = volume.GetName()
        self._updateQueueButtons()
