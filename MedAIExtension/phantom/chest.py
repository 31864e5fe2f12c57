"""Deterministic synthetic chest CT with known truth: lungs, vessels, bones and lung nodules.

>>> from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom
>>> phantom = generate_chest_phantom(PhantomSpec(size_ijk=(96, 96, 48), spacing=(3.5, 3.5, 5.0), seed=1))
>>> phantom.ct.array.dtype, phantom.ct.modality, len(phantom.truth["nodules"])
(dtype('int16'), 'CT', 4)
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.labels import CodedTerm, SegmentLabel
from MedAIExtension.phantom.anatomy import build_layout, lung_sdf, nodule_center
from MedAIExtension.phantom.ct_noise import KERNELS
from MedAIExtension.phantom.grid import ChunkGrid
from MedAIExtension.phantom.lesion_shape import lobed_shape
from MedAIExtension.phantom.lung_findings import build_findings
from MedAIExtension.phantom.render import LABEL_LUNG, LABEL_NODULE, NoduleTruth, Renderer
from MedAIExtension.phantom.spec import (
    DEFAULT_NODULES,
    AnatomySpec,
    LungSide,
    NoduleSpec,
    PhantomSpec,
)
from MedAIExtension.phantom.vessels import vessel_trees
from MedAIExtension.progress import null_progress
from MedAIExtension.tracking.types import NoduleKind

__all__ = [
    "DEFAULT_NODULES",
    "LABEL_BACKGROUND",
    "LABEL_LUNG",
    "LABEL_NODULE",
    "PHANTOM_LABELS",
    "AnatomySpec",
    "LungSide",
    "NoduleKind",
    "NoduleSpec",
    "Phantom",
    "PhantomSpec",
    "generate_chest_phantom",
]

LABEL_BACKGROUND = 0

#: The segments of :attr:`Phantom.labels`.
PHANTOM_LABELS: tuple[SegmentLabel, ...] = (
    SegmentLabel(LABEL_LUNG, "Lung", (0.50, 0.68, 0.90), type=CodedTerm("39607008", "SCT", "Lung")),
    SegmentLabel(
        LABEL_NODULE,
        "Nodule",
        (0.90, 0.35, 0.25),
        category=CodedTerm("49755003", "SCT", "Morphologically Altered Structure"),
        type=CodedTerm("27925004", "SCT", "Nodule"),
    ),
)

_MIN_NODULE_GAP_MM = 1.0


@dataclass(frozen=True, eq=False)
class Phantom:
    """A generated chest CT with its ground truth.

    Attributes:
        ct: the CT volume in HU (int16, modality ``"CT"``).
        labels: uint8 label map on the same grid: 0 background, 1 lung field (vessels and airways inside the
            lung included), 2 nodule (takes precedence over lung).
        nodule_ids: uint8 map on the same grid: voxel value = nodule id (1.. in ``spec.nodules`` order), 0 elsewhere.
        truth: JSON-ready facts: per nodule id, kind, centre, diameters, analytic and voxel volumes; lung volume.
        spec: the spec it was generated from.
    """

    ct: Image
    labels: Image
    nodule_ids: Image
    truth: dict[str, Any]
    spec: PhantomSpec

    def nodule_mask(self, nodule_id: int) -> np.ndarray:
        """Boolean mask (``[k, j, i]``) of one nodule; ids start at 1."""
        if not 1 <= nodule_id <= len(self.truth["nodules"]):
            count = len(self.truth["nodules"])
            raise InputError(f"Nodule id {nodule_id} does not exist; this phantom has ids 1..{count}.")
        return self.nodule_ids.array == nodule_id

    def truth_json(self, indent: int | None = 2) -> str:
        """The ground truth as a JSON document."""
        return json.dumps(self.truth, indent=indent)


def generate_chest_phantom(
    spec: PhantomSpec | None = None, progress: Callable[[float, str], None] | None = None
) -> Phantom:
    """Generate a synthetic chest CT and its ground truth.

    The anatomy is built in RAS millimetres and sampled on the spec's grid; the result depends only on the spec
    (seed included), never on the machine or the number of threads.

    Args:
        spec: what to generate; default :class:`PhantomSpec()` (512x512x300 axial, 0.7x0.7x1.25 mm, 4 nodules).
        progress: optional ``callback(fraction, message)``; a :class:`~MedAIExtension.progress.Progress` raises
            ``CancelledError`` from it when the user cancels.

    Returns:
        The phantom: CT, label map, nodule-id map and truth.

    Raises:
        InputError: if a nodule lies outside the lungs or two nodules overlap.
    """
    spec = spec or PhantomSpec()
    report = progress or null_progress
    layout = build_layout(spec.anatomy)
    nodules = _resolve_nodules(spec, layout)
    vessels = vessel_trees(layout, np.random.default_rng([spec.seed, 0]))
    reach = [(n.center, n.radius * (n.shape.max_relative_radius if n.shape is not None else 1.0)) for n in nodules]
    findings = build_findings(layout, spec.findings, spec.seed, reach)
    affine = spec.ijk_to_ras
    # A moved patient (spec.pose_ras) is sampled by taking the scanner grid into the body frame.
    sampled = affine if spec.pose_ras is None else np.linalg.inv(spec.pose) @ affine
    grid = ChunkGrid(sampled, spec.shape, layout.origin_ras)
    kernel = KERNELS[spec.noise_kernel] if spec.noise_kernel is not None else None
    renderer = Renderer(
        grid,
        layout,
        vessels,
        nodules,
        spec.seed,
        spec.noise_hu,
        spec.effective_noise_seed,
        noise_kernel=kernel,
        slice_thickness_mm=spec.slice_thickness_mm,
        findings=findings,
    )
    report(0.0, "Rendering phantom slices")
    ct, labels, ids = renderer.run(report)
    description = "MedAI synthetic chest CT phantom"
    metadata = {"description": description, "synthetic": True, "phantom_seed": spec.seed}
    ct_image = Image(ct, affine, modality="CT", metadata=metadata)
    truth = _truth(spec, layout, nodules, renderer.lung_voxels, ct_image)
    return Phantom(
        ct=ct_image,
        labels=ct_image.with_array(labels, modality="", metadata={**metadata, "description": "phantom labels"}),
        nodule_ids=ct_image.with_array(ids, modality="", metadata={**metadata, "description": "phantom nodule ids"}),
        truth=truth,
        spec=spec,
    )


def _resolve_nodules(spec: PhantomSpec, layout: Any) -> list[NoduleTruth]:
    out: list[NoduleTruth] = []
    for index, nodule in enumerate(spec.nodules, start=1):
        center = nodule_center(layout, nodule)
        for other in out:
            gap = float(np.linalg.norm(center - other.center)) - nodule.radius_mm - other.radius
            if gap < _MIN_NODULE_GAP_MM:
                raise InputError(
                    f"Nodules {other.index} and {index} overlap or touch (gap {gap:.1f} mm); "
                    f"move them at least {_MIN_NODULE_GAP_MM:g} mm apart."
                )
        core = 0.0
        if nodule.kind is NoduleKind.PART_SOLID:
            assert nodule.solid_fraction is not None  # set for every part-solid nodule on construction
            core = nodule.radius_mm * nodule.solid_fraction
        shape = lobed_shape(nodule.lobulation, nodule.shape_seed, nodule.spiculation)
        truth = NoduleTruth(index, NoduleKind(nodule.kind), center, nodule.radius_mm, core, shape)
        truth.necrosis_radius = nodule.radius_mm * nodule.necrosis
        out.append(truth)
    return out


def _truth(
    spec: PhantomSpec, layout: Any, nodules: list[NoduleTruth], lung_voxels: dict[LungSide, int], ct: Image
) -> dict[str, Any]:
    voxel_mm3 = ct.voxel_volume_mm3
    items = []
    pose = spec.pose  # body -> scanner RAS
    for truth, nodule in zip(nodules, spec.nodules, strict=True):
        center_ras = pose[:3, :3] @ (truth.center + layout.origin_ras) + pose[:3, 3]
        sides = {side: float(lung_sdf(layout, side, *truth.center.reshape(3, 1))[0]) for side in LungSide}
        centroid = None
        if truth.voxels:
            ijk = truth.index_sum / truth.voxels
            centroid = [round(float(v), 4) for v in ct.ijk_to_ras[:3, :3] @ ijk + ct.ijk_to_ras[:3, 3]]
        solid_voxels = {NoduleKind.SOLID: truth.voxels, NoduleKind.GROUND_GLASS: 0}.get(truth.kind, truth.core_voxels)
        items.append(
            {
                "id": truth.index,
                "kind": truth.kind.value,
                "center_ras": [round(float(v), 4) for v in center_ras],
                "lung": min(sides, key=sides.__getitem__).value,
                "juxta_pleural": nodule.juxta_pleural,
                **({"lobulation": nodule.lobulation} if nodule.lobulation else {}),  # diameter: volume-equivalent
                **({"spiculation": nodule.spiculation} if nodule.spiculation else {}),
                **({"necrosis": nodule.necrosis} if nodule.necrosis else {}),
                "diameter_mm": nodule.diameter_mm,
                "mean_diameter_mm": nodule.diameter_mm,
                "volume_mm3": round(nodule.volume_mm3, 3),
                "solid_diameter_mm": round(nodule.solid_diameter_mm, 4),
                "solid_volume_mm3": round(nodule.solid_volume_mm3, 3),
                "mask_voxels": truth.voxels,
                "mask_volume_mm3": round(truth.voxels * voxel_mm3, 3),
                "solid_mask_volume_mm3": round(solid_voxels * voxel_mm3, 3),
                "mask_centroid_ras": centroid,
                "fully_in_field_of_view": _inside_grid(ct, center_ras, truth.radius),
            }
        )
    lung_ml = {side.value: round(count * voxel_mm3 / 1000.0, 3) for side, count in lung_voxels.items()}
    extra: dict[str, Any] = {}
    if spec.pose_ras is not None:
        extra["pose_ras"] = [list(row) for row in spec.pose_ras]
    if spec.noise_seed is not None:
        extra["noise_seed"] = spec.noise_seed
    if spec.noise_kernel is not None:
        extra["noise_kernel"] = spec.noise_kernel
    if spec.slice_thickness_mm is not None:
        extra["slice_thickness_mm"] = spec.slice_thickness_mm
    if spec.findings.any:
        extra["findings"] = {k: v for k, v in dataclasses.asdict(spec.findings).items() if v}
    return {
        "generator": "MedAIExtension.phantom.chest",
        "seed": spec.seed,
        "size_ijk": list(spec.size_ijk),
        "spacing": list(spec.spacing),
        "ijk_to_ras": [[float(v) for v in row] for row in ct.ijk_to_ras],
        "noise_hu": spec.noise_hu,
        "labels": {str(LABEL_BACKGROUND): "background", **{str(s.value): s.name.lower() for s in PHANTOM_LABELS}},
        "lung_volume_ml": round(math.fsum(lung_ml.values()), 3),
        "lung_volume_ml_by_side": lung_ml,
        "nodules": items,
        **extra,
    }


def _inside_grid(ct: Image, center_ras: np.ndarray, radius: float) -> bool:
    inverse = np.linalg.inv(ct.ijk_to_ras)
    ijk = inverse[:3, :3] @ center_ras + inverse[:3, 3]
    margin = radius / ct.spacing
    size = np.array(ct.size_ijk, dtype=float)
    return bool(np.all(ijk - margin >= -0.5) and np.all(ijk + margin <= size - 0.5))
