"""Triage: a priority per finished study, from the Lung-RADS exam category or the presence of alert findings.

Priority 1 is read first. It is written where a worklist reads it: the PACS (Orthanc study metadata
``MedAIPriority`` / ``MedAIPriorityReason``), the tracking SR (an exam-level evaluation) and the gateway journal
(``medai worklist``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Triage", "from_alert_labels", "from_lung_rads", "routine"]

_LABELS = {1: "urgent", 2: "high", 3: "moderate", 4: "low", 5: "routine"}


@dataclass(frozen=True)
class Triage:
    """A study's reading priority: 1 (urgent) .. 5 (routine), with a label and the reason in words."""

    priority: int
    reason: str

    def __post_init__(self) -> None:
        if self.priority not in _LABELS:
            raise ValueError(f"priority must be 1..5, got {self.priority!r}")

    @property
    def label(self) -> str:
        """``urgent``, ``high``, ``moderate``, ``low`` or ``routine``."""
        return _LABELS[self.priority]


def from_lung_rads(category: str, reason: str = "") -> Triage:
    """Priority from the exam's Lung-RADS v2022 category (4B/4X urgent, 4A high, 3 and 0 moderate, 1-2 routine).

    The S modifier does not change the priority of the lung finding.
    """
    text = str(category).strip().upper()
    base = re.sub(r"S$", "", text)
    priority = {"4X": 1, "4B": 1, "4A": 2, "3": 3, "0": 3, "2": 5, "1": 5}.get(base)
    if priority is None:
        raise ValueError(f"{category!r} is not a Lung-RADS category")
    words = f"Lung-RADS {text}" + (f": {reason}" if reason else "")
    return Triage(priority, words)


def from_alert_labels(volumes_ml: dict[str, float], alert_labels: tuple[str, ...]) -> Triage:
    """Priority 2 when any of ``alert_labels`` was segmented (volume > 0), else routine."""
    found = [f"{name} {volumes_ml[name]:.2f} ml" for name in alert_labels if volumes_ml.get(name, 0.0) > 0.0]
    if found:
        return Triage(2, "finding present: " + ", ".join(found))
    if alert_labels:
        return Triage(5, f"no {', '.join(alert_labels)} segmented")
    return routine("segmentation only")


def routine(reason: str) -> Triage:
    """Priority 5 with ``reason``."""
    return Triage(5, reason)
