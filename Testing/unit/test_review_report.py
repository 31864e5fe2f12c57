"""Review export and report: cropped chest sub-volumes take lesions, near-copies are warned about, and the report
shows per-reader statistics first, readable metrics, an ROC plot with ticks and near-copy pictures."""

from __future__ import annotations

import base64
import csv
import io
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image as PILImage

from MedAIExtension.cli import main
from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.io.volume_files import write_volume_file
from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom, random_phantom_spec
from MedAIExtension.review.lesion_insertion import insertion_lung_mask, random_insertions
from MedAIExtension.review.report import POOLED_LABEL
from MedAIExtension.review.store import ReviewStore
from MedAIExtension.review.workflow import (
    export_review,
    generate_lesions,
    reader_study_results,
    run_memorization,
    run_metrics,
    start_reader_session,
)


# ---- item 4: cropped chest sub-volumes ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chest():
    phantom = generate_chest_phantom(PhantomSpec(size_ijk=(160, 160, 96), spacing=(2.5, 2.5, 3.0), nodules=(), seed=1))
    return phantom.ct, phantom.labels.array == 1


def _crop(ct: Image, lungs: np.ndarray, center_kji, size_mm: float) -> tuple[Image, np.ndarray]:
    half = (size_mm / 2.0 / np.asarray(ct.spacing, dtype=float)[::-1]).astype(int)
    low = np.maximum(np.asarray(center_kji) - half, 0)
    high = np.minimum(np.asarray(center_kji) + half, ct.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
    affine = ct.ijk_to_ras.copy()
    affine[:3, 3] = affine[:3, :3] @ low[::-1] + affine[:3, 3]
    return Image(ct.array[box].copy(), affine, modality="CT"), lungs[box]


def _right_lung_center(lungs: np.ndarray) -> np.ndarray:
    k, j, i = np.nonzero(lungs)
    side = i < np.median(i)
    return np.array([int(k[side].mean()), int(j[side].mean()), int(i[side].mean())])


def _faces_touched(mask: np.ndarray) -> int:
    return sum(bool(np.take(mask, end, axis=a).any()) for a in range(3) for end in (0, -1))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.count_nonzero(a & b)) / float(np.count_nonzero(a) + np.count_nonzero(b))


def test_generate_accepts_a_128_mm_chest_subvolume(chest, tmp_path):
    ct, lungs = chest
    sub, truth = _crop(ct, lungs, _right_lung_center(lungs), 128.0)
    assert truth.mean() > 0.3 and _faces_touched(truth) >= 4  # lung cut by the sub-volume's faces
    assert _dice(insertion_lung_mask(sub), truth) > 0.95
    path = write_volume_file(sub, tmp_path / "sub.nrrd")
    with ReviewStore.create(tmp_path / "p.medai-review", "crop") as store:
        parent = store.add_image(path, "real")
        records = generate_lesions(store, parent.id, 2, tmp_path / "syn", seed=3, sizes=(6.0, 10.0))
    assert len(records) == 2
    inverse = np.linalg.inv(sub.ijk_to_ras)
    for record in records:
        i, j, k = np.rint(inverse[:3, :3] @ np.asarray(record.provenance["center_ras"]) + inverse[:3, 3]).astype(int)
        assert truth[k, j, i]  # the nodule centre lies in the lung


