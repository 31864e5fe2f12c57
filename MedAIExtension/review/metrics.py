"""Quantitative realism and diversity metrics of a synthetic image set against a real reference set.

* 2.5D FID — the Fréchet distance between the feature distributions of axial, coronal and sagittal slices, per
  plane and their mean (as MAISI reports it), on the offline radiomics-style features of
  :mod:`MedAIExtension.review.features`. Features are standardised with the real set's mean and standard
  deviation per plane first (so HU-sized and fraction-sized features weigh alike); :func:`frechet_distance`
  itself equals ``monai.metrics.FIDMetric`` on the same vectors.
* MMD — unbiased squared maximum mean discrepancy with a Gaussian (RBF) kernel, median-heuristic bandwidth, on
  the same standardised features (per plane and mean).
* MS-SSIM diversity — mean multi-scale SSIM (``monai.metrics.MultiScaleSSIMMetric``, 3D) over pairs of synthetic
  volumes; lower = more diverse. The real set's value is given for comparison.
* Tissue histogram distance — the 1-Wasserstein distance (HU) between the real and synthetic intensity
  distributions inside each HU band (``scipy.stats.wasserstein_distance`` on 1-HU histograms).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.progress import Progress
from MedAIExtension.review.features import PLANES, common_grid, plane_features

__all__ = [
    "DEFAULT_BANDS",
    "FEATURE_EXTRACTOR",
    "SetMetrics",
    "fid_25d",
    "frechet_distance",
    "mmd",
    "ms_ssim_diversity",
    "set_features",
    "set_metrics",
    "standardize",
    "tissue_histogram_distance",
]

ProgressLike = Progress | Callable[[float, str], None] | None

#: HU bands of the tissue histogram distance (low inclusive, high exclusive).
DEFAULT_BANDS: dict[str, tuple[float, float]] = {
    "lung": (-1000.0, -500.0),
    "fat": (-200.0, -30.0),
    "soft tissue": (-30.0, 150.0),
    "bone": (300.0, 2000.0),
}

#: One line naming the feature extractor, for reports.
FEATURE_EXTRACTOR = (
    "MedAI 2.5D radiomics features v1 (intensity percentiles and HU-band fractions, gradient, difference of "
    "Gaussians, GLCM at 1-2 px, uniform LBP; 8 slices per plane; standardised with the real set's statistics)"
)

_DIVERSITY_MAX_SIZE = 64
_DIVERSITY_WINDOW = (-1000.0, 1000.0)
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_MS_SSIM_KERNEL = 7


def _as_progress(progress: ProgressLike) -> Progress:
    return Progress.of(progress)


def _features_2d(features: Any, what: str) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] < 2:
        raise InputError(
            f"The {what} features must be a (number of images, number of features) array with at least 2 rows, "
            f"got shape {array.shape}. Give at least two feature vectors per set."
        )
    if not np.isfinite(array).all():
        raise InputError(f"The {what} features contain NaN or infinite values; check the feature extractor's input.")
    return array


# ---- distances on feature vectors -----------------------------------------------------------------------------
def frechet_distance(features_a: Any, features_b: Any) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors (the FID formula).

    ``|μa − μb|² + tr(Σa) + tr(Σb) − 2 tr((Σa Σb)^½)`` with unbiased covariances, as ``monai.metrics.FIDMetric``
    computes it. The trace of the matrix square root is taken from the eigenvalues of the symmetric
    ``Σa^½ Σb Σa^½`` (same value, no complex round-off for near-singular covariances).

    Args:
        features_a: ``(n, d)`` feature vectors of one set (n ≥ 2).
        features_b: ``(m, d)`` feature vectors of the other set (m ≥ 2).

    Returns:
        The distance, ≥ 0 (a round-off value just below zero for identical sets is returned as 0, where MONAI
        returns the tiny negative number).
    """
    a = _features_2d(features_a, "first set's")
    b = _features_2d(features_b, "second set's")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"The two feature sets have {a.shape[1]} and {b.shape[1]} features; use one extractor.")
    diff = a.mean(axis=0) - b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    middle = root_a @ cov_b @ root_a
    eigen = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    trace_root = float(np.sum(np.sqrt(np.clip(eigen, 0.0, None))))
    value = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root)
    return max(value, 0.0)  # round-off can make identical sets come out a hair below zero


