"""Blinded reader-study export and answer sheet through ``medai review reader-study``.

A mixed project (real int16 DICOM series and synthetic float32 NRRD files, each with its own origin, spacing and
matrix) is exported blinded; no header field, file size, file time or trial order may tell the classes apart.
The same metadata classifier is run on per-source copies (what an export that keeps each source's header writes)
to show that it does find such a leak.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from MedAIExtension.cli import main
from MedAIExtension.io.dicom_series import write_dicom_series
from MedAIExtension.io.image import Image
from MedAIExtension.io.loader import load_image
from MedAIExtension.io.volume_files import write_volume_file
from MedAIExtension.review.blinded_export import HU_RANGE
from MedAIExtension.review.store import ReviewStore

N_PER_CLASS = 6


def _run(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    code = main(["review", *[str(a) for a in args]])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _volume(index: int, synthetic: bool) -> tuple[Image, float]:
    """A small CT-like volume: air, a soft-tissue box and a marker cube of a known HU at the physical centre."""
    rng = np.random.default_rng(index + 100 * synthetic)
    k, j, i = (9 + index % 3, 20 + 2 * index, 22 + index) if not synthetic else (12 - index % 2, 26 - index, 21 + index)
    array = np.full((k, j, i), -1000.0)
    array[1:-1, 3:-3, 3:-3] = 20.0
    marker = 300.0 + 50 * index + (25 if synthetic else 0)
    array[k // 2 - 1 : k // 2 + 2, j // 2 - 2 : j // 2 + 3, i // 2 - 2 : i // 2 + 3] = marker
    array += rng.normal(0, 8, array.shape)
    if synthetic:
        values = array.astype(np.float32)
        spacing, origin = (0.9 + 0.05 * index, 0.95, 2.0 + 0.2 * index), (-40.0 * index, 17.0, 300.0 + index)
    else:
        values = np.rint(array).astype(np.int16)
        spacing, origin = (0.8 + 0.1 * index, 0.85 + 0.05 * index, 2.5), (-120.0 + 3 * index, -95.0, -600.0 * index)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return Image.from_sitk(image, modality="CT"), marker


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("blinded")
    real, synthetic, markers = [], [], {}
    for index in range(N_PER_CLASS):
        image, marker = _volume(index, synthetic=False)
        series = folder / f"real{index}"
        write_dicom_series(image, series, uid_seed=f"real{index}", series_number=index + 1)
        real.append(series)
        markers[str(series.resolve())] = marker
        image, marker = _volume(index, synthetic=True)
        path = write_volume_file(image, folder / f"gan_{index}.nrrd")
        synthetic.append(path)
        markers[str(path.resolve())] = marker
    path = folder / "study.medai-review"
    assert main(["review", "init", "--project", str(path), "--name", "blinding", "--quiet"]) == 0
    args = ["review", "import", "--project", str(path), "--quiet", "--real", *map(str, real)]
    assert main([*args, "--synthetic", *map(str, synthetic), "--generator", "gan"]) == 0
    return {"path": path, "markers": markers, "real": real, "synthetic": synthetic}


def _header(path: Path) -> tuple[list[str], bytes]:
    data = path.read_bytes()
    head, _, body = data.partition(b"\n\n")
    return head.decode("ascii").splitlines(), body


def _features(paths: list[Path]) -> dict[str, list[Any]]:
    """File metadata per file: every header field, the file size and the file time (no voxel values)."""
    features: dict[str, list[Any]] = {"file size": [], "file time": []}
    fields = [dict(line.split(": ", 1) for line in _header(p)[0] if ": " in line) for p in paths]
    for key in sorted({key for header in fields for key in header}):
        features[f"header {key}"] = [header.get(key) for header in fields]
    for path in paths:
        features["file size"].append(path.stat().st_size)
        features["file time"].append(path.stat().st_mtime_ns)
    return features


def _auc(scores: list[float], synthetic: list[bool]) -> float:
    """ROC AUC of ``scores`` for the synthetic class, flipped to >= 0.5 (a reader may read a feature either way)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(synthetic, dtype=bool)
    wins = (s[y][:, None] > s[~y][None, :]).sum() + 0.5 * (s[y][:, None] == s[~y][None, :]).sum()
    auc = float(wins) / (y.sum() * (~y).sum())
    return max(auc, 1.0 - auc)


def _metadata_auc(features: dict[str, list[Any]], synthetic: list[bool]) -> dict[str, float]:
    """Per feature, the AUC of the best reading of it: numbers as they are, text by how often its value is synthetic.

    Text values are scored in-sample (the share of synthetic files with the same value), which favours a leak: a
    value unique to each file already scores 1.0.
    """
    result = {}
    for name, values in features.items():
        if all(isinstance(v, (int, float)) for v in values):
            result[name] = _auc([float(v) for v in values], synthetic)
            continue
        share = {v: np.mean([s for w, s in zip(values, synthetic, strict=True) if w == v]) for v in set(values)}
        result[name] = _auc([float(share[v]) for v in values], synthetic)
    return result


