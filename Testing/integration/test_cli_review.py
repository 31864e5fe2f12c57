"""``medai review`` end to end: a project with real phantom CTs, built-in lesion insertions and a planted near-copy;
grading, metrics, memorization, a blinded reader study through its answer sheet, and the export."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from MedAIExtension.cli import main
from MedAIExtension.io.volume_files import write_volume_file
from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom


def _run(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    code = main(["review", *[str(a) for a in args]])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("review-images")
    paths = {}
    for seed in (1, 2, 3):
        phantom = generate_chest_phantom(PhantomSpec(size_ijk=(80, 64, 40), spacing=(4.0, 4.0, 5.0), seed=seed))
        paths[f"real{seed}"] = write_volume_file(phantom.ct, folder / f"real{seed}.nii.gz")
        if seed == 1:
            # a planted near-copy: the same patient moved by one voxel with a little extra noise
            rng = np.random.default_rng(0)
            moved = np.roll(phantom.ct.array, 1, axis=2) + rng.normal(0, 5, phantom.ct.shape)
            copy = phantom.ct.with_array(moved.astype(np.int16))
            paths["copy"] = write_volume_file(copy, folder / "near_copy.nii.gz")
    return paths


def test_a_whole_review_from_init_to_export(
    images: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "study.medai-review"
    assert _run(capsys, "init", "--project", project, "--name", "lesion GAN v2", "--quiet")[0] == 0
    code, out, err = _run(
        capsys, "import", "--project", project, "--quiet", "--real", images["real1"], images["real2"], images["real3"]
    )
    assert code == 0, err
    code, out, err = _run(
        capsys, "import", "--project", project, "--quiet", "--synthetic", images["copy"], "--generator", "suspect-gan"
    )
    assert code == 0, err
    code, out, err = _run(
        capsys, "generate", "--project", project, "--parent", "2", "--count", "3", "--output", tmp_path / "synthetic",
        "--seed", "4", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert out.count("synthetic #") == 3
    # duplicates are not added twice
    code, out, _ = _run(capsys, "import", "--project", project, "--quiet", "--real", images["real1"])
    assert code == 0 and "already in the project" in out

    # two reviewers grade; image 4 (the near-copy) rejected by one of them
    for image, decision in ((4, "--reject"), (5, "--accept"), (6, "--accept"), (7, "--accept")):
        code, _, err = _run(
            capsys, "grade", "--project", project, "--reviewer", "ann", "--image", image, decision,
            "--realism", "4", "--artifact", "lesion implausible", "--quiet",
        )  # fmt: skip
        assert code == 0, err
    code, _, err = _run(
        capsys, "grade", "--project", project, "--reviewer", "ann", "--image", 5, "--accept", "--realism", "9"
    )
    assert code == 2 and "1" in err and "5" in err  # realism outside 1-5 refused, nothing recorded

    code, out, err = _run(capsys, "metrics", "--project", project, "--quiet", "--json")
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["n_real"] == 3 and metrics["n_synthetic"] == 4

    code, out, err = _run(capsys, "memorization", "--project", project, "--quiet", "--json")
    assert code == 0, err
    memorization = json.loads(out)
    flagged = {row["synthetic_id"]: row["real_id"] for row in memorization["flagged"]}
    assert flagged.get(4) == 1, memorization  # the planted copy of real #1 is found
    # a lesion inserted into real #2 is derived from it: flagged or not, it is never matched to an unrelated image
    for row in memorization["matches"]:
        if row["synthetic_id"] in (5, 6, 7) and row["flagged"]:
            assert row["real_id"] == 2

    blinded = tmp_path / "blinded"
    code, out, err = _run(
        capsys, "reader-study", "start", "--project", project, "--reviewer", "bob", "--per-class", "3", "--seed", "7",
        "--export", blinded, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    sheet = list(csv.DictReader(open(blinded / "answers.csv", encoding="utf-8")))
    assert len(sheet) == 6 and all((blinded / row["file"]).is_file() for row in sheet)
    # the reader answers half, quits, then finishes (resume): every answer counted once
    for part in (sheet[:3], sheet):
        for row in part:
            row["said"], row["confidence"] = "synthetic" if int(row["trial"]) % 2 else "real", "4"
        with open(blinded / "answers.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["trial", "file", "said", "confidence"])
            writer.writeheader()
            writer.writerows(part)
        code, out, err = _run(
            capsys, "reader-study", "answer", "--project", project, "--session", "1", "--answers",
            blinded / "answers.csv", "--quiet",
        )  # fmt: skip
        assert code == 0, err
    code, out, err = _run(capsys, "reader-study", "stats", "--project", project, "--json", "--quiet")
    assert code == 0, err
    study = json.loads(out)
    assert study["pooled"]["n"] == 6

    code, out, err = _run(capsys, "export", "--project", project, "--output", tmp_path / "export", "--quiet")
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "export" / "accepted.csv", encoding="utf-8")))
    assert sorted(int(r["id"]) for r in rows) == [5, 6, 7]
    assert all(r["generator"] == "medai-lesion-insertion" and r["parent"] == "2" for r in rows)
    html = (tmp_path / "export" / "review_report.html").read_text(encoding="utf-8")
    for heading in ("Expert grades", "Blinded reader study", "Realism and diversity metrics", "Memorization"):
        assert heading in html
    assert "<svg" in html


def test_a_newer_or_foreign_project_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_project = tmp_path / "notes.medai-review"
    not_a_project.write_text("hello", encoding="utf-8")
    code, _, err = _run(capsys, "metrics", "--project", not_a_project, "--quiet")
    assert code == 2 and "Traceback" not in err
    assert not_a_project.read_text(encoding="utf-8") == "hello"
