"""The lesion false-positive filter: its features, its classifier file, its place in inference, its training steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from MedAIExtension.errors import CatalogError, ChecksumError, InputError
from MedAIExtension.io import Image, affine_from_parts
from MedAIExtension.models.backends import load_backend
from MedAIExtension.models.catalog import ModelEntry, sha256_of, validate_catalog_data
from MedAIExtension.models.entry import LesionFilterSpec
from MedAIExtension.models.inference import InferenceOptions, run_inference
from MedAIExtension.models.lesion_filter import (
    FEATURE_NAMES,
    MASS_DIAMETER_MM,
    LesionClassifier,
    feature_matrix,
    filter_lesions,
    lesion_components,
    load_lesion_classifier,
)
from MedAIExtension.training.train_lesion_filter import choose_threshold, operating_point, parse_seeds
from Testing.model_helpers import tiny_onnx

LUNG, LESION = 1, 2


def _scene(spacing: tuple[float, float, float] = (0.8, 0.8, 1.0), shape: tuple[int, int, int] = (48, 64, 64)):
    """Lung (-850 HU) with a 10 mm sphere and a 3 mm vessel running through (40 HU); both labelled as lesions,
    the vessel only along 14 mm of its length (how a network marks a vessel segment as a nodule)."""
    affine = affine_from_parts([0.0, 0.0, 0.0], spacing, np.eye(3))
    k, j, i = np.indices(shape, dtype=float)
    z, y, x = k * spacing[2], j * spacing[1], i * spacing[0]
    sphere = (x - 16) ** 2 + (y - 16) ** 2 + (z - shape[0] * spacing[2] / 2) ** 2 <= 5.0**2
    vessel = (x - 36) ** 2 + (z - shape[0] * spacing[2] / 2) ** 2 <= 1.5**2
    hu = np.full(shape, -850.0, dtype=np.float32)
    hu[sphere | vessel] = 40.0
    hu += np.random.default_rng(0).normal(0.0, 20.0, shape).astype(np.float32)
    labels = np.full(shape, LUNG, dtype=np.uint8)
    labels[sphere] = LESION
    segment = vessel & (np.abs(y - 25.0) <= 7.0)
    labels[segment] = LESION
    return Image(hu, affine, modality="CT"), labels, sphere, segment


def _blob_filter() -> LesionClassifier:
    """A hand-made filter: real lesions are blob-like (blobness well above 0), vessel segments are not."""
    return LesionClassifier(("blobness",), np.array([0.0]), np.array([0.1]), np.array([1.0]), -3.0, 0.5)


@pytest.mark.parametrize("spacing", [(0.8, 0.8, 1.0), (0.7, 0.7, 2.5)])
def test_features_tell_a_sphere_from_a_vessel(spacing: tuple[float, float, float]) -> None:
    shape = (48, 64, 64) if spacing[2] < 2 else (20, 64, 64)
    ct, labels, _, _ = _scene(spacing, shape)
    components = lesion_components(labels, ct, LESION, LUNG)
    assert len(components) == 2
    sphere, vessel = sorted(components, key=lambda c: c.center_ras[0])
    assert sphere.diameter_mm == pytest.approx(10.0, rel=0.15)
    assert sphere.features["blobness"] > 0.3 > 0.15 > vessel.features["blobness"]
    assert sphere.features["elongation"] > 0.8 > 0.5 > vessel.features["elongation"]
    assert sphere.features["shell_air_fraction"] > vessel.features["shell_air_fraction"]
    assert sphere.features["lung_boundary_contact"] == 0.0
    assert set(FEATURE_NAMES) <= set(sphere.features)
    assert feature_matrix(components).shape == (2, len(FEATURE_NAMES))


def test_filter_removes_the_vessel_segment_into_the_lung_and_keeps_the_sphere() -> None:
    ct, labels, sphere, segment = _scene()
    spec = LesionFilterSpec(LESION, Path("unused.json"), lung_label=LUNG)
    out = filter_lesions(labels, ct, spec, _blob_filter())
    assert out is labels
    assert (labels[sphere] == LESION).all()
    assert (labels[segment] == LUNG).all()  # inside the lung: becomes lung, not a hole
    outside = labels.copy()
    outside[:] = 0
    outside[segment] = LESION
    filter_lesions(outside, ct, spec, _blob_filter())
    assert not outside.any()  # not inside the lung mask: becomes background


def test_a_mass_is_never_removed() -> None:
    ct, labels, _, _ = _scene((1.0, 1.0, 1.0), (40, 64, 64))
    labels[:] = LUNG
    labels[4:36, 10:54, 20:44] = LESION  # a 32 x 44 x 24 mm block: equivalent diameter ~ 41 mm
    labels[20, 5, 5] = LESION  # a small component next to it
    reject_all = LesionClassifier(("blobness",), np.zeros(1), np.ones(1), np.zeros(1), -10.0, 1.0)
    components = lesion_components(labels, ct, LESION, LUNG, reject_all)
    mass = max(components, key=lambda c: c.diameter_mm)
    assert mass.diameter_mm >= MASS_DIAMETER_MM and mass.is_mass and mass.kept and mass.score is not None
    filter_lesions(labels, ct, LesionFilterSpec(LESION, Path("x.json"), LUNG), reject_all)
    assert (labels[4:36, 10:54, 20:44] == LESION).all()
    assert labels[20, 5, 5] == LUNG


def test_a_fitted_classifier_round_trips_through_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, len(FEATURE_NAMES)))
    y = x[:, 0] + 0.5 * x[:, 3] + rng.normal(0.0, 0.3, 80) > 0
    fitted = LesionClassifier.fit(x, y, FEATURE_NAMES, l2=0.5).with_threshold(0.3, {"train_seeds": "1-2"})
    assert ((fitted.probability(x) >= 0.5) == y).mean() > 0.85
    path = fitted.save(tmp_path / "filter.json")
    loaded = load_lesion_classifier(path)
    np.testing.assert_allclose(loaded.probability(x), fitted.probability(x), rtol=1e-12)
    assert loaded.threshold == 0.3 and loaded.training["train_seeds"] == "1-2"
    assert loaded.feature_names == FEATURE_NAMES
    with pytest.raises(InputError, match="true and false"):
        LesionClassifier.fit(x, np.ones(80, dtype=bool))


@pytest.mark.parametrize(
    "content",
    ["{not json", json.dumps({"format": "something-else"}), json.dumps({"format": "medai-lesion-filter/1"})],
)
def test_a_bad_filter_file_names_the_file_and_the_fix(tmp_path: Path, content: str) -> None:
    path = tmp_path / "broken-filter.json"
    path.write_text(content, encoding="utf-8")
    ct, labels, _, _ = _scene()
    with pytest.raises(InputError, match=r"broken-filter\.json") as caught:
        filter_lesions(labels, ct, LesionFilterSpec(LESION, path, LUNG))
    assert "train_lesion_filter" in str(caught.value)
    with pytest.raises(InputError, match="missing"):
        load_lesion_classifier(tmp_path / "absent.json")


def _entry(folder: Path, with_filter: bool = True, listed: bool = True, extent: float | None = None) -> ModelEntry:
    # lung where HU < -300 (normalised 0.5), lesion above; background never wins
    model = tiny_onnx(folder / "lung-lesion.onnx", out_channels=3, weights=[0.0, -1.0, 1.0], bias=[-10.0, 0.5, 0.0])
    filter_path = _blob_filter().save(folder / "lung-lesion-filter.json")
    files = [{"path": model.name, "sha256": sha256_of(model), "role": "model"}]
    if listed:
        files.append({"path": filter_path.name, "sha256": sha256_of(filter_path), "role": "postprocessing"})
    data = {
        "name": "lung-lesion",
        "title": "Lung and lesions",
        "version": "1",
        "task": "segmentation",
        "backend": "onnx",
        "files": files,
        "input": {
            "modality": "CT",
            "spacing": None,
            "orientation": "native",
            "normalization": {"type": "clip_scale", "a_min": -1000, "a_max": 400, "b_min": 0, "b_max": 1},
            "patch_size": [32, 32, 32],
        },
        "postprocessing": {"min_component_mm3": 10.0},
        "labels": [
            {"value": LUNG, "name": "Lung", "color": [0, 1, 0]},
            {"value": LESION, "name": "Lesion", "color": [1, 0, 0]},
        ],
    }
    if with_filter:
        data["postprocessing"]["lesion_filter"] = {"label": LESION, "file": filter_path.name, "lung_label": LUNG}
        if extent is not None:
            data["postprocessing"]["lesion_filter"]["extent_logit"] = extent
    validate_catalog_data(data, "the test entry", entry_only=True)
    return ModelEntry.from_dict(data, folder)


def test_inference_with_a_catalogued_filter_drops_the_vessel_segment(tmp_path: Path) -> None:
    ct, _, sphere, _ = _scene()
    vessel = (ct.array > -300) & ~sphere  # the model marks the whole vessel: one long tube component
    entry = _entry(tmp_path)
    backend = load_backend(entry, "cpu")
    plain = run_inference(ct, entry, backend, InferenceOptions(postprocess=False)).labelmap.array
    assert (plain[vessel] == LESION).mean() > 0.9  # without post-processing the filter does not run
    filtered = run_inference(ct, entry, backend).labelmap.array
    assert (filtered[sphere] == LESION).mean() > 0.9
    assert not (filtered[vessel] == LESION).any()  # it reaches the image's edge: not enclosed by lung, so 0
    unfiltered = run_inference(ct, _entry(tmp_path, with_filter=False), backend).labelmap.array
    assert (unfiltered[vessel] == LESION).mean() > 0.9


def test_a_catalogued_extent_margin_takes_in_the_kept_lesions_blurred_rim(tmp_path: Path) -> None:
    """With ``extent_logit`` the sphere the filter keeps grows into its partial-volume rim (here HU -650..-790 after
    blurring), and only there: lung and the rejected vessel stay as they were."""
    ct, _, sphere, _ = _scene()
    ct = Image(ndimage.gaussian_filter(ct.array, 1.0), ct.ijk_to_ras, modality="CT")
    backend = load_backend(_entry(tmp_path), "cpu")
    plain = run_inference(ct, _entry(tmp_path), backend).labelmap.array
    grown = run_inference(ct, _entry(tmp_path, extent=0.2), backend).labelmap.array
    assert _entry(tmp_path, extent=0.2).postprocessing.lesion_filter.extent_logit == 0.2  # type: ignore[union-attr]
    added = (grown == LESION) & (plain != LESION)
    assert added.sum() > 0.1 * (plain == LESION).sum()
    assert (ct.array[added] > -800).all() and (ct.array[added] < -600).all()
    near = ndimage.binary_dilation(sphere, iterations=4)
    assert not (added & ~near).any(), "growth stays at the kept lesion's rim"


def test_the_catalogue_refuses_a_filter_outside_its_checked_files_or_labels(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="role 'postprocessing'"):
        _entry(tmp_path, listed=False)
    entry = _entry(tmp_path)
    (tmp_path / "lung-lesion-filter.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ChecksumError, match="sha256"):
        entry.verify_files()


def _scan(components: list[tuple[float, bool]], lesions: int) -> dict[str, object]:
    return {
        "lesion_diameters_mm": [8.0] * lesions,
        "components": [
            {"diameter_mm": 6.0, "features": {"blobness": blob}, "hits": [n] if true else []}
            for n, (blob, true) in enumerate(components)
        ],
    }


def test_the_threshold_is_the_lowest_one_within_the_false_positive_budget() -> None:
    scans = [_scan([(0.6, True), (0.05, False), (0.25, False)], 1), _scan([(0.5, True), (0.1, False)], 1)]
    classifier = _blob_filter()
    before = operating_point(scans, None, 0.0, 3.0)
    assert before == {"sensitivity": 1.0, "lesions": 2, "detected": 2, "fp_per_scan": 1.5}
    threshold = choose_threshold(scans, classifier, 1.0, 3.0)
    after = operating_point(scans, classifier, threshold, 3.0)
    assert after["fp_per_scan"] == 1.0 and after["sensitivity"] == 1.0
    assert operating_point(scans, classifier, choose_threshold(scans, classifier, 0.0, 3.0), 3.0)["fp_per_scan"] == 0
    assert choose_threshold(scans, classifier, 5.0, 3.0) == 0.0
    assert parse_seeds("3-5,9") == [3, 4, 5, 9]
    with pytest.raises(InputError):
        parse_seeds("5-3")


def test_a_mass_outside_the_lungs_envelope_is_removed_one_in_a_lung_concavity_kept() -> None:
    """Chest-wall muscle under a lung base is no lung mass; a mass the lung wraps around is (whatever the score)."""
    ct, labels, _, _ = _scene((1.0, 1.0, 1.0), (40, 64, 64))
    labels[:] = 0
    labels[:, 8:56, 4:30] = LUNG  # a lung on the left of every slice
    labels[:, 20:44, 16:32] = LESION  # a mass in its lateral concavity: the lung wraps around it
    labels[:, 16:48, 44:60] = LESION  # "muscle" well outside the lung
    keep_all = LesionClassifier(("blobness",), np.zeros(1), np.ones(1), np.zeros(1), 10.0, 0.0)
    components = sorted(lesion_components(labels, ct, LESION, LUNG, keep_all), key=lambda c: c.center_ras[0])
    assert [c.is_mass for c in components] == [True, True]
    filter_lesions(labels, ct, LesionFilterSpec(LESION, Path("x.json"), LUNG), keep_all)
    assert (labels[:, 20:44, 16:32] == LESION).all()
    assert not (labels[:, 16:48, 44:60] == LESION).any()
