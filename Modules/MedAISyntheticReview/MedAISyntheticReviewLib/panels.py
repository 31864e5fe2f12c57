"""The grading and blinded reader-study tabs of the MedAI Synthetic Review widget (Qt, Slicer application code).

``ReviewPanels`` is a mixin of the module widget: it uses the widget's ``ui``, ``logic`` (a ``ReviewJobLogic``) and
parameter node, and keeps the current image, session and trial. Every grade and answer is committed to the project
file by the logic before these handlers return.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import slicer
from MedAICommonLib.widget import showErrors

from MedAIExtension.errors import MedAIError

__all__ = ["SIDE_BY_SIDE", "ReviewPanels"]

SIDE_BY_SIDE = slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView  # Red = synthetic, Yellow = reference


class ReviewPanels:
    """Grading (a synthetic image beside its reference) and the blinded reader study (one anonymous case at a time)."""

    ui: Any
    logic: Any
    _parameterNode: Any
    _images: list[Any]
    _checks: list[Any]
    _imageId: int | None
    _session: int | None
    _trial: Any
    _shownAt: float
    _updateProjectGui: Callable[[], None]  # the widget's: project info, image list, artifact check boxes

    def _reviewer(self) -> str:
        name = self._parameterNode.reviewer.strip() if self._parameterNode else ""
        if not name:
            self.ui.reviewerLineEdit.setFocus()
            raise MedAIError("Enter your name as reviewer first: it is stored with every grade and answer.")
        return name

    # ---- grading ---------------------------------------------------------------------------------------------------
    def _step(self, delta: int) -> None:
        if self._images:
            self.ui.imageComboBox.currentIndex = (self.ui.imageComboBox.currentIndex + delta) % len(self._images)

    def _showImage(self, index: int) -> None:
        if not 0 <= index < len(self._images):
            return
        with showErrors("Load image"):
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
        with showErrors("Save grade"):
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
        with showErrors("Reader study"):
            reader = self._reviewer()
            if resume:
                self._session = self.logic.unfinishedSession(reader)
                if self._session is None:
                    raise MedAIError(f"{reader} has no unfinished session; start a new one.")
            else:
                self._session = self.logic.startBlindSession(
                    reader, self._parameterNode.perClass, self._parameterNode.seed or None
                )
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
        with showErrors("Reader study"):
            seconds, confidence = round(time.time() - self._shownAt, 1), self.ui.confidenceSpinBox.value
            self.logic.answerTrial(self._session, self._trial.index, saidSynthetic, confidence, seconds)
            self._nextTrial()
