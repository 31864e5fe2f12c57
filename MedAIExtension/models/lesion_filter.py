"""False-positive control for the lesion label: a small learned filter applied to its components after inference.

A segmentation network trained on smooth drawings finds "nodules" at vessel junctions, airway walls and fissures.
Each connected component of the lesion label is described by a few shape, intensity and context features and
scored by a logistic-regression classifier (numpy only) stored in a small JSON file next to the model; components
that score below the file's threshold are removed. The threshold is chosen on validation phantoms by
:mod:`MedAIExtension.training.train_lesion_filter`.

Components are **26-connected**, as readers count lesions and as :mod:`MedAIExtension.segmentation.froc` matches
them, so one removed component is exactly one false positive less in the detection scores.

Components whose equivalent-sphere diameter is at least :data:`MASS_DIAMETER_MM` (30 mm: masses) are never
removed for their score: masses must always be found. Any component, a mass included, is removed when less than
half of it lies in the lungs' envelope (the per-slice convex hull of each lung,
:mod:`~MedAIExtension.models.lung_envelope`): chest-wall muscle below a lung base is no lung lesion.

A removed component becomes lung (the catalogue's ``lung_label``) when it lies inside the lung mask with its holes
filled, and background otherwise: a false nodule inside the lung is lung tissue (a vessel junction), and leaving a
hole there would make the lung segment and its volume wrong; one at the chest wall or in the mediastinum is not
lung.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.labels import label_boxes
from MedAIExtension.models.entry import LesionFilterSpec
from MedAIExtension.models.lung_envelope import LungEnvelope

__all__ = [
    "ALL_FEATURES",
    "FEATURE_NAMES",
    "FORMAT",
    "MASS_DIAMETER_MM",
    "LesionClassifier",
    "LesionComponent",
    "feature_matrix",
    "filter_lesions",
    "lesion_components",
    "load_lesion_classifier",
]

#: Components at least this large (equivalent-sphere diameter, mm) are masses and are never removed.
MASS_DIAMETER_MM = 30.0
#: Share of a component that must lie in the lungs' envelope (:mod:`~MedAIExtension.models.lung_envelope`); one
#: mostly outside it (chest wall, abdomen, heart) is no lung lesion, whatever its size.
MIN_ENVELOPE_FRACTION = 0.5
#: Voxels below this HU count as aerated lung.
LUNG_LIKE_HU = -400.0
#: Thickness of the shell around a component whose neighbourhood features are measured (mm).
SHELL_MM = 2.0
#: ``format`` value of a lesion filter JSON file.
FORMAT = "medai-lesion-filter/1"

_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # 26-connected, as in segmentation.froc

#: Every feature :func:`lesion_components` measures.
ALL_FEATURES: tuple[str, ...] = (
    "diameter_mm",
    "log_diameter_mm",
    "volume_mm3",
    "elongation",
    "flatness",
    "ellipsoid_fill",
    "mean_hu",
    "std_hu",
    "shell_lung_fraction",
    "shell_air_fraction",
    "lung_boundary_contact",
    "blobness",
    "tubeness",
)
#: The features the classifier uses by default (volume and diameter are one feature on a log scale).
FEATURE_NAMES: tuple[str, ...] = tuple(name for name in ALL_FEATURES if name not in ("diameter_mm", "volume_mm3"))


@dataclass(frozen=True)
class LesionComponent:
    """One connected component of the lesion label, with its features and (with a classifier) its score.

    Attributes:
        index: 1-based number of the component (in the order :func:`lesion_components` found them).
        center_ras: centroid in RAS millimetres.
        diameter_mm: equivalent-sphere diameter.
        features: every feature of :data:`ALL_FEATURES`.
        score: the classifier's probability that it is a real lesion; None without a classifier.
        kept: whether the filter keeps it (always True for masses and without a classifier).
        is_mass: diameter at least :data:`MASS_DIAMETER_MM` (never removed).
        in_lungs: at least :data:`MIN_ENVELOPE_FRACTION` of it lies in the lungs' envelope (always True without
            a lung label); a component outside is no lung lesion, whatever its score.
    """

    index: int
    center_ras: tuple[float, float, float]
    diameter_mm: float
    features: dict[str, float]
    score: float | None = None
    kept: bool = True
    is_mass: bool = False
    in_lungs: bool = True
    voxels: np.ndarray = field(default_factory=lambda: np.empty((0, 3), dtype=np.intp), repr=False, compare=False)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


@dataclass(frozen=True, eq=False)
class LesionClassifier:
    """Logistic regression on standardised features: ``p = sigmoid(w · (x - mean) / scale + bias)``.

    A component is kept when ``p >= threshold``. Built by :meth:`fit`, stored with :meth:`save` and read back with
    :func:`load_lesion_classifier`; the constructor validates every field.
    """

    feature_names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float = 0.5
    training: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.feature_names)
        unknown = [n for n in names if n not in ALL_FEATURES]
        if not names or unknown or len(set(names)) != len(names):
            raise InputError(
                f"Lesion filter features must be distinct names from {', '.join(ALL_FEATURES)}; got {list(names)}."
            )
        arrays = {}
        for key in ("mean", "scale", "weights"):
            value = np.asarray(getattr(self, key), dtype=float)
            if value.shape != (len(names),) or not np.isfinite(value).all():
                raise InputError(f"Lesion filter {key} must be {len(names)} finite numbers, one per feature.")
            arrays[key] = value
        if (arrays["scale"] <= 0).any():
            raise InputError("Lesion filter scales must be positive.")
        if not math.isfinite(float(self.bias)) or not 0.0 <= float(self.threshold) <= 1.0:
            raise InputError("A lesion filter needs a finite bias and a threshold in [0, 1].")
        object.__setattr__(self, "feature_names", names)
        for key, value in arrays.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "bias", float(self.bias))
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "training", dict(self.training))

    def probability(self, features: np.ndarray) -> np.ndarray:
        """Probability of being a real lesion for each row of ``features`` (columns in ``feature_names`` order)."""
        x = np.atleast_2d(np.asarray(features, dtype=float))
        return _sigmoid(((x - self.mean) / self.scale) @ self.weights + self.bias)

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        is_lesion: np.ndarray,
        feature_names: Sequence[str] = FEATURE_NAMES,
        l2: float = 1.0,
        balanced: bool = True,
        iterations: int = 100,
    ) -> LesionClassifier:
        """Fit by Newton's method (IRLS) with an L2 penalty ``l2`` on the weights (not the bias).

        With ``balanced`` the two classes weigh the same in total (there are usually far more true lesions than
        false components, or the other way round). The threshold is 0.5 until :meth:`with_threshold` sets one.

        Raises:
            InputError: no rows, rows and labels differ in number, or one of the two classes is missing.
        """
        x = np.asarray(features, dtype=float)
        y = np.asarray(is_lesion, dtype=float).ravel()
        if x.ndim != 2 or x.shape[0] != y.size or x.shape[1] != len(feature_names) or y.size == 0:
            raise InputError(f"Need one row of {len(feature_names)} features per label; got {x.shape} and {y.size}.")
        positives = int(y.sum())
        if positives == 0 or positives == y.size:
            raise InputError(
                f"Fitting the lesion filter needs true and false components; got {positives} true of {y.size}. "
                "Use more (or other) training seeds."
            )
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        z = np.column_stack([(x - mean) / scale, np.ones(y.size)])
        if balanced:
            sample = np.where(y > 0.5, y.size / (2.0 * positives), y.size / (2.0 * (y.size - positives)))
        else:
            sample = np.ones(y.size)
        penalty = np.full(z.shape[1], float(l2))
        penalty[-1] = 0.0
        w = np.zeros(z.shape[1])
        for _ in range(iterations):
            p = _sigmoid(z @ w)
            gradient = z.T @ (sample * (p - y)) + penalty * w
            hessian = (z * (sample * p * (1.0 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hessian, gradient)
            w -= step
            if float(np.abs(step).max()) < 1e-8:
                break
        return cls(tuple(feature_names), mean, scale, w[:-1], float(w[-1]), 0.5, {"l2": l2, "balanced": balanced})

    def with_threshold(self, threshold: float, training: Mapping[str, Any] | None = None) -> LesionClassifier:
        """The same classifier with another threshold (and, when given, a training record merged in)."""
        record = {**self.training, **(training or {})}
        return LesionClassifier(
            self.feature_names, self.mean, self.scale, self.weights, self.bias, float(threshold), record
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written by :meth:`save`."""
        return {
            "format": FORMAT,
            "feature_names": list(self.feature_names),
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "weights": [float(v) for v in self.weights],
            "bias": self.bias,
            "threshold": self.threshold,
            "mass_diameter_mm": MASS_DIAMETER_MM,
            "training": dict(self.training),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LesionClassifier:
        """Build from :meth:`to_dict`'s form; raises :class:`InputError` (or KeyError/TypeError) when it is not."""
        if data.get("format") != FORMAT:
            raise InputError(f"its format is {data.get('format')!r}, not {FORMAT!r}")
        return cls(
            tuple(data["feature_names"]),
            np.asarray(data["mean"], dtype=float),
            np.asarray(data["scale"], dtype=float),
            np.asarray(data["weights"], dtype=float),
            float(data["bias"]),
            float(data["threshold"]),
            dict(data.get("training", {})),
        )

    def save(self, path: str | Path) -> Path:
        """Write the JSON file (stable formatting, so its sha256 only changes with its content)."""
        target = Path(path)
        target.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return target


def load_lesion_classifier(path: str | Path) -> LesionClassifier:
    """Read a lesion filter JSON file.

    Raises:
        InputError: the file is missing, not JSON or not a lesion filter; the message names the file and the fix.
    """
    path = Path(path)
    fix = (
        "Re-create it with 'python -m MedAIExtension.training.train_lesion_filter' (or restore the extension's "
        "copy), or remove postprocessing.lesion_filter from the model's catalogue entry."
    )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise InputError("it holds no JSON object")
        return LesionClassifier.from_dict(data)
    except FileNotFoundError:
        raise InputError(f"The lesion filter file {path} is missing. {fix}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"The lesion filter file {path} is not valid JSON (line {exc.lineno}). {fix}") from None
    except (InputError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"The lesion filter file {path} is not a valid lesion filter ({exc}). {fix}") from None


def _spacing_kji(ct: Image) -> np.ndarray:
    return np.asarray(ct.spacing, dtype=float)[::-1]


def _ellipsoid(radii: Sequence[int], spacing: np.ndarray, radius_mm: float) -> np.ndarray:
    """An ellipsoidal structuring element of ``radius_mm`` on a grid with ``spacing`` (k, j, i)."""
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radii)]
    distance = sum((g * s) ** 2 for g, s in zip(grids, spacing))
    element = np.asarray(distance <= radius_mm**2 + 1e-6)
    for axis, r in enumerate(radii):  # at least one voxel along every axis, however thick the slices
        for step in (-1, 0, 1):
            index = list(radii)
            index[axis] = r + step
            element[tuple(index)] = True
    return element


