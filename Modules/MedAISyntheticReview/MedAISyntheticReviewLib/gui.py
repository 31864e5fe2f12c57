"""Qt helpers of the MedAI Synthetic Review widget: combo box, keyboard shortcuts, artifact check boxes. Slicer
application code (Qt), kept out of the Qt-free ``logic`` and out of the thin module file.

Errors are shown with ``MedAICommonLib.widget.showErrors``; metrics and the memorization check run in the worker
process (see ``MedAISyntheticReviewLib.jobs``), polled by the shared job widget mixin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import qt

__all__ = ["enableShortcuts", "fillCombo", "keyboardShortcuts", "replaceCheckBoxes"]


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
