"""Small DICOM value helpers shared by MedAI's writers (SEG, parametric map, tracking SR, decision SR)."""

from __future__ import annotations

from typing import Any

from MedAIExtension.labels import CodedTerm

__all__ = ["LO_MAX", "coded_concept", "long_string"]

LO_MAX = 64
"""Longest DICOM Long String (LO) value."""


def long_string(text: object) -> str:
    """``text`` as a DICOM LO value: at most 64 characters, no backslash (the value separator)."""
    return str(text).replace("\\", "/")[:LO_MAX]


def coded_concept(term: CodedTerm) -> Any:
    """``term`` as a highdicom ``CodedConcept`` (its meaning clipped to an LO value)."""
    import highdicom as hd  # lazy: highdicom loads pydicom's whole SR machinery

    return hd.sr.CodedConcept(value=term.value, scheme_designator=term.scheme, meaning=long_string(term.meaning))
