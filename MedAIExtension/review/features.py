"""Offline 2.5D feature extractor for synthetic-image metrics: classical radiomics-style vectors per slice.

No pretrained network can be downloaded here, and FID on medical network features was found volatile (Woodland
et al., MICCAI 2024). We therefore follow the radiomics alternative — the Fréchet distance between distributions
of hand-crafted radiomic features, as in the Fréchet Radiomic Distance (Konz, Osuala et al., "Fréchet Radiomic
Distance (FRD): A Versatile Metric for Comparing Medical Imaging Datasets", arXiv:2412.01496, 2024) — with a
small, deterministic, dependency-light vector (numpy + scikit-image) computed on 2D slices of the three
orthogonal planes, as MAISI's 2.5D FID does (Guo et al., MAISI, 2024).

Per slice (:data:`FEATURE_NAMES`, 37 values):

* intensity — mean, standard deviation and the 5/25/50/75/95th percentiles of the HU values (clipped to
  [-1024, 3071]); the fraction of pixels in six HU bands (air, lung, fat, soft tissue, dense soft tissue, bone);
* gradient — mean, standard deviation and 90th percentile of the Sobel gradient magnitude in HU per mm;
* band-pass detail — standard deviation of the difference of Gaussians (σ 0.5 / 1.5 px), sensitive to noise and
  blur;
* texture — GLCM contrast, homogeneity, energy, correlation and dissimilarity (``skimage.feature.graycomatrix``
  on the [-1000, 400] HU window quantised to 32 grey levels, distances 1 and 2 pixels, averaged over the angles
  0°, 45°, 90°, 135°);
* local binary patterns — the 10-bin histogram of rotation-invariant uniform LBP (P=8, R=1).

The plane of an array axis is found from the affine (the RAS axis its direction is closest to), so any
acquisition geometry (axial, sagittal, coronal, oblique, either slice order) gives axial, coronal and sagittal
slices. Sets whose images differ in shape, spacing or axis directions are put on one grid first
(:func:`common_grid`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.io.geometry import affine_from_parts
from MedAIExtension.io.image import Image
from MedAIExtension.io.resample import resample_array

__all__ = [
    "FEATURE_NAMES",
    "PLANES",
    "common_grid",
    "plane_axis",
    "plane_features",
    "plane_slices",
    "slice_features",
]

#: The three planes, in report order.
PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")
_PLANE_OF_NORMAL = {0: "sagittal", 1: "coronal", 2: "axial"}  # normal along R, A, S

_HU_MIN, _HU_MAX = -1024.0, 3071.0
_GLCM_WINDOW = (-1000.0, 400.0)
_GLCM_LEVELS = 32
_GLCM_DISTANCES = (1, 2)
_GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
_GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation", "dissimilarity")
_BANDS = (
    ("air", -np.inf, -900.0),
    ("lung", -900.0, -500.0),
    ("fat", -200.0, -30.0),
    ("soft", -30.0, 100.0),
    ("dense", 100.0, 300.0),
    ("bone", 300.0, np.inf),
)
_LBP_POINTS = 8
#: Slices are drawn from this central fraction of each axis (the edges of a scan are often empty or clipped).
_CENTRAL = (0.15, 0.85)

FEATURE_NAMES: tuple[str, ...] = (
    *("mean", "std", "p5", "p25", "p50", "p75", "p95"),
    *(f"band_{name}" for name, _, _ in _BANDS),
    *("grad_mean", "grad_std", "grad_p90", "dog_std"),
    *(f"glcm_{prop}_d{d}" for d in _GLCM_DISTANCES for prop in _GLCM_PROPS),
    *(f"lbp_{b}" for b in range(_LBP_POINTS + 2)),
)


def plane_axis(image: Image, plane: str) -> int:
    """The array axis (0 = k, 1 = j, 2 = i) whose slices are ``plane`` (``"axial"``, ``"coronal"``, ``"sagittal"``).

    The axis whose direction is closest to the plane's normal (S for axial, A for coronal, R for sagittal) wins;
    for a very oblique grid where two axes tie, the first in k, j, i order is used.
    """
    if plane not in PLANES:
        raise InputError(f"Unknown plane {plane!r}; use one of {', '.join(PLANES)}.")
    normal = {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
    direction = image.direction_ras
    weights = [abs(direction[normal, 2 - axis]) for axis in range(3)]  # array axis a runs along column 2 - a
    return int(np.argmax(weights))


def plane_slices(image: Image, plane: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` evenly spaced slices of ``plane`` from the central 70 % of the volume.

    Returns:
        The slices as a float32 array ``(count, rows, cols)`` and their in-plane pixel spacing (mm, rows/cols).
    """
    axis = plane_axis(image, plane)
    length = image.shape[axis]
    lo, hi = _CENTRAL[0] * (length - 1), _CENTRAL[1] * (length - 1)
    indices = np.unique(np.round(np.linspace(lo, hi, count)).astype(int)) if count > 1 else [length // 2]
    if len(indices) < count:  # a thin volume: repeat what exists rather than fail
        indices = np.resize(np.asarray(indices), count)
    stack = np.take(image.array, np.asarray(indices), axis=axis).astype(np.float32)
    stack = np.moveaxis(stack, axis, 0)
    spacing_kji = image.spacing[::-1]
    in_plane = np.array([spacing_kji[a] for a in range(3) if a != axis])
    return stack, in_plane


def slice_features(pixels: np.ndarray, spacing_rc: Sequence[float] | np.ndarray = (1.0, 1.0)) -> np.ndarray:
    """The radiomics-style feature vector (:data:`FEATURE_NAMES`) of one 2D slice in HU."""
    from scipy import ndimage
    from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

    hu = np.clip(np.asarray(pixels, dtype=np.float32), _HU_MIN, _HU_MAX)
    values = hu.ravel()
    out: list[float] = [float(values.mean()), float(values.std())]
    out += [float(v) for v in np.percentile(values, (5, 25, 50, 75, 95))]
    out += [float(np.mean((values >= low) & (values < high))) for _, low, high in _BANDS]
    gy = ndimage.sobel(hu, axis=0) / (8.0 * float(spacing_rc[0]))
    gx = ndimage.sobel(hu, axis=1) / (8.0 * float(spacing_rc[1]))
    grad = np.hypot(gx, gy)
    out += [float(grad.mean()), float(grad.std()), float(np.percentile(grad, 90))]
    dog = ndimage.gaussian_filter(hu, 0.5) - ndimage.gaussian_filter(hu, 1.5)
    out.append(float(dog.std()))
    low, high = _GLCM_WINDOW
    levels = np.clip((hu - low) / (high - low) * _GLCM_LEVELS, 0, _GLCM_LEVELS - 1).astype(np.uint8)
    glcm = graycomatrix(levels, _GLCM_DISTANCES, _GLCM_ANGLES, levels=_GLCM_LEVELS, symmetric=True, normed=True)
    props = np.stack([graycoprops(glcm, prop).mean(axis=1) for prop in _GLCM_PROPS], axis=1)  # (distances, props)
    out += [float(v) for v in np.nan_to_num(props, nan=1.0).ravel()]  # a constant slice has correlation NaN → 1
    lbp = local_binary_pattern(levels, _LBP_POINTS, 1, method="uniform")
    hist = np.bincount(lbp.astype(np.int64).ravel(), minlength=_LBP_POINTS + 2)[: _LBP_POINTS + 2]
    out += [float(v) for v in hist / max(hist.sum(), 1)]
    return np.asarray(out, dtype=np.float64)


def plane_features(image: Image, slices_per_plane: int = 8) -> dict[str, np.ndarray]:
    """Feature vectors of ``slices_per_plane`` slices per orthogonal plane.

    Args:
        image: a CT volume in HU (any orientation).
        slices_per_plane: slices per plane, evenly spaced over the central 70 % of the volume.

    Returns:
        ``{"axial": (n, d), "coronal": (n, d), "sagittal": (n, d)}`` with ``d = len(FEATURE_NAMES)``.
    """
    if slices_per_plane < 1:
        raise InputError(f"slices_per_plane must be at least 1, got {slices_per_plane}.")
    result: dict[str, np.ndarray] = {}
    for plane in PLANES:
        stack, spacing = plane_slices(image, plane, slices_per_plane)
        result[plane] = np.stack([slice_features(s, spacing) for s in stack])
    return result


def _same_geometry(a: Image, b: Image) -> bool:
    return (
        a.shape == b.shape
        and bool(np.allclose(a.spacing, b.spacing, rtol=1e-3))
        and bool(np.allclose(a.direction_ras, b.direction_ras, atol=1e-3))
    )


def common_grid(
    images: Sequence[Image], reference: Image | None = None, resample: bool = True, label: str = "image"
) -> tuple[list[Image], list[str]]:
    """Put every image on the reference's voxel grid (shape, spacing, axis directions).

    Images of other shape, spacing or orientation are resampled linearly to the reference's spacing, directions
    and shape, centred on their own field of view (different patients sit at different scanner positions, so
    only the grid geometry is shared, not the origin); voxels outside the image get its minimum (air).

    Args:
        images: the images.
        reference: the grid to match; default the first image.
        resample: if False, an image on another grid raises :class:`InputError` instead.
        label: what the images are called in messages (``"synthetic image"``).

    Returns:
        The images on the common grid (unchanged objects where they already were) and notes saying which images
        were resampled.
    """
    if not images:
        raise InputError(f"The {label} set is empty; add at least one {label}.")
    reference = reference if reference is not None else images[0]
    ref_spacing = reference.spacing
    ref_direction = reference.direction_ras
    out: list[Image] = []
    moved: list[int] = []
    for index, image in enumerate(images):
        if _same_geometry(image, reference):
            out.append(image)
            continue
        if not resample:
            raise InputError(
                f"{label.capitalize()} {index} has shape {image.shape} and spacing "
                f"{tuple(round(float(s), 3) for s in image.spacing)} mm but the reference has shape {reference.shape} "
                f"and spacing {tuple(round(float(s), 3) for s in ref_spacing)} mm. Resample the set to one grid "
                "first, or pass resample=True to let MedAI resample it to the reference grid."
            )
        size_ijk = np.array(reference.size_ijk, dtype=float)
        centre = image.ijk_to_ras[:3, :3] @ ((np.array(image.size_ijk) - 1) / 2.0) + image.ijk_to_ras[:3, 3]
        linear = ref_direction @ np.diag(ref_spacing)
        origin = centre - linear @ ((size_ijk - 1) / 2.0)
        affine = affine_from_parts(origin, ref_spacing, ref_direction)
        array = resample_array(image, affine, reference.shape, linear=True)
        out.append(Image(array, affine, modality=image.modality, metadata=dict(image.metadata)))
        moved.append(index)
    notes: list[str] = []
    if moved:
        shown = ", ".join(str(i) for i in moved[:10]) + (" …" if len(moved) > 10 else "")
        notes.append(
            f"{len(moved)} {label}(s) ({shown}) had another shape/spacing/orientation and were resampled linearly "
            f"to the reference grid {reference.shape} (k, j, i) at "
            f"{tuple(round(float(s), 3) for s in ref_spacing)} mm, centred on their own field of view."
        )
    return out, notes
