"""The annotation queue: the shipped model's TTA entropy ranks a noisy, low-contrast phantom above a clean
one; queue.csv is ranked, has its columns in order, skips failed studies and is written atomically."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from MedAIExtension.batch.annotation_queue import (
    QUEUE_COLUMNS,
    read_annotation_queue,
    study_uncertainty,
    write_annotation_queue,
)
from MedAIExtension.batch.records import StudyRecord, study_key
from MedAIExtension.errors import InputError
from MedAIExtension.models.backends import load_backend
from MedAIExtension.models.catalog import load_catalog
from MedAIExtension.models.inference import InferenceOptions
from MedAIExtension.phantom import LungSide, NoduleKind, NoduleSpec, PhantomSpec, generate_chest_phantom


def _record(source: str, uncertainty: float | None, status: str = "done") -> StudyRecord:
    return StudyRecord(
        key=study_key(source),
        source=source,
        status=status,
        output_dir=f"/out/{study_key(source)}" if status == "done" else None,
        uncertainty=uncertainty,
    )


def test_noisy_low_contrast_study_ranks_above_a_clean_one(tmp_path: Path) -> None:
    entry = load_catalog().get("chest-ct-lung-nodule")
    backend = load_backend(entry, "cpu")
    spec = PhantomSpec(
        size_ijk=(80, 64, 10),
        spacing=(2.5, 2.5, 2.5),
        center_ras=(0.0, 0.0, 20.0),
        seed=3,
        nodules=(NoduleSpec(12.0, NoduleKind.SOLID, lung=LungSide.RIGHT, position=(0.4, 0.0, 0.1)),),
    )
    options = InferenceOptions(roi_size=(96, 96, 32), overlap=0.0)
    uncertainty = {}
    for name, noise, contrast in (("clean", 5.0, 1.0), ("noisy", 100.0, 0.5)):
        ct = generate_chest_phantom(replace(spec, noise_hu=noise)).ct
        # contrast around soft tissue (40 HU) scaled down: lungs at about -430 HU instead of -850
        ct = ct.with_array((40.0 + (ct.array.astype(np.float32) - 40.0) * contrast).astype(np.float32))
        uncertainty[name] = study_uncertainty(ct, entry, backend, tta_flips=2, options=options)
        assert 0.0 < uncertainty[name] < 1.0
    assert uncertainty["noisy"] > uncertainty["clean"] * 1.5, uncertainty  # measured 0.263 vs 0.112
    records = [_record("clean", uncertainty["clean"]), _record("noisy", uncertainty["noisy"])]
    rows = read_annotation_queue(write_annotation_queue(records, tmp_path / "queue.csv"))
    assert [row["source"] for row in rows] == ["noisy", "clean"]


def test_queue_columns_order_and_skipped_studies(tmp_path: Path) -> None:
    records = [
        _record("b", 0.2),
        _record("a", 0.5),
        _record("failed", None, status="failed"),
        _record("no-uncertainty", None),
        _record("c", 0.2),
    ]
    path = write_annotation_queue(records, tmp_path / "queue.csv")
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == QUEUE_COLUMNS
    ties = sorted([study_key("b"), study_key("c")])
    expected_keys = [study_key("a"), *ties]
    assert [row[1] for row in rows[1:]] == expected_keys
    assert [row[0] for row in rows[1:]] == ["1", "2", "3"]
    assert rows[1][2:] == ["a", "0.500000", f"/out/{study_key('a')}"]
    assert [p.name for p in tmp_path.iterdir()] == ["queue.csv"]  # no temporary file left


def test_queue_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        write_annotation_queue([_record("a", 0.1)], tmp_path / "missing" / "queue.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not an annotation queue"):
        read_annotation_queue(tmp_path / "other.csv")
    with pytest.raises(InputError, match="No annotation queue"):
        read_annotation_queue(tmp_path / "none.csv")
