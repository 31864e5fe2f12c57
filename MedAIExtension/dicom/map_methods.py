"""The explanation methods a MedAI Parametric Map records: their keys and titles.

The vocabulary lives beside the DICOM writer so that :mod:`MedAIExtension.dicom.parametric_map` can be written
without importing its callers; :mod:`MedAIExtension.explain.types` re-exports :class:`ExplainMethod`.
"""

from __future__ import annotations

from enum import StrEnum

from MedAIExtension.errors import InputError

__all__ = ["ExplainMethod"]


class ExplainMethod(StrEnum):
    """The explanation methods ``medai explain --method`` offers."""

    GRADCAM = "gradcam"
    GRADCAMPP = "gradcampp"
    OCCLUSION = "occlusion"
    IG = "ig"
    UNCERTAINTY = "uncertainty"

    @classmethod
    def parse(cls, value: str | ExplainMethod) -> ExplainMethod:
        """The method named ``value`` (case-insensitive); InputError listing the choices otherwise."""
        if isinstance(value, ExplainMethod):
            return value
        try:
            return cls(str(value).strip().lower().replace("-", "").replace("_", ""))
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise InputError(f"Unknown explanation method {value!r}; choose one of {choices}.") from None

    @property
    def display_name(self) -> str:
        """A human-readable name for reports and node names (not ``title``: that is ``str.title()``)."""
        return {
            ExplainMethod.GRADCAM: "Grad-CAM",
            ExplainMethod.GRADCAMPP: "Grad-CAM++",
            ExplainMethod.OCCLUSION: "Occlusion sensitivity",
            ExplainMethod.IG: "Integrated gradients",
            ExplainMethod.UNCERTAINTY: "Predictive entropy",
        }[self]