def _export(capsys: pytest.CaptureFixture[str], project: dict[str, Any], folder: Path, seed: int) -> int:
    code, out, err = _run(
        capsys, "reader-study", "start", "--project", project["path"], "--reviewer", "bob", "--seed", seed,
        "--export", folder, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    return int(out.split("Reader session ")[1].split()[0])


def test_blinded_export_leaks_no_class_in_metadata(
    project: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "blinded"
    session = _export(capsys, project, folder, seed=11)
    with ReviewStore.open(project["path"]) as store:
        trials = store.reader_trials(session)
        sources = [store.image(t.image_id).path for t in trials]
    sheet = list(csv.DictReader(open(folder / "answers.csv", encoding="utf-8")))
    assert [int(row["trial"]) for row in sheet] == list(range(1, 2 * N_PER_CLASS + 1))
    assert sorted(p.name for p in folder.iterdir()) == sorted([row["file"] for row in sheet] + ["answers.csv"])
    paths = [folder / row["file"] for row in sheet]
    truth = [t.is_synthetic for t in trials]
    assert sum(truth) == N_PER_CLASS and truth != sorted(truth) and truth != sorted(truth, reverse=True)

    headers = [_header(p)[0] for p in paths]
    assert all(h == headers[0] for h in headers), "every blinded file has the same header"
    header = dict(line.split(": ", 1) for line in headers[0] if ": " in line)
    assert header["type"] == "short" and header["encoding"] == "raw" and header["space origin"] == "(0,0,0)"
    sizes = [p.stat().st_size for p in paths]
    assert max(sizes) <= 1.01 * min(sizes)
    scores = _metadata_auc(_features(paths), truth)
    assert max(scores.values()) <= 0.6, scores

    # the voxels are the images themselves: each one's centre marker lands at the centre of the common grid
    for path, source in zip(paths, sources, strict=True):
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        assert array.dtype == np.int16 and HU_RANGE[0] <= array.min() and array.max() <= HU_RANGE[1]
        k, j, i = (n // 2 for n in array.shape)
        assert abs(float(np.median(array[k, j - 1 : j + 2, i - 1 : i + 2])) - project["markers"][source]) < 40

    # the same classifier on copies that keep each source's header finds the leak the blinding removes
    kept = []
    for index, source in enumerate(sources):
        image = load_image(source)
        kept.append(write_volume_file(image.with_array(image.array, metadata={}), tmp_path / f"kept_{index}.nrrd"))
    assert max(_metadata_auc(_features(kept), truth).values()) > 0.9


def test_trial_order_does_not_predict_the_class(project: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    positions: list[float] = []
    truth: list[bool] = []
    for seed in range(30):
        code, out, err = _run(
            capsys, "reader-study", "start", "--project", project["path"], "--reviewer", "order", "--seed", seed,
            "--quiet",
        )  # fmt: skip
        assert code == 0, err
        with ReviewStore.open(project["path"]) as store:
            trials = store.reader_trials(int(out.split("Reader session ")[1].split()[0]))
        positions += [t.index for t in trials]
        truth += [t.is_synthetic for t in trials]
    assert _auc(positions, truth) <= 0.6


def test_export_refuses_a_folder_with_a_previous_export(
    project: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "blinded"
    folder.mkdir()
    (folder / "answers.csv").write_text("trial,file,said,confidence\n1,trial_001.nrrd,real,4\n", encoding="utf-8")
    with ReviewStore.open(project["path"]) as store:
        before = len(store.reader_sessions())
    code, _, err = _run(
        capsys, "reader-study", "start", "--project", project["path"], "--reviewer", "eve", "--export", folder
    )
    assert code == 2 and "Traceback" not in err and "new or empty folder" in err
    assert (folder / "answers.csv").read_text(encoding="utf-8").endswith("real,4\n")
    with ReviewStore.open(project["path"]) as store:
        assert len(store.reader_sessions()) == before  # no session without its export


def _answer(
    capsys: pytest.CaptureFixture[str], project: dict[str, Any], session: int, rows: list[list[Any]], sheet: Path
) -> tuple[int, str, str]:
    with open(sheet, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", "file", "said", "confidence"])
        writer.writerows(rows)
    return _run(
        capsys, "reader-study", "answer", "--project", project["path"], "--session", session, "--answers", sheet,
        "--quiet",
    )  # fmt: skip


def _new_session(capsys: pytest.CaptureFixture[str], project: dict[str, Any]) -> int:
    code, out, err = _run(
        capsys, "reader-study", "start", "--project", project["path"], "--reviewer", "ann", "--seed", 3, "--quiet"
    )
    assert code == 0, err
    return int(out.split("Reader session ")[1].split()[0])


def _stored(project: dict[str, Any], session: int) -> list[tuple[bool | None, int | None]]:
    with ReviewStore.open(project["path"]) as store:
        return [(t.said_synthetic, t.confidence) for t in store.reader_trials(session)]


@pytest.mark.parametrize(
    ("bad_row", "expected"),
    [
        ([13, "", "synthetic", 4], "trials are 1..12"),  # one past the last trial
        ([0, "", "real", 4], "trials are 1..12"),
        ([5, "", "real", ""], "no confidence"),
        ([5, "", "real", 7], "1 (guess) to 5"),
        ([1, "", "synthetic", 2], "answered again"),
    ],
)
def test_a_bad_answer_row_stores_nothing(
    project: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], bad_row: list[Any], expected: str
) -> None:
    session = _new_session(capsys, project)
    rows = [[1, "trial_001.nrrd", "real", 5], [2, "", "synthetic", 3], bad_row]
    code, _, err = _answer(capsys, project, session, rows, tmp_path / "answers.csv")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "line 4" in err and expected in err, err
    assert all(said is None for said, _ in _stored(project, session))


def test_blank_rows_are_skipped_and_answers_keep_their_confidence(
    project: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session = _new_session(capsys, project)
    rows = [[1, "", "real", 5], [2, "", "", ""], [3, "", "Synthetic", 2], [4, "", " ", 3]]
    code, out, err = _answer(capsys, project, session, rows, tmp_path / "answers.csv")
    assert code == 0, err
    stored = _stored(project, session)
    assert stored[:4] == [(False, 5), (None, None), (True, 2), (None, None)]
    # the sheet again, now with trial 2 filled: trials 1 and 3 are not stored twice (resume)
    rows[1] = [2, "", "real", 1]
    code, out, err = _answer(capsys, project, session, rows, tmp_path / "answers.csv")
    assert code == 0 and "Recorded 1 answer" in out, err
    assert _stored(project, session)[:4] == [(False, 5), (False, 1), (True, 2), (None, None)]


def test_normalised_images_stay_float_and_a_mixed_scale_session_is_refused_then_exported_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Images in 0..1 are not rounded to whole HU; a session mixing them with HU is refused (brightness would tell)."""
    project = tmp_path / "scales.medai-review"
    files = {}
    for index in range(2):
        image, _ = _volume(index, synthetic=True)
        files[f"hu{index}"] = write_volume_file(image, tmp_path / f"hu{index}.nrrd")
        normalised = image.with_array(((image.array + 1000.0) / 1400.0).astype(np.float32))
        files[f"unit{index}"] = write_volume_file(normalised, tmp_path / f"unit{index}.nrrd")
    assert _run(capsys, "init", "--project", project, "--name", "scales", "--quiet")[0] == 0
    code, _, err = _run(capsys, "import", "--project", project, "--real", files["unit0"], "--synthetic", files["unit1"])
    assert code == 0, err
    out = tmp_path / "unit-export"
    assert _run(capsys, "reader-study", "start", "--project", project, "--reviewer", "r", "--export", out)[0] == 0
    values = [sitk.ReadImage(str(p)) for p in sorted(out.glob("trial_*.nrrd"))]
    assert {v.GetPixelIDTypeAsString() for v in values} == {"32-bit float"}
    assert all(0.0 <= sitk.GetArrayViewFromImage(v).max() <= 1.0 for v in values), "not rounded to 0/1 HU"
    assert len({np.round(sitk.GetArrayViewFromImage(v), 3).tobytes() for v in values}) == 2

    code, _, err = _run(capsys, "import", "--project", project, "--real", files["hu0"], "--synthetic", files["hu1"])
    assert code == 0, err
    mixed = tmp_path / "mixed-export"
    code, _, err = _run(capsys, "reader-study", "start", "--project", project, "--reviewer", "s", "--export", mixed)
    assert code == 2 and "Traceback" not in err and "brightness" in err and "reader-study export" in err
    assert not mixed.exists() or not any(mixed.iterdir()), "nothing written"
    session = int(err.split("Reader session ")[1].split()[0])
    code, _, err = _run(
        capsys, "reader-study", "export", "--project", project, "--session", 99, "--export", tmp_path / "none"
    )
    assert code == 2 and "no reader session 99" in err
    code, _, err = _run(capsys, "reader-study", "export", "--project", project, "--session", session, "--export", mixed)
    assert code == 2 and "brightness" in err  # still mixed: the same clear refusal on a re-export
    again = tmp_path / "unit-again"
    code, _, err = _run(capsys, "reader-study", "export", "--project", project, "--session", 1, "--export", again)
    assert code == 0, err
    for first in sorted(out.glob("trial_*.nrrd")):  # the session's order and voxels, exported anew
        assert (again / first.name).read_bytes() == first.read_bytes()