def mmd(features_a: Any, features_b: Any, bandwidth: float | None = None) -> float:
    """Unbiased squared maximum mean discrepancy with a Gaussian kernel (Gretton et al., JMLR 2012).

    ``k(x, y) = exp(−|x − y|² / (2 σ²))``; σ is ``bandwidth`` or, by default, the median of the pairwise distances
    between all vectors of both sets (median heuristic). The unbiased estimate leaves out the diagonal of the
    within-set kernel sums, so it can be slightly negative when the sets are alike (≈ 0 means indistinguishable).

    Args:
        features_a: ``(n, d)`` feature vectors (n ≥ 2).
        features_b: ``(m, d)`` feature vectors (m ≥ 2).
        bandwidth: kernel width σ in feature units; None for the median heuristic.

    Returns:
        MMD² (unitless, at most 2).
    """
    a = _features_2d(features_a, "first set's")
    b = _features_2d(features_b, "second set's")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"The two feature sets have {a.shape[1]} and {b.shape[1]} features; use one extractor.")
    pooled = np.concatenate([a, b])
    squared = np.sum(pooled**2, axis=1)
    dist2 = np.clip(squared[:, None] + squared[None, :] - 2.0 * pooled @ pooled.T, 0.0, None)
    if bandwidth is None:
        upper = dist2[np.triu_indices(len(pooled), k=1)]
        positive = upper[upper > 0]
        sigma = float(np.sqrt(np.median(positive))) if positive.size else 1.0
    else:
        sigma = float(bandwidth)
        if not math.isfinite(sigma) or sigma <= 0:
            raise InputError(f"bandwidth must be a positive number, got {bandwidth!r}.")
    kernel = np.exp(-dist2 / (2.0 * sigma**2))
    n, m = len(a), len(b)
    k_aa, k_bb, k_ab = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    term_a = (k_aa.sum() - np.trace(k_aa)) / (n * (n - 1))
    term_b = (k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    return float(term_a + term_b - 2.0 * k_ab.mean())


# ---- features of image sets -----------------------------------------------------------------------------------
def set_features(
    images: Sequence[Image], slices_per_plane: int = 8, progress: ProgressLike = None, label: str = "image"
) -> dict[str, np.ndarray]:
    """The slice features of a whole set: ``{plane: (len(images) * slices_per_plane, d)}``."""
    if not images:
        raise InputError(f"The {label} set is empty; add at least one {label}.")
    report = _as_progress(progress)
    collected: dict[str, list[np.ndarray]] = {plane: [] for plane in PLANES}
    for index, image in enumerate(images):
        report(index / len(images), f"Features of {label} {index + 1}/{len(images)}")
        for plane, values in plane_features(image, slices_per_plane).items():
            collected[plane].append(values)
    report(1.0, f"Features of {len(images)} {label}(s)")
    return {plane: np.concatenate(parts) for plane, parts in collected.items()}


def standardize(reference: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Z-score feature columns: centred on the reference set's mean, scaled by the standard deviation of all sets.

    The pooled scale keeps one column from dominating: a feature that is almost constant in the real set (e.g.
    the 5th intensity percentile = the air outside the body, sd 0.08 HU over 200 real CTs) but varies a little in
    the synthetic set (sd 2.7 HU) would otherwise add (2.7 / 0.08)² ≈ 1100 to the FID on its own (measured in
    bench/review.py). Columns constant everywhere are left unscaled.
    """
    mean = reference.mean(axis=0)
    pooled = np.concatenate([reference, *others]).std(axis=0)
    scale = np.where(pooled > 1e-12, pooled, 1.0)
    return [(x - mean) / scale for x in (reference, *others)]


def _per_plane(
    real: Mapping[str, np.ndarray], synthetic: Mapping[str, np.ndarray], fn: Callable[[np.ndarray, np.ndarray], float]
) -> dict[str, float]:
    out: dict[str, float] = {}
    for plane in PLANES:
        r, s = standardize(real[plane], synthetic[plane])
        out[plane] = fn(r, s)
    out["mean"] = float(np.mean([out[p] for p in PLANES]))
    return out


def fid_25d(
    real: Sequence[Image],
    synthetic: Sequence[Image],
    slices_per_plane: int = 8,
    resample: bool = True,
    progress: ProgressLike = None,
) -> dict[str, float]:
    """2.5D FID of a synthetic set against a real set: per plane and the mean of the three.

    Args:
        real: the real reference images (CT in HU).
        synthetic: the synthetic images.
        slices_per_plane: slices per plane and image.
        resample: resample images on another grid to the first real image's grid (False: refuse them).
        progress: optional progress callback or :class:`Progress`.

    Returns:
        ``{"axial": ..., "coronal": ..., "sagittal": ..., "mean": ...}``.
    """
    report = _as_progress(progress)
    real_grid, synthetic_grid, _ = _on_common_grid(real, synthetic, resample)
    real_f = set_features(real_grid, slices_per_plane, report.stage(0.0, 0.5), "real image")
    synthetic_f = set_features(synthetic_grid, slices_per_plane, report.stage(0.5, 1.0), "synthetic image")
    return _per_plane(real_f, synthetic_f, frechet_distance)


def _on_common_grid(
    real: Sequence[Image], synthetic: Sequence[Image], resample: bool
) -> tuple[list[Image], list[Image], list[str]]:
    if not real:
        raise InputError("The real reference set is empty; import at least one real image.")
    if not synthetic:
        raise InputError("The synthetic set is empty; import at least one synthetic image.")
    real_grid, notes = common_grid(real, real[0], resample, "real image")
    synthetic_grid, more = common_grid(synthetic, real[0], resample, "synthetic image")
    return real_grid, synthetic_grid, notes + more


# ---- diversity --------------------------------------------------------------------------------------------------
def _diversity_volume(image: Image, factor: int) -> np.ndarray:
    low, high = _DIVERSITY_WINDOW
    data = (np.clip(image.array.astype(np.float32), low, high) - low) / (high - low)
    if factor > 1:
        k, j, i = (s // factor * factor for s in data.shape)
        data = data[:k, :j, :i].reshape(k // factor, factor, j // factor, factor, i // factor, factor)
        data = data.mean(axis=(1, 3, 5))
    return data


def _ms_ssim_setup(shape: tuple[int, ...]) -> tuple[tuple[float, ...], int]:
    smallest = min(shape)
    for count in range(len(_MS_SSIM_WEIGHTS), 0, -1):
        divisor = max(1, count - 1) ** 2  # MONAI's size check
        if smallest // divisor > _MS_SSIM_KERNEL - 1:
            weights = np.asarray(_MS_SSIM_WEIGHTS[:count])
            return tuple(float(w) for w in weights / weights.sum()), _MS_SSIM_KERNEL
    kernel = max(3, (smallest - 1) // 2 * 2 - 1)
    if smallest <= kernel - 1:
        raise InputError(
            f"Volumes of shape {shape} are too small for MS-SSIM; use volumes of at least 8 voxels a side."
        )
    return (1.0,), kernel


def ms_ssim_diversity(
    images: Sequence[Image],
    pairs: int = 100,
    seed: int = 0,
    resample: bool = True,
    progress: ProgressLike = None,
) -> float:
    """Mean 3D MS-SSIM over pairs of images of one set; lower = more diverse (1 = all identical).

    Volumes are windowed to [-1000, 1000] HU, scaled to [0, 1] and block-averaged to at most 64 voxels a side
    (MS-SSIM on 128³ is ~10x slower and the coarse scales dominate it anyway); MONAI's
    ``MultiScaleSSIMMetric`` (Gaussian kernel 7, σ 1.5) runs with as many of the standard five scale weights as
    the volume size allows (renormalised).

    Args:
        images: the set (at least 2 images).
        pairs: at most this many distinct pairs, drawn at random without replacement (all pairs if fewer exist).
        seed: seed of the pair draw.
        resample: resample images on another grid to the first image's grid (False: refuse them).
        progress: optional progress callback or :class:`Progress`.
    """
    import torch
    from monai.metrics import MultiScaleSSIMMetric

    if len(images) < 2:
        raise InputError(f"Diversity needs at least 2 images, got {len(images)}; add more images to the set.")
    if pairs < 1:
        raise InputError(f"pairs must be at least 1, got {pairs}.")
    report = _as_progress(progress)
    grid, _ = common_grid(images, images[0], resample, "image")
    all_pairs = [(a, b) for a in range(len(grid)) for b in range(a + 1, len(grid))]
    if len(all_pairs) > pairs:
        chosen = np.random.default_rng(seed).choice(len(all_pairs), size=pairs, replace=False)
        all_pairs = [all_pairs[int(c)] for c in np.sort(chosen)]
    factor = max(1, math.ceil(max(grid[0].shape) / _DIVERSITY_MAX_SIZE))
    volumes: dict[int, np.ndarray] = {}
    shape = _diversity_volume(grid[0], factor).shape
    weights, kernel = _ms_ssim_setup(shape)
    metric = MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, kernel_size=kernel, weights=weights)
    scores: list[float] = []
    batch = 8
    for start in range(0, len(all_pairs), batch):
        report(start / len(all_pairs), f"MS-SSIM pair {start + 1}/{len(all_pairs)}")
        chunk = all_pairs[start : start + batch]
        for index in {i for pair in chunk for i in pair}:
            if index not in volumes:
                volumes[index] = _diversity_volume(grid[index], factor)
        x = torch.from_numpy(np.stack([volumes[a] for a, _ in chunk]))[:, None]
        y = torch.from_numpy(np.stack([volumes[b] for _, b in chunk]))[:, None]
        with torch.no_grad():
            values = metric(x, y)
        assert isinstance(values, torch.Tensor)  # batched tensors in, one tensor of scores out
        scores.extend(float(v) for v in values.reshape(-1))
    report(1.0, f"MS-SSIM over {len(all_pairs)} pairs")
    return float(np.mean(scores))


# ---- intensity histograms ---------------------------------------------------------------------------------------
def _band_histograms(
    images: Sequence[Image], bands: Mapping[str, tuple[float, float]], report: Progress, label: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    low = math.floor(min(lo for lo, _ in bands.values()))
    high = math.ceil(max(hi for _, hi in bands.values()))
    counts = np.zeros(high - low + 1, dtype=np.int64)
    for index, image in enumerate(images):
        report(index / len(images), f"Histogram of {label} {index + 1}/{len(images)}")
        values = np.rint(image.array.astype(np.float32, copy=False)).astype(np.int64, copy=False).ravel()
        values = values[(values >= low) & (values <= high)]
        counts += np.bincount(values - low, minlength=len(counts))
    centres = np.arange(low, high + 1, dtype=np.float64)
    out = {}
    for name, (lo, hi) in bands.items():
        inside = (centres >= lo) & (centres < hi)
        out[name] = (centres[inside], counts[inside].astype(np.float64))
    return out


def tissue_histogram_distance(
    real: Sequence[Image],
    synthetic: Sequence[Image],
    bands: Mapping[str, tuple[float, float]] | None = None,
    progress: ProgressLike = None,
) -> dict[str, float]:
    """Wasserstein-1 distance (HU) between real and synthetic voxel intensities inside each HU band.

    Voxel values are rounded to whole HU and pooled over each set; within a band the two histograms are compared
    with ``scipy.stats.wasserstein_distance`` (the mean HU shift needed to turn one distribution into the other).
    A band empty in either set gives NaN.

    Args:
        real: the real images.
        synthetic: the synthetic images.
        bands: ``{name: (low, high)}`` HU ranges (low inclusive); default :data:`DEFAULT_BANDS`.
        progress: optional progress callback or :class:`Progress`.
    """
    from scipy.stats import wasserstein_distance

    if not real:
        raise InputError("The real reference set is empty; import at least one real image.")
    if not synthetic:
        raise InputError("The synthetic set is empty; import at least one synthetic image.")
    bands = dict(DEFAULT_BANDS if bands is None else bands)
    for name, (lo, hi) in bands.items():
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise InputError(f"HU band {name!r} must be (low, high) with low < high, got {(lo, hi)}.")
    report = _as_progress(progress)
    h_real = _band_histograms(real, bands, report.stage(0.0, 0.5), "real image")
    h_syn = _band_histograms(synthetic, bands, report.stage(0.5, 1.0), "synthetic image")
    out: dict[str, float] = {}
    for name in bands:
        (centres, w_real), (_, w_syn) = h_real[name], h_syn[name]
        if w_real.sum() == 0 or w_syn.sum() == 0:
            out[name] = float("nan")
        else:
            out[name] = float(wasserstein_distance(centres, centres, w_real, w_syn))
    return out


# ---- everything at once -----------------------------------------------------------------------------------------
def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class SetMetrics:
    """All set-level metrics of a synthetic set against a real set.

    Attributes:
        n_real: number of real images.
        n_synthetic: number of synthetic images.
        fid: 2.5D FID per plane and ``"mean"`` (0 = same feature distribution).
        mmd: unbiased MMD² per plane and ``"mean"`` (≈ 0 = indistinguishable; can be slightly negative).
        diversity_synthetic: mean MS-SSIM over synthetic–synthetic pairs (lower = more diverse); None for one image.
        diversity_real: the same over real–real pairs, for comparison; None for one image.
        tissue_histogram_distance: Wasserstein-1 distance in HU per HU band (NaN: band empty in one set).
        feature_extractor: which features FID and MMD use.
        notes: what was done to the input (resampling) and caveats.
    """

    n_real: int
    n_synthetic: int
    fid: dict[str, float]
    mmd: dict[str, float]
    diversity_synthetic: float | None
    diversity_real: float | None
    tissue_histogram_distance: dict[str, float]
    feature_extractor: str = FEATURE_EXTRACTOR
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (NaN becomes None)."""
        return {
            "n_real": self.n_real,
            "n_synthetic": self.n_synthetic,
            "fid": _finite(dict(self.fid)),
            "mmd": _finite(dict(self.mmd)),
            "diversity_synthetic": _finite(self.diversity_synthetic),
            "diversity_real": _finite(self.diversity_real),
            "tissue_histogram_distance": _finite(dict(self.tissue_histogram_distance)),
            "feature_extractor": self.feature_extractor,
            "notes": list(self.notes),
        }


def set_metrics(
    real: Sequence[Image],
    synthetic: Sequence[Image],
    progress: ProgressLike = None,
    slices_per_plane: int = 8,
    diversity_pairs: int = 100,
    bands: Mapping[str, tuple[float, float]] | None = None,
    resample: bool = True,
    seed: int = 0,
) -> SetMetrics:
    """Compute every set metric of ``synthetic`` against ``real``.

    Args:
        real: the real reference images (CT in HU).
        synthetic: the synthetic images.
        progress: optional progress callback or :class:`Progress` (cancellation raises ``CancelledError``).
        slices_per_plane: slices per plane and image for FID/MMD.
        diversity_pairs: at most this many pairs per set for MS-SSIM diversity.
        bands: HU bands of the histogram distance; default :data:`DEFAULT_BANDS`.
        resample: resample images on another grid to the first real image's grid (False: refuse them).
        seed: seed of the diversity pair draw.

    Raises:
        InputError: an empty set, or (``resample=False``) an image on another grid.
    """
    report = _as_progress(progress)
    real_grid, synthetic_grid, notes = _on_common_grid(real, synthetic, resample)
    real_f = set_features(real_grid, slices_per_plane, report.stage(0.0, 0.3), "real image")
    synthetic_f = set_features(synthetic_grid, slices_per_plane, report.stage(0.3, 0.6), "synthetic image")
    report(0.6, "FID and MMD")
    fid = _per_plane(real_f, synthetic_f, frechet_distance)
    distance = _per_plane(real_f, synthetic_f, mmd)
    diversity_synthetic = diversity_real = None
    if len(synthetic_grid) >= 2:
        diversity_synthetic = ms_ssim_diversity(synthetic_grid, diversity_pairs, seed, True, report.stage(0.62, 0.78))
    else:
        notes.append("Only one synthetic image: MS-SSIM diversity needs at least two.")
    if len(real_grid) >= 2:
        diversity_real = ms_ssim_diversity(real_grid, diversity_pairs, seed, True, report.stage(0.78, 0.92))
    histograms = tissue_histogram_distance(real, synthetic, bands, report.stage(0.92, 1.0))
    empty = [name for name, value in histograms.items() if math.isnan(value)]
    if empty:
        notes.append(f"HU band(s) {', '.join(empty)} hold no voxels in one of the sets; their distance is undefined.")
    report(1.0, "Set metrics done")
    return SetMetrics(
        n_real=len(real),
        n_synthetic=len(synthetic),
        fid=fid,
        mmd=distance,
        diversity_synthetic=diversity_synthetic,
        diversity_real=diversity_real,
        tissue_histogram_distance=histograms,
        notes=notes,
    )
