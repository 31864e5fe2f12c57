"""Which non-lesion findings a phantom's lungs show (see :mod:`MedAIExtension.phantom.lung_findings`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from MedAIExtension.errors import InputError

__all__ = ["LungFindingsSpec"]

_RANGES: dict[str, tuple[float, float]] = {
    "emphysema": (0.0, 1.0),
    "fibrosis": (0.0, 1.0),
    "atelectasis_mm": (0.0, 30.0),
    "effusion_mm": (0.0, 70.0),
    "granulomas": (0.0, 20.0),
    "scars": (0.0, 20.0),
    "streaks_hu": (0.0, 200.0),
}


@dataclass(frozen=True)
class LungFindingsSpec:
    """Which non-lesion findings a phantom shows, and how much of each (all off by default).

    Attributes:
        fissures: draw the interlobar fissures.
        airway_tree: draw segmental and subsegmental bronchi (walls and lumen) inside the lungs.
        emphysema: severity 0..1 (share of the upper lungs with low-attenuation areas; bullae above 0.5).
        fibrosis: severity 0..1 of subpleural basal reticulation.
        atelectasis_mm: thickness of the dependent atelectatic band (0: none).
        effusion_mm: depth of the pleural effusion layering posteriorly in each lung (0: none).
        granulomas: number of calcified granulomas.
        scars: number of linear scars.
        streaks_hu: amplitude of beam-hardening streaks (0: none).
    """

    fissures: bool = False
    airway_tree: bool = False
    emphysema: float = 0.0
    fibrosis: float = 0.0
    atelectasis_mm: float = 0.0
    effusion_mm: float = 0.0
    granulomas: int = 0
    scars: int = 0
    streaks_hu: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "fissures", bool(self.fissures))
        object.__setattr__(self, "airway_tree", bool(self.airway_tree))
        for name, (low, high) in _RANGES.items():
            value = float(getattr(self, name))
            if not (math.isfinite(value) and low <= value <= high):
                raise InputError(f"Lung finding {name} must be in [{low:g}, {high:g}], got {getattr(self, name)!r}.")
            object.__setattr__(self, name, int(value) if name in ("granulomas", "scars") else value)

    @property
    def any(self) -> bool:
        """Whether the phantom shows any finding at all."""
        return self != LungFindingsSpec()
