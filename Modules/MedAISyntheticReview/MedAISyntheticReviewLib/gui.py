"""Qt helpers of the MedAI Synthetic Review widget: error display, keyboard shortcuts, long steps with a progress
dialog. Slicer application code (Qt), kept out of the Qt-free ``logic`` and out of the thin module file.

Metrics and the memorization check run in Slicer's own process: the progress callback updates a modal progress
dialog and processes events, and its Cancel button sets the CancelToken that the shared code checks at every
progress report, so the step stops at the next image. They take seconds to minutes for review-sized sets; for large
sets the CLI (``medai review metrics``) runs them outside Slicer and the module shows the stored result.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import qt
import slicer

from MedAIExtension.errors import CancelledError, MedAIError
from MedAIExtension.progress import CancelToken

__all__ = ["enableShortcuts", "fillCombo", "keyboardShortcuts", "replaceCheckBoxes", "runWithProgress", "showErrors"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def showErrors(what: str) -> Iterator[None]:
    """Show an error by its message (a MedAIError names the fix); anything unexpected also goes to the log."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, MedAIError):
            logger.exception("%s failed", what)
        slicer.util.errorDisplay(str(exc), windowTitle=f"MedAI - {what}")


def fillCombo(combo: Any, titles: list[str], index: int) -> None:
    """Replace the items of a combo box and select ``index``, without emitting its change signals."""
    wasBlocked = combo.blockSignals(True)
    combo.clear()
    combo.addItems(titles)
    combo.currentIndex = index
    combo.blockSignals(wasBlocked)


def keyboardShortcuts(actions: dict[str, Callable[[], None]], parent: Any) -> list[Any]:
    """One disabled application shortcut per key (enable them while the module is shown).

    Text fields keep their keys: a line edit with focus takes plain letters and digits before any shortcut.
    """
    shortcuts = []
    for key, action in actions.items():
        shortcut = qt.QShortcut(qt.QKeySequence(key), parent)
        shortcut.setEnabled(False)
        shortcut.activated.connect(action)
        shortcuts.append(shortcut)
    return shortcuts


def enableShortcuts(shortcuts: list[Any], enabled: bool) -> None:
    """Enable or disable every shortcut of :func:`keyboardShortcuts`."""
    for shortcut in shortcuts:
        shortcut.setEnabled(enabled)


def replaceCheckBoxes(box: Any, old: list[Any], words: list[str]) -> list[Any]:
    """Replace the check boxes ``old`` in the group box ``box`` by one unchecked box per word; returns the new ones."""
    for check in old:
        check.deleteLater()
    checks = [qt.QCheckBox(word) for word in words]
    for check in checks:
        box.layout().addWidget(check)
    return checks


def runWithProgress(what: str, run: Callable[..., Any]) -> bool:
    """Call ``run(progress=..., token=...)`` behind a cancellable progress dialog and a wait cursor.

    Returns:
        True when it finished, False when the user cancelled (nothing was saved then). Errors propagate.
    """
    token = CancelToken()
    dialog = slicer.util.createProgressDialog(windowTitle=f"MedAI - {what}", labelText=what, maximum=100)
    dialog.canceled.connect(token.cancel)

    def progress(fraction: float, message: str) -> None:
        dialog.setValue(round(100 * fraction))
        dialog.setLabelText(message)
        slicer.app.processEvents()

    qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
    try:
        run(progress=progress, token=token)
    except CancelledError:
        return False
    finally:
        qt.QApplication.restoreOverrideCursor()
        dialog.close()
    return True
