"""Input drift: is a study's CT like the CTs the model was trained on?

Per study, :func:`input_statistics` measures what a model is sensitive to and a scanner or protocol changes:

- ``hist_body`` / ``hist_lungs``: HU histograms (fractions, :data:`HIST_BINS` bins over :data:`HIST_RANGE_HU`)
  inside the body and, when a lung mask is given (e.g. the model's lung label), inside the lungs;
- ``pixel_mm`` (mean in-plane spacing), ``slice_mm`` (spacing along the axis closest to S), ``fov_mm`` (largest
  in-plane extent), ``length_mm`` (extent along that axis);
- ``noise_hu``: the noise in soft tissue, ``1.4826 · MAD / √2`` of the differences between in-plane neighbours whose
  values both lie within 100 HU of the soft-tissue mode, inside the body eroded by one voxel (a robust standard
  deviation of a high-pass residual; correlated kernel noise reads lower than its voxel standard deviation, the
  same way in training and in the study, so the comparison holds);
- ``air_mode_hu``: the HU mode of the air outside the body (-1000 on a calibrated scanner);
  both modes are read after a 5 x 5 in-plane mean filter, so heavy noise does not blur fat into soft tissue;
- ``soft_tissue_mode_hu``: the HU mode of the body between -50 and 350 HU (muscle and organs, about 40 HU; fat
  lies below the range, so an obese habitus does not move it).

The body is the largest connected region above :data:`BODY_THRESHOLD_HU` with its holes filled slice by slice.

:func:`training_distribution` summarises the statistics of a model's training cases (written by the training
script into the catalogue entry as ``input_distribution``); :func:`drift_score` compares one study with it. Each
scalar feature scores its distance *outside the training range* (min..max) in units of the training standard
deviation (never less than the feature's floor, :data:`FLOORS`), so anything the model saw scores 0; each
histogram scores how far its Wasserstein-1 distance (HU) to the training mean histogram exceeds the largest such
distance among the training cases, in the same units. The study's score is the largest of these; above
:data:`DEFAULT_THRESHOLD` it is out of distribution, with one human-readable reason per feature over the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage, stats

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.tracking.lungs import axial_axis, fill_holes_slicewise

__all__ = [
    "BODY_THRESHOLD_HU",
    "DEFAULT_THRESHOLD",
    "FLOORS",
    "HIST_BINS",
    "HIST_RANGE_HU",
    "SCALAR_FEATURES",
    "DriftResult",
    "body_mask",
    "drift_score",
    "input_statistics",
    "training_distribution",
]

HIST_BINS = 32
HIST_RANGE_HU = (-1100.0, 1500.0)
BODY_THRESHOLD_HU = -500.0
DEFAULT_THRESHOLD = 3.0
DISTRIBUTION_VERSION = 1

#: Scalar features of :func:`input_statistics`, in report order.
SCALAR_FEATURES = ("soft_tissue_mode_hu", "air_mode_hu", "noise_hu", "slice_mm", "pixel_mm", "fov_mm", "length_mm")
HISTOGRAMS = ("hist_body", "hist_lungs")

#: Smallest spread assumed per feature (a training set whose cases agree exactly must not flag a 1 HU change).
FLOORS: dict[str, float] = {
    "soft_tissue_mode_hu": 10.0,
    "air_mode_hu": 10.0,
    "noise_hu": 3.0,
    "slice_mm": 0.25,
    "pixel_mm": 0.1,
    "fov_mm": 20.0,
    "length_mm": 20.0,
    "hist_body": 10.0,
    "hist_lungs": 10.0,
}

_NAMES = {
    "noise_hu": "noise",
    "slice_mm": "slice spacing",
    "pixel_mm": "in-plane pixel",
    "fov_mm": "field of view",
    "length_mm": "scan length",
    "hist_body": "HU histogram in the body",
    "hist_lungs": "HU histogram in the lungs",
}


@dataclass(frozen=True)
class DriftResult:
    """How far one study lies from the training distribution.

    Attributes:
        score: the largest feature score (0 inside the training range; units of the training spread).
        out_of_distribution: ``score > threshold``.
        threshold: the score above which a study is out of distribution.
        features: each compared feature's score.
        reasons: one sentence per feature scoring above the threshold, worst first.
    """

    score: float
    out_of_distribution: bool
    threshold: float
    features: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "score": round(self.score, 3),
            "out_of_distribution": self.out_of_distribution,
            "threshold": self.threshold,
            "features": {k: round(v, 3) for k, v in self.features.items()},
            "reasons": list(self.reasons),
        }


def body_mask(image: Image) -> np.ndarray:
    """The body: largest connected region above :data:`BODY_THRESHOLD_HU`, holes filled in every axial slice."""
    above = np.asarray(image.array) > BODY_THRESHOLD_HU
    labels, count = ndimage.label(above)
    if count == 0:
        return above
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return fill_holes_slicewise(labels == int(np.argmax(sizes)), axial_axis(image))


def _histogram(values: np.ndarray) -> list[float] | None:
    if values.size == 0:
        return None
    counts, _ = np.histogram(values, bins=HIST_BINS, range=HIST_RANGE_HU)
    return [round(float(c), 6) for c in counts / values.size]


def _mode(values: np.ndarray, low: float, high: float, width: float = 4.0) -> float | None:
    """The mode of ``values`` between ``low`` and ``high`` from a lightly smoothed histogram (None when empty)."""
    values = values[(values >= low) & (values < high)]
    if values.size < 50:
        return None
    counts, edges = np.histogram(values, bins=int(round((high - low) / width)), range=(low, high))
    smooth = ndimage.gaussian_filter1d(counts.astype(float), 2.0)
    inner = smooth[1:-1]
    peaks = np.flatnonzero((inner >= smooth[:-2]) & (inner > smooth[2:])) + 1  # the tallest peak inside the range
    peak = int(peaks[np.argmax(smooth[peaks])]) if peaks.size else int(np.argmax(smooth))
    return float((edges[peak] + edges[peak + 1]) / 2.0)


def _noise(array: np.ndarray, body: np.ndarray, soft_mode: float | None, axis: int) -> float | None:
    """Robust noise (HU) from in-plane neighbour differences in soft tissue (see the module docstring)."""
    if soft_mode is None:
        return None
    tissue = body & (np.abs(array - soft_mode) < 100.0)
    structure = np.expand_dims(ndimage.generate_binary_structure(2, 1), axis)  # in-plane cross
    tissue = ndimage.binary_erosion(tissue, structure)
    in_plane = 2 if axis != 2 else 1
    lead = [slice(None)] * 3
    lag = [slice(None)] * 3
    lead[in_plane], lag[in_plane] = slice(1, None), slice(None, -1)
    both = tissue[tuple(lead)] & tissue[tuple(lag)]
    differences = array[tuple(lead)][both] - array[tuple(lag)][both]
    if differences.size < 100:
        return None
    mad = float(np.median(np.abs(differences - np.median(differences))))
    return 1.4826 * mad / math.sqrt(2.0)


def input_statistics(image: Image, lungs: np.ndarray | None = None) -> dict[str, Any]:
    """A study's input statistics for drift checks (JSON-ready; see the module docstring for each key).

    Args:
        image: the CT in HU.
        lungs: a boolean (or label) mask on the image's grid, non-zero in the lungs (e.g. the model's lung label).

    Raises:
        InputError: ``lungs`` is not on the image's grid.
    """
    array = np.asarray(image.array, dtype=np.float32)
    if lungs is not None and tuple(lungs.shape) != tuple(array.shape):
        raise InputError(
            f"The lung mask has shape {tuple(lungs.shape)} but the image {tuple(array.shape)}. Pass the lung "
            "label of the segmentation made on this image (same grid)."
        )
    axis = axial_axis(image)
    spacing_kji = np.asarray(image.spacing, dtype=float)[::-1]
    extent_kji = spacing_kji * np.asarray(array.shape, dtype=float)
    in_plane = [a for a in range(3) if a != axis]
    body = body_mask(image)
    size = [5, 5, 5]
    size[axis] = 1
    smooth = ndimage.uniform_filter(array, size=size)  # 5 x 5 in-plane mean: noise does not move the modes
    soft_mode = _mode(smooth[body], -50.0, 350.0)
    air_mode = _mode(smooth[~body], -1200.0, -400.0)
    del smooth
    lung_values = array[np.asarray(lungs, dtype=bool)] if lungs is not None else np.zeros(0, dtype=np.float32)

    def rounded(value: float | None, digits: int = 3) -> float | None:
        return None if value is None else round(float(value), digits)

    return {
        "version": DISTRIBUTION_VERSION,
        "hist_body": _histogram(array[body]),
        "hist_lungs": _histogram(lung_values),
        "pixel_mm": rounded(float(np.mean(spacing_kji[in_plane]))),
        "slice_mm": rounded(float(spacing_kji[axis])),
        "fov_mm": rounded(float(np.max(extent_kji[in_plane])), 1),
        "length_mm": rounded(float(extent_kji[axis]), 1),
        "noise_hu": rounded(_noise(array, body, soft_mode, axis), 2),
        "air_mode_hu": rounded(air_mode, 1),
        "soft_tissue_mode_hu": rounded(soft_mode, 1),
    }


def _wasserstein(a: Sequence[float], b: Sequence[float]) -> float:
    """Wasserstein-1 distance in HU between two histograms on the :data:`HIST_RANGE_HU` bins."""
    edges = np.linspace(*HIST_RANGE_HU, HIST_BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2.0
    wa, wb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if wa.sum() <= 0 or wb.sum() <= 0:
        return 0.0
    return float(stats.wasserstein_distance(centres, centres, wa, wb))


def training_distribution(statistics: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Summarise the training cases' :func:`input_statistics` (the catalogue's ``input_distribution``).

    Scalars: ``mean``, ``std``, ``min``, ``max`` and ``n`` over the cases that have the feature. Histograms: the
    mean histogram and the mean, standard deviation and maximum of the cases' Wasserstein-1 distances to it (HU).

    Raises:
        InputError: no statistics given.
    """
    if not statistics:
        raise InputError("A training distribution needs the input statistics of at least one training case.")
    result: dict[str, Any] = {
        "version": DISTRIBUTION_VERSION,
        "cases": len(statistics),
        "hist_bins": HIST_BINS,
        "hist_range_hu": list(HIST_RANGE_HU),
    }
    for name in SCALAR_FEATURES:
        values = np.array([float(s[name]) for s in statistics if s.get(name) is not None])
        if values.size:
            result[name] = {
                "mean": round(float(values.mean()), 3),
                "std": round(float(values.std()), 3),
                "min": round(float(values.min()), 3),
                "max": round(float(values.max()), 3),
                "n": int(values.size),
            }
    for name in HISTOGRAMS:
        hists = [s[name] for s in statistics if s.get(name)]
        if hists:
            mean = np.mean(np.asarray(hists, dtype=float), axis=0)
            distances = np.array([_wasserstein(h, mean) for h in hists])
            result[name] = {
                "mean": [round(float(v), 6) for v in mean],
                "w1_mean_hu": round(float(distances.mean()), 2),
                "w1_std_hu": round(float(distances.std()), 2),
                "w1_max_hu": round(float(distances.max()), 2),
                "n": len(hists),
            }
    return result


