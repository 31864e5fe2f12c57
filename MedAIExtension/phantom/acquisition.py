"""Random CT acquisitions for phantoms that look like the scans hospitals send, not like one fixed protocol.

A chest CT varies by scanner and protocol: in-plane pixels of 0.5-0.9 mm (the field of view over 512 columns),
slices of 0.6-5 mm (thin reconstructions often overlapping: increment < thickness), kernels from soft to sharp,
and a noise level set by the dose (low-dose screening to standard dose) and sharpened by the kernel. These are
sampled here; :func:`random_ct_spec` puts them on a random patient (:func:`~.sampling.random_phantom_spec`) with
lesions from 3 mm nodules up to masses.

The noise texture follows the kernel (:mod:`MedAIExtension.phantom.ct_noise`); its level is drawn log-uniformly
over 8-60 HU in soft tissue (low-dose lung screening at a sharp kernel reaches the top of that range).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.phantom.ct_noise import KERNELS
from MedAIExtension.phantom.findings_spec import LungFindingsSpec
from MedAIExtension.phantom.lung_findings import random_findings
from MedAIExtension.phantom.sampling import random_phantom_spec
from MedAIExtension.phantom.spec import NoduleKind, NoduleSpec, PhantomSpec

__all__ = ["Acquisition", "random_acquisition", "random_ct_spec"]

_IN_PLANE_MM = (0.5, 0.9)
_THICKNESS_MM = (0.6, 5.0)
_NOISE_HU = (8.0, 60.0)
#: Relative noise of each kernel at equal dose (sharper kernels pass more high-frequency noise).
_KERNEL_NOISE_FACTOR = {"soft": 0.7, "standard": 1.0, "sharp": 1.4, "lung": 1.8}


@dataclass(frozen=True)
class Acquisition:
    """How one CT was acquired and reconstructed."""

    pixel_mm: float
    slice_thickness_mm: float
    slice_increment_mm: float
    kernel: str
    noise_hu: float

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing along i, j, k (mm)."""
        return (self.pixel_mm, self.pixel_mm, self.slice_increment_mm)


def random_acquisition(rng: np.random.Generator) -> Acquisition:
    """One random acquisition (see the module docstring for the ranges)."""
    pixel = float(rng.uniform(*_IN_PLANE_MM))
    thickness = float(np.exp(rng.uniform(math.log(_THICKNESS_MM[0]), math.log(_THICKNESS_MM[1]))))
    overlap = rng.random() < 0.4 and thickness <= 2.0  # thin slices are often reconstructed overlapping
    increment = thickness * float(rng.uniform(0.5, 0.8)) if overlap else thickness
    kernel = str(rng.choice(sorted(KERNELS)))
    dose_noise = float(np.exp(rng.uniform(math.log(_NOISE_HU[0]), math.log(_NOISE_HU[1] / 1.8))))
    noise = float(np.clip(dose_noise * _KERNEL_NOISE_FACTOR[kernel], *_NOISE_HU))
    return Acquisition(pixel, round(thickness, 2), round(increment, 2), kernel, round(noise, 1))


def random_ct_spec(
    seed: int,
    fov_mm: Sequence[float] = (180.0, 180.0, 150.0),
    max_nodules: int = 4,
    diameter_range_mm: tuple[float, float] = (3.0, 30.0),
    mass_probability: float = 0.25,
    max_voxels: int = 24_000_000,
    findings: bool = True,
) -> tuple[PhantomSpec, Acquisition]:
    """A random patient (habitus, lesions) under a random acquisition; the same seed gives the same pair.

    ``fov_mm`` is the field of view (R-L, A-P, S-I) centred on the chest; the voxel counts follow from the sampled
    spacing, and the in-plane pixel is enlarged when the grid would exceed ``max_voxels`` (so thin-slice, fine-
    pixel draws stay renderable). With ``mass_probability`` one lesion of 30-70 mm is added (a mass); about half of
    the lesions get a lobulated outline (:mod:`~MedAIExtension.phantom.lesion_shape`).
    """
    if not 0.0 <= mass_probability <= 1.0:
        raise InputError(f"mass_probability must be in [0, 1], got {mass_probability}.")
    if len(fov_mm) != 3 or min(float(v) for v in fov_mm) <= 0:
        raise InputError(f"fov_mm needs three positive sizes, got {fov_mm!r}.")
    rng = np.random.default_rng([int(seed), 0x4354])
    acquisition = random_acquisition(rng)
    slices = max(2, round(float(fov_mm[2]) / acquisition.slice_increment_mm))
    pixel = acquisition.pixel_mm
    columns = max(2, round(float(fov_mm[0]) / pixel))
    rows = max(2, round(float(fov_mm[1]) / pixel))
    if columns * rows * slices > max_voxels:  # coarser pixels keep the grid renderable
        pixel *= math.sqrt(columns * rows * slices / max_voxels)
        columns, rows = max(2, round(float(fov_mm[0]) / pixel)), max(2, round(float(fov_mm[1]) / pixel))
        acquisition = dataclasses.replace(acquisition, pixel_mm=round(pixel, 3))
    with_mass = bool(rng.random() < mass_probability)
    spec = random_phantom_spec(
        seed,
        size_ijk=(columns, rows, slices),
        spacing=acquisition.spacing,
        max_nodules=max_nodules,
        diameter_range_mm=diameter_range_mm,
        masses=1 if with_mass else 0,
    )
    lesions = tuple(  # half of them lobulated (the same volume; the axes differ)
        dataclasses.replace(n, lobulation=round(float(rng.uniform(0.1, 0.25)), 3), shape_seed=int(rng.integers(2**31)))
        if rng.random() < 0.5
        else n
        for n in spec.nodules
    )
    extra = np.random.default_rng([int(seed), 0x4649])  # a separate stream: the draws above stay as they were
    if findings:
        lesions = tuple(_roughen(lesion, extra) for lesion in lesions)
    spec = dataclasses.replace(
        spec,
        nodules=lesions,
        findings=random_findings(extra) if findings else LungFindingsSpec(),
        noise_hu=acquisition.noise_hu,
        noise_kernel=acquisition.kernel,
        slice_thickness_mm=acquisition.slice_thickness_mm,
    )
    return spec, acquisition


def _roughen(lesion: NoduleSpec, rng: np.random.Generator) -> NoduleSpec:
    """Spiculate some solid lesions and give some masses a necrotic centre (draws from ``rng`` in a fixed order)."""
    spiculate, necrotic = rng.random(), rng.random()
    spiculation, necrosis = float(rng.uniform(0.3, 0.9)), float(rng.uniform(0.3, 0.6))
    if lesion.kind is not NoduleKind.SOLID:
        return lesion
    return dataclasses.replace(
        lesion,
        spiculation=round(spiculation, 3) if spiculate < 0.25 else 0.0,
        necrosis=round(necrosis, 3) if necrotic < 0.5 and lesion.diameter_mm >= 30.0 else 0.0,
        shape_seed=lesion.shape_seed or int(rng.integers(2**31)),
    )