def test_lung_on_every_face_is_found_and_a_volume_without_lung_is_refused(chest):
    ct, lungs = chest
    inside, truth = _crop(ct, lungs, _right_lung_center(lungs), 50.0)
    assert truth.all() and _faces_touched(truth) == 6
    assert _dice(insertion_lung_mask(inside), truth) > 0.95
    (lesion,) = random_insertions(inside, None, 1, seed=2, sizes=(8.0, 8.0))
    assert truth[lesion.mask.array.astype(bool)].all()
    corner, corner_truth = _crop(ct, lungs, (ct.shape[0] // 2, 10, 10), 60.0)  # outside air and chest wall
    center = (ct.shape[0] // 2, ct.shape[1] // 2, ct.shape[2] // 2)
    mediastinum, mediastinum_truth = _crop(ct, lungs, center, 30.0)
    assert not corner_truth.any() and not mediastinum_truth.any() and (corner.array < -900).any()
    for volume in (corner, mediastinum):
        with pytest.raises(InputError, match=r"No lung found.*Hounsfield"):
            random_insertions(volume, None, 1, seed=0)


# ---- items 5 and 6: export and report --------------------------------------------------------------------------
class _Html(HTMLParser):
    """Elements in document order: (tag, attributes, text inside), and the rows of every table."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self.tables: list[tuple[str, list[list[str]]]] = []
        self._open: list[tuple[str, dict[str, str], list[str]]] = []

    def handle_starttag(self, tag, attrs):
        element = (tag, {k: v or "" for k, v in attrs}, [])
        self.elements.append(element)
        if tag == "table":
            self.tables.append((element[1].get("class", ""), []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th") and self.tables:
            self.tables[-1][1][-1].append("")
        if tag not in ("img", "meta", "line", "rect", "br"):
            self._open.append(element)

    def handle_endtag(self, tag):
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data):
        for element in self._open:
            element[2].append(data)
        if (
            self.tables
            and self.tables[-1][1]
            and self.tables[-1][1][-1]
            and any(t in ("td", "th") for t, *_ in self._open)
        ):
            self.tables[-1][1][-1][-1] += data

    def text(self, index: int) -> str:
        return "".join(self.elements[index][2])

    def find(self, tag: str, **attrs: str) -> list[int]:
        return [
            n
            for n, (t, a, _) in enumerate(self.elements)
            if t == tag and all(a.get(k, "").split()[:1] == [v] or a.get(k) == v for k, v in attrs.items())
        ]


def _phantom(seed: int) -> Image:
    return generate_chest_phantom(random_phantom_spec(seed, size_ijk=(48, 48, 32), spacing=(6.5, 6.5, 7.0))).ct


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("review")
    reals = [_phantom(seed) for seed in range(3)]
    rng = np.random.default_rng(0)
    copy = np.roll(reals[0].array, 2, axis=2).astype(np.float32) + rng.normal(0, 10, reals[0].shape)
    synthetic = [reals[0].with_array(copy.astype(reals[0].array.dtype)), _phantom(40)]
    store = ReviewStore.create(folder / "p.medai-review", "report test")
    real_ids = [
        store.add_image(write_volume_file(r, folder / f"real_{n}.nrrd"), "real").id for n, r in enumerate(reals)
    ]
    names = ("near_copy.nrrd", "other.nrrd")
    provenances = ({"parent": real_ids[0]}, None)  # the near-copy says where it came from
    syn_ids = [
        store.add_image(write_volume_file(s, folder / n), "synthetic", p).id
        for s, n, p in zip(synthetic, names, provenances, strict=True)
    ]
    for image_id in syn_ids:
        store.grade(image_id, "ann", accept=True, realism=4)
    for reader, right in (("alice", 1.0), ("bob", 0.5)):
        session = start_reader_session(store, reader, seed=1)
        for index, trial in enumerate(store.reader_trials(session)):
            said = trial.is_synthetic if rng.random() < right else not trial.is_synthetic
            store.answer_trial(session, index, bool(said), 4)
    reader_study_results(store)
    run_metrics(store)
    memorization = run_memorization(store)
    yield store, folder, syn_ids, real_ids, memorization
    store.close()


def test_export_warns_about_and_marks_an_accepted_near_copy(project, tmp_path):
    store, _, (copy_id, other_id), real_ids, memorization = project
    assert [row["synthetic_id"] for row in memorization["flagged"]] == [copy_id]
    warned: list[str] = []
    files = export_review(store, tmp_path / "all", warn=warned.append)
    assert len(warned) == 1 and f"#{copy_id}" in warned[0] and "near_copy.nrrd" in warned[0]
    assert f"real image #{real_ids[0]}" in warned[0] and "kept in accepted.csv" in warned[0]
    assert "its own provenance parent" in warned[0]
    with open(files["manifest_csv"], newline="", encoding="utf-8") as handle:
        rows = {int(row["id"]): row for row in csv.DictReader(handle)}
    assert set(rows) == {copy_id, other_id}
    assert rows[copy_id]["near_copy_of"].startswith(f"#{real_ids[0]} ") and rows[other_id]["near_copy_of"] == ""
    assert float(rows[copy_id]["memorization_similarity"]) >= 0.9 > float(rows[other_id]["memorization_similarity"])
    page = _Html()
    page.feed(files["report"].read_text(encoding="utf-8"))
    assert any(f"#{copy_id}" in page.text(n) for n in page.find("p", **{"class": "warning"}))
    marked = [n for n in page.find("tr", **{"class": "near-copy"})]
    assert len(marked) == 1 and "near_copy.nrrd" in page.text(marked[0])
    with pytest.warns(UserWarning, match="excluded from accepted.csv"):
        files = export_review(store, tmp_path / "excluded", exclude_near_copies=True)
    with open(files["manifest_csv"], newline="", encoding="utf-8") as handle:
        assert [int(row["id"]) for row in csv.DictReader(handle)] == [other_id]


def test_export_says_when_the_memorization_check_was_not_run(tmp_path):
    store = ReviewStore.create(tmp_path / "p.medai-review", "unchecked")
    with store:
        image = store.add_image(write_volume_file(_phantom(7), tmp_path / "s.nrrd"), "synthetic")
        store.grade(image.id, "ann", accept=True, realism=3)
        warned: list[str] = []
        files = export_review(store, tmp_path / "out", warn=warned.append)
    assert len(warned) == 1 and "memorization check has not been run" in warned[0]
    page = _Html()
    page.feed(files["report"].read_text(encoding="utf-8"))
    assert any("not run" in page.text(n) for n in page.find("p", **{"class": "warning"}))


def test_report_per_reader_first_metrics_roc_and_memorization(project, tmp_path):
    store, _, (copy_id, _), real_ids, memorization = project
    files = export_review(store, tmp_path / "out", warn=lambda _: None)
    page = _Html()
    page.feed(files["report"].read_text(encoding="utf-8"))
    # Reader study: the per-reader table comes before the pooled one, which is labelled as not independent.
    classes = [cls for cls, _ in page.tables]
    assert classes.index("per-reader") < classes.index("pooled")
    per_reader = dict(page.tables)["per-reader"]
    assert [row[0] for row in per_reader[1:]] == ["alice", "bob"]
    pooled = dict(page.tables)["pooled"]
    assert pooled[1][0] == f"pooled ({POOLED_LABEL})"
    headline = page.find("p", **{"class": "headline"})
    pooled_heading = [n for n in page.find("h3") if POOLED_LABEL in page.text(n)]
    assert headline and pooled_heading and headline[0] < pooled_heading[0]
    assert page.text(headline[0]).startswith("Per reader:")
    # ROC plot: ticks 0..1 on both axes, axis labels, the chance diagonal and one curve per reader.
    for axis in ("x", "y"):
        labels = [
            page.text(n)
            for n in page.find("text", **{"class": "tick-label"})
            if axis in page.elements[n][1]["class"].split()
        ]
        assert labels == ["0", "0.25", "0.5", "0.75", "1"]
    assert page.find("polyline", **{"class": "chance"}) and len(page.find("polyline", **{"class": "roc"})) == 2
    assert {page.text(n).split()[0] for n in page.find("text", **{"class": "axis-label"})} == {
        "false-positive",
        "true-positive",
    }
    # Metrics: readable names, units, directions and the real-vs-real reference.
    metrics = dict(page.tables)["metrics"]
    assert metrics[0] == ["metric", "value", "real-vs-real reference", "unit", "direction"]
    by_name = {row[0]: row for row in metrics[1:]}
    fid = by_name["2.5D FID (axial slices)"]
    assert float(fid[1]) >= 0.0 and float(fid[2]) >= 0.0 and fid[4].startswith("lower is more realistic")
    assert by_name["Tissue histogram distance (lung HU band)"][3] == "HU (Wasserstein-1)"
    diversity = by_name["MS-SSIM between synthetic images (diversity)"]
    assert diversity[2].endswith("(between real images)") and "diverse" in diversity[4]
    assert not any("_" in row[0] or ":" in row[0] for row in metrics[1:])  # no raw keys
    # Memorization: file names, the threshold, and the key slices side by side (small PNGs, aligned copy).
    table = dict(page.tables)["memorization"]
    assert table[0][:4] == ["synthetic image", "nearest real image", "similarity", "threshold"]
    assert table[1][0] == f"#{copy_id} near_copy.nrrd" and table[1][1] == f"#{real_ids[0]} real_0.nrrd"
    assert float(table[1][3]) == memorization["flagged"][0]["threshold"]
    assert table[0][4] == "copied how" and table[1][4] == "same scale, not mirrored"  # a shifted, noisy copy
    pictures = {}
    for n in page.find("img"):
        attributes = page.elements[n][1]
        assert attributes["src"].startswith("data:image/png;base64,")
        data = base64.b64decode(attributes["src"].split(",", 1)[1])
        assert len(data) < 20_000
        pictures[attributes["class"]] = np.asarray(PILImage.open(io.BytesIO(data)), dtype=float)
    synthetic, real = pictures["synthetic"], pictures["real"]
    assert synthetic.shape == real.shape and max(real.shape) <= 128
    assert np.corrcoef(synthetic.ravel(), real.ravel())[0, 1] > 0.9  # aligned: the copy's slice matches


def test_the_export_command_prints_the_warning_and_takes_exclude_near_copies(tmp_path, capsys):
    """``medai review export``: each warning once on stderr as ``warning: …``; ``--exclude-near-copies`` accepted."""
    project = tmp_path / "p.medai-review"
    with ReviewStore.create(project, "unchecked") as store:
        image = store.add_image(write_volume_file(_phantom(7), tmp_path / "s.nrrd"), "synthetic")
        store.grade(image.id, "ann", accept=True, realism=3)
    code = main(["review", "export", "--project", str(project), "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0 and err.count("warning: ") == 1 and "memorization check has not been run" in err
    args = ["review", "export", "--project", str(project), "--output", str(tmp_path / "o2"), "--exclude-near-copies"]
    assert main([*args, "--quiet"]) == 0