def _reason(name: str, value: float, summary: Mapping[str, Any]) -> str:
    mean, std, low, high = summary["mean"], summary["std"], summary["min"], summary["max"]
    if name in ("soft_tissue_mode_hu", "air_mode_hu"):
        what = "soft-tissue mode" if name == "soft_tissue_mode_hu" else "air mode"
        return (
            f"HU calibration shifted by {value - mean:+.0f} HU ({what} {value:.0f} HU vs training "
            f"{mean:.0f} ± {std:.0f})"
        )
    unit = "HU" if name.endswith("_hu") else "mm"
    digits = 1 if unit == "HU" or name in ("fov_mm", "length_mm") else 2
    return f"{_NAMES[name]} {value:.{digits}f} {unit} outside training {low:.{digits}f}–{high:.{digits}f} {unit}"


def drift_score(
    statistics: Mapping[str, Any], distribution: Mapping[str, Any], threshold: float = DEFAULT_THRESHOLD
) -> DriftResult:
    """Compare a study's :func:`input_statistics` with a model's :func:`training_distribution`.

    Features missing on either side are not compared.

    Raises:
        InputError: the distribution was made with other histogram bins or is not a training distribution.
    """
    if distribution.get("version") != DISTRIBUTION_VERSION or distribution.get("hist_bins") != HIST_BINS:
        raise InputError(
            "The model's input_distribution was written by another version of the drift statistics "
            f"(version {distribution.get('version')!r}, {distribution.get('hist_bins')!r} bins; this one: "
            f"version {DISTRIBUTION_VERSION}, {HIST_BINS} bins). Recompute it with "
            "python -m MedAIExtension.training.input_distribution --model NAME --write."
        )
    features: dict[str, float] = {}
    reasons: list[tuple[float, str]] = []
    for name in SCALAR_FEATURES:
        value, summary = statistics.get(name), distribution.get(name)
        if value is None or not summary:
            continue
        value = float(value)
        scale = max(float(summary["std"]), FLOORS[name])
        outside = max(float(summary["min"]) - value, value - float(summary["max"]), 0.0)
        features[name] = outside / scale
        if features[name] > threshold:
            reasons.append((features[name], _reason(name, value, summary)))
    for name in HISTOGRAMS:
        hist, summary = statistics.get(name), distribution.get(name)
        if not hist or not summary:
            continue
        distance = _wasserstein(hist, summary["mean"])
        scale = max(float(summary["w1_std_hu"]), FLOORS[name])
        features[name] = max(distance - float(summary["w1_max_hu"]), 0.0) / scale
        if features[name] > threshold:
            reasons.append(
                (
                    features[name],
                    f"{_NAMES[name]} {distance:.0f} HU (Wasserstein-1) from the training mean; training cases "
                    f"at most {float(summary['w1_max_hu']):.0f} HU",
                )
            )
    score = max(features.values(), default=0.0)
    reasons.sort(key=lambda item: -item[0])
    return DriftResult(
        score=float(score),
        out_of_distribution=bool(score > threshold),
        threshold=float(threshold),
        features=features,
        reasons=[text for _, text in reasons],
    )