def _shape_features(points_kji: np.ndarray, ct: Image) -> dict[str, float]:
    """Elongation, flatness and ellipsoid fill from the PCA of the voxel positions in millimetres.

    Each voxel adds its own extent (a uniform box: variance 1/12 of its size along each of its axes), so a
    component a single thick slice high is not taken for a flat plate thinner than the slice.
    """
    axes = ct.ijk_to_ras[:3, :3]
    ras = points_kji[:, ::-1].astype(float) @ axes.T
    covariance = np.cov(ras, rowvar=False, bias=True) if len(ras) > 1 else np.zeros((3, 3))
    covariance = covariance + axes @ np.diag([1.0 / 12.0] * 3) @ axes.T
    eig = np.sort(np.clip(np.linalg.eigvalsh(covariance), 1e-12, None))[::-1]
    volume = len(points_kji) * ct.voxel_volume_mm3
    ellipsoid = 4.0 / 3.0 * math.pi * float(np.sqrt(np.prod(5.0 * eig)))  # a solid ellipsoid: variance a²/5
    return {
        "elongation": float(np.sqrt(eig[1] / eig[0])),
        "flatness": float(np.sqrt(eig[2] / eig[1])),
        "ellipsoid_fill": float(min(volume / ellipsoid, 2.0)),
    }


def _block_mean(array: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Mean over blocks of ``factors`` voxels (the array is trimmed to whole blocks)."""
    if all(f == 1 for f in factors):
        return array
    trimmed = array[tuple(slice(0, (n // f) * f) for n, f in zip(array.shape, factors))]
    shape: list[int] = []
    for n, f in zip(trimmed.shape, factors):
        shape += [n // f, f]
    return np.asarray(trimmed.reshape(shape).mean(axis=(1, 3, 5)))


def _hessian_features(hu: np.ndarray, mask: np.ndarray, spacing: np.ndarray, radius_mm: float) -> dict[str, float]:
    """Blob-versus-tube measures from the Hessian of the CT smoothed at a scale from the component's radius.

    The scale is ``radius / sqrt(3)`` (the scale at which a sphere of that radius answers best), at least half the
    largest voxel size; each axis is smoothed only by what its own voxel size has not blurred already, so thick
    slices are not smoothed twice; the second derivatives are Gaussian-derivative filters. Big crops are
    block-averaged to about half the scale first. With eigenvalues
    ordered ``|l1| <= |l2| <= |l3|`` at the brighter half of the component's voxels: ``blobness`` is the median of
    ``l1 / l3`` (a sphere ~1, a tube or a plate ~0), ``tubeness`` the median of ``l2 / l3`` (a sphere or a tube ~1,
    a plate such as a fissure or an airway wall ~0).
    """
    sigma_mm = max(radius_mm / math.sqrt(3.0), 0.5 * float(spacing.max()))
    factors = [max(1, int(sigma_mm / (2.0 * s))) for s in spacing]
    coarse = _block_mean(hu, factors)
    coarse_spacing = spacing * np.asarray(factors)
    own_blur = coarse_spacing**2 / 12.0
    sigma_vox = np.maximum(np.sqrt(np.clip(sigma_mm**2 - own_blur, 0.0, None)) / coarse_spacing, 0.5)
    where = np.argwhere(mask) // np.asarray(factors)
    where = np.unique(np.minimum(where, np.asarray(coarse.shape) - 1), axis=0)
    if min(coarse.shape) < 3 or len(where) == 0:
        return {"blobness": 0.0, "tubeness": 0.0}
    index = tuple(where.T)
    smooth = ndimage.gaussian_filter(coarse, sigma_vox, mode="nearest")
    hessian = np.empty((len(where), 3, 3))
    for a in range(3):
        for b in range(a, 3):
            order = [0, 0, 0]
            order[a] += 1
            order[b] += 1
            second = ndimage.gaussian_filter(coarse, sigma_vox, order=order, mode="nearest")
            hessian[:, a, b] = hessian[:, b, a] = second[index] / (coarse_spacing[a] * coarse_spacing[b])
    values = smooth[index]
    bright = values >= np.median(values)
    eig = np.linalg.eigvalsh(hessian[bright])
    eig = np.take_along_axis(eig, np.argsort(np.abs(eig), axis=1), axis=1)
    largest = np.where(np.abs(eig[:, 2]) > 1e-9, eig[:, 2], 1e-9)
    return {
        "blobness": float(np.median(np.clip(eig[:, 0] / largest, -1.0, 1.0))),
        "tubeness": float(np.median(np.clip(eig[:, 1] / largest, -1.0, 1.0))),
    }


def _crop_box(points_kji: np.ndarray, pad: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
    low = np.maximum(points_kji.min(axis=0) - pad, 0)
    high = np.minimum(points_kji.max(axis=0) + pad + 1, np.asarray(shape))
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))  # type: ignore[return-value]


def _component_features(
    points_kji: np.ndarray, labelmap: np.ndarray, ct: Image, label: int, lung_label: int | None
) -> dict[str, float]:
    """Every feature of :data:`ALL_FEATURES` for one component given by its voxel indices."""
    spacing = _spacing_kji(ct)
    volume = len(points_kji) * ct.voxel_volume_mm3
    diameter = float(np.cbrt(6.0 * volume / math.pi))
    radius = diameter / 2.0
    sigma_mm = max(radius / math.sqrt(3.0), 0.5 * float(spacing.max()))
    shell_vox = np.maximum(np.rint(SHELL_MM / spacing).astype(int), 1)
    pad = np.maximum(np.ceil(3.0 * sigma_mm / spacing).astype(int) + 2, shell_vox + 1)
    box = _crop_box(points_kji, pad, labelmap.shape)
    offset = np.array([s.start for s in box])
    mask = np.zeros(tuple(s.stop - s.start for s in box), dtype=bool)
    mask[tuple((points_kji - offset).T)] = True
    hu = np.asarray(ct.array[box], dtype=np.float32)
    labels = labelmap[box]
    values = hu[mask]
    shell = ndimage.binary_dilation(mask, structure=_ellipsoid(tuple(shell_vox), spacing, SHELL_MM))
    shell &= labels != label  # neither this component nor a neighbouring one
    shell_hu, shell_labels = hu[shell], labels[shell]
    count = max(int(shell.sum()), 1)
    air = shell_hu < LUNG_LIKE_HU
    if lung_label is not None:
        lung_like = air | (shell_labels == lung_label)
        outside = (shell_labels != lung_label) & (shell_labels != label)
    else:
        lung_like, outside = air, ~air
    features = {
        "diameter_mm": diameter,
        "log_diameter_mm": float(math.log(max(diameter, 0.1))),
        "volume_mm3": float(volume),
        "mean_hu": float(values.mean()),
        "std_hu": float(values.std()),
        "shell_lung_fraction": float(lung_like.sum() / count),
        "shell_air_fraction": float(air.sum() / count),
        "lung_boundary_contact": float(outside.sum() / count),
    }
    features.update(_shape_features(points_kji, ct))
    features.update(_hessian_features(hu, mask, spacing, radius))
    return features


def _components(labelmap: np.ndarray, label: int) -> list[np.ndarray]:
    """Voxel indices ``(k, j, i)`` of each 26-connected component of ``label``, inside the label's bounding box."""
    box = label_boxes(labelmap, [label]).get(label)
    if box is None:
        return []
    components, _ = ndimage.label(labelmap[box] == label, structure=_CONNECTIVITY)
    offset = np.array([s.start for s in box])
    found = []
    for index, sub in enumerate(ndimage.find_objects(components), start=1):
        if sub is None:
            continue
        local = np.argwhere(components[sub] == index) + np.array([s.start for s in sub])
        found.append(local + offset)
    return found


def feature_matrix(components: Sequence[LesionComponent], names: Sequence[str] = FEATURE_NAMES) -> np.ndarray:
    """The ``(components, features)`` matrix of ``names`` (the classifier's input)."""
    return np.array([[c.features[n] for n in names] for c in components], dtype=float).reshape(-1, len(names))


def lesion_components(
    labelmap: np.ndarray,
    ct: Image,
    label: int,
    lung_label: int | None = None,
    classifier: LesionClassifier | None = None,
) -> list[LesionComponent]:
    """Features (and, with ``classifier``, scores and keep decisions) of each component of ``label``.

    ``labelmap`` must lie on ``ct``'s grid (same shape; the affine is ``ct``'s). ``lung_label`` is the label value
    of the lung, used for the neighbourhood features; without it only the HU values say what is lung.
    """
    if labelmap.shape != ct.shape:
        raise InputError(f"The label map {labelmap.shape} and the CT {ct.shape} must share one grid.")
    found = []
    envelope = LungEnvelope(labelmap, ct, lung_label) if lung_label is not None else None
    for index, points in enumerate(_components(labelmap, label), start=1):
        features = _component_features(points, labelmap, ct, label, lung_label)
        in_lungs = envelope is None or envelope.fraction_inside(points) >= MIN_ENVELOPE_FRACTION
        centre = ct.ijk_to_ras[:3, :3] @ points[:, ::-1].mean(axis=0) + ct.ijk_to_ras[:3, 3]
        diameter = features["diameter_mm"]
        is_mass = diameter >= MASS_DIAMETER_MM
        score = None
        kept = True
        if classifier is not None:
            score = float(classifier.probability(_row(features, classifier.feature_names))[0])
            kept = in_lungs and (is_mass or score >= classifier.threshold)
        found.append(
            LesionComponent(
                index,
                (float(centre[0]), float(centre[1]), float(centre[2])),
                diameter,
                features,
                score,
                kept,
                is_mass,
                in_lungs,
                points,
            )
        )
    return found


def _row(features: Mapping[str, float], names: Sequence[str]) -> np.ndarray:
    """One row of features in the order of ``names``."""
    return np.array([[float(features[n]) for n in names]], dtype=float)


def _inside_lung(points_kji: np.ndarray, labelmap: np.ndarray, ct: Image, lung_label: int) -> bool:
    """Whether most of a component lies inside the lung mask with its holes filled (in a crop around it).

    The crop reaches a few millimetres past the component: a component surrounded by lung is a hole of the lung
    mask there, one that touches the chest wall or the mediastinum connects to the crop's border.
    """
    pad = np.maximum(np.ceil(5.0 / _spacing_kji(ct)).astype(int), 2)
    box = _crop_box(points_kji, pad, labelmap.shape)
    offset = np.array([s.start for s in box])
    lung = labelmap[box] == lung_label
    filled = ndimage.binary_fill_holes(lung)
    return bool(filled[tuple((points_kji - offset).T)].mean() >= 0.5)


def filter_lesions(
    labelmap: np.ndarray,
    ct: Image,
    spec: LesionFilterSpec,
    classifier: LesionClassifier | None = None,
    scored: list[LesionComponent] | None = None,
) -> np.ndarray:
    """Remove the components of ``spec.label`` that the lesion filter rejects (in place); returns ``labelmap``.

    When ``scored`` is given, every component the filter judged (kept or not, with its score) is appended to it:
    the candidate list of a detection evaluation, ranked by the filter's score (:mod:`.heldout_v2
    <MedAIExtension.training.heldout_v2>`).

    ``labelmap`` lies on ``ct``'s grid. The classifier is read from ``spec.path`` unless given. A rejected
    component becomes ``spec.lung_label`` when it lies inside the filled lung mask, else 0. Components whose
    equivalent diameter is at least :data:`MASS_DIAMETER_MM` (30 mm, masses) are never removed for their score,
    only when they lie mostly outside the lungs' envelope.

    Raises:
        InputError: the filter file is missing or invalid, or the grids differ.
    """
    classifier = classifier or load_lesion_classifier(spec.path)
    components = lesion_components(labelmap, ct, spec.label, spec.lung_label, classifier)
    if scored is not None:
        scored.extend(components)
    for component in components:
        if component.kept:
            continue
        inside = spec.lung_label is not None and _inside_lung(component.voxels, labelmap, ct, spec.lung_label)
        labelmap[tuple(component.voxels.T)] = spec.lung_label if inside and spec.lung_label is not None else 0
    return labelmap
