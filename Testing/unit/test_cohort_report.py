"""Cohort report and subgroup audit (issue 19): flags on a cohort built with known differences, CIs, files, HTML."""

from __future__ import annotations

import csv
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from MedAIExtension.batch.bootstrap import gap_ci, mean_ci
from MedAIExtension.batch.cohort_report import REPORT_FILES, write_cohort_report
from MedAIExtension.batch.records import Acquisition, StudyRecord, study_key
from MedAIExtension.batch.subgroups import (
    BETTER,
    NO_EVIDENCE,
    TOO_SMALL,
    UNKNOWN,
    WORSE,
    SubgroupRow,
    age_band,
    audit_subgroups,
    cohort_means,
    thickness_band,
)
from MedAIExtension.errors import InputError
from MedAIExtension.io import Image, affine_from_parts
from MedAIExtension.metrics import compare_labelmaps

# manufacturer -> (studies, true liver Dice mean, true liver HD95 mean); spleen has no difference anywhere
GROUPS = {"A": (12, 0.85, 4.0), "B": (12, 0.70, 9.0), "C": (3, 0.85, 4.0)}
SD = 0.03


def _noise(rng: np.random.Generator, count: int, sd: float) -> np.ndarray:
    """Normal noise whose sample mean is exactly 0 and sample SD exactly ``sd``: group means are the designed ones."""
    z = rng.normal(size=count)
    return (z - z.mean()) / z.std(ddof=1) * sd


def make_cohort(seed: int = 7) -> list[StudyRecord]:
    """27 finished studies (liver worse on manufacturer B) and one failed study."""
    rng = np.random.default_rng(seed)
    records = []
    index = 0
    for maker, (count, liver_dice, liver_hd) in GROUPS.items():
        livers = liver_dice + _noise(rng, count, SD)
        spleens = 0.90 + _noise(rng, count, SD)
        hds = liver_hd + _noise(rng, count, 1.0)
        for i in range(count):
            liver, spleen = float(livers[i]), float(spleens[i])
            source = f"/data/{maker}/{i}"
            records.append(
                StudyRecord(
                    key=study_key(source),
                    source=source,
                    status="done",
                    output_dir=f"/out/{study_key(source)}",
                    acquisition=Acquisition(
                        sex="F" if i % 2 else "M",  # balanced within every manufacturer: no sex effect
                        age_years=None if index % 9 == 0 else 30.0 + 2.0 * index,
                        manufacturer=maker,
                        scanner_model=f"{maker}-1",
                        slice_thickness_mm=1.0 if maker == "A" else 2.5,
                        kernel="B30f",
                        contrast=bool(i % 3),
                    ),
                    volumes_ml={"liver": float(rng.normal(1500, 100)), "spleen": float(rng.normal(200, 20))},
                    reference=f"/ref/{i}.nii.gz",
                    metrics={
                        "liver": {"dice": liver, "iou": liver / (2 - liver), "hd95_mm": float(hds[i])},
                        "spleen": {"dice": spleen, "iou": spleen / (2 - spleen), "hd95_mm": float(rng.normal(3, 1))},
                    },
                    seconds=1.5,
                )
            )
            index += 1
    records.append(StudyRecord(key=study_key("/data/bad"), source="/data/bad", status="failed", error="corrupt DICOM"))
    return records


def _row(rows: list[SubgroupRow], grouping: str, group: str, label: str, metric: str) -> SubgroupRow:
    (row,) = [r for r in rows if (r.grouping, r.group, r.label, r.metric) == (grouping, group, label, metric)]
    return row


@pytest.fixture(scope="module")
def audit() -> list[SubgroupRow]:
    return audit_subgroups(make_cohort(), min_n=5, n_resamples=1000)


def test_subgroup_flags_on_known_differences(audit: list[SubgroupRow]) -> None:
    assert _row(audit, "manufacturer", "B", "liver", "dice").flag == WORSE
    assert _row(audit, "manufacturer", "B", "liver", "iou").flag == WORSE
    assert _row(audit, "manufacturer", "B", "liver", "hd95_mm").flag == WORSE  # higher HD95 is worse
    assert _row(audit, "manufacturer", "A", "liver", "dice").flag == BETTER
    assert _row(audit, "manufacturer", "A", "liver", "hd95_mm").flag == BETTER
    c = _row(audit, "manufacturer", "C", "liver", "dice")
    assert c.flag == TOO_SMALL and c.n == 3 and c.mean is not None
    assert _row(audit, "manufacturer", "B", "spleen", "dice").flag == NO_EVIDENCE
    for sex in ("F", "M"):
        assert _row(audit, "sex", sex, "liver", "dice").flag == NO_EVIDENCE
    # slice thickness is confounded with manufacturer (A thin, B and C thick): the thick band is worse
    assert _row(audit, "slice thickness", "<=1.5 mm", "liver", "dice").flag == BETTER
    assert _row(audit, "slice thickness", "1.5-3 mm", "liver", "dice").flag == WORSE
    # a group that is the whole cohort has no gap
    whole = _row(audit, "kernel", "B30f", "liver", "dice")
    assert whole.gap == pytest.approx(0.0, abs=1e-12) and whole.flag == NO_EVIDENCE


def test_subgroup_cis_contain_true_values(audit: list[SubgroupRow]) -> None:
    # the cohort's group means are exactly the designed ones (see _noise): the CIs must contain them
    true_cohort = sum(n * d for n, d, _ in GROUPS.values()) / sum(n for n, _, _ in GROUPS.values())
    for maker in ("A", "B"):
        row = _row(audit, "manufacturer", maker, "liver", "dice")
        assert row.n == 12 and row.ci_low is not None and row.ci_high is not None
        assert row.ci_low < GROUPS[maker][1] < row.ci_high
        assert row.gap_low is not None and row.gap_high is not None
        assert row.gap_low < GROUPS[maker][1] - true_cohort < row.gap_high
        assert row.cohort_mean is not None and row.mean is not None
        assert row.gap == pytest.approx(row.mean - row.cohort_mean)


def test_unknown_attributes_and_bands(audit: list[SubgroupRow]) -> None:
    ages = {r.group for r in audit if r.grouping == "age band"}
    assert UNKNOWN in ages and ages <= {"<40", "40-59", "60-74", ">=75", UNKNOWN}
    assert [age_band(a) for a in (None, 39.9, 40, 59.9, 60, 74.9, 75)] == [
        UNKNOWN, "<40", "40-59", "40-59", "60-74", "60-74", ">=75"
    ]  # fmt: skip
    assert [thickness_band(t) for t in (None, 1.5, 1.6, 3.0, 3.1)] == [
        UNKNOWN, "<=1.5 mm", "1.5-3 mm", "1.5-3 mm", ">3 mm"
    ]  # fmt: skip
    assert {r.group for r in audit if r.grouping == "contrast"} == {"with contrast", "without contrast"}
    assert all(r.metric != "volume_ml" for r in audit)  # references given: volumes are not audited by default


def test_volumes_audited_without_references() -> None:
    records = [StudyRecord(key=r.key, source=r.source, status=r.status, acquisition=r.acquisition,
                           volumes_ml=r.volumes_ml) for r in make_cohort()]  # fmt: skip
    rows = audit_subgroups(records, groupings=["manufacturer"], n_resamples=500)
    assert {r.metric for r in rows} == {"volume_ml"}
    assert {r.flag for r in rows} <= {"higher", "lower", NO_EVIDENCE, TOO_SMALL}


def test_bootstrap_ci_coverage_and_edge_cases() -> None:
    rng = np.random.default_rng(2026)
    trials, hits = 200, 0
    for t in range(trials):
        est = mean_ci(rng.exponential(2.0, 30), n_resamples=500, seed=t)
        assert est.low is not None and est.high is not None
        hits += est.low < 2.0 < est.high
    assert 0.88 <= hits / trials <= 0.99, hits / trials
    again = mean_ci([1.0, 2.0, 4.0, 8.0], seed=3)
    assert again == mean_ci([1.0, 2.0, 4.0, 8.0], seed=3)  # seeded
    one = mean_ci([0.8])
    assert (one.value, one.low, one.high, one.note) == (0.8, None, None, "one value: no interval")
    flat = mean_ci([0.5, 0.5, 0.5])
    assert (flat.low, flat.high, flat.method) == (0.5, 0.5, "exact")
    dropped = mean_ci([1.0, float("inf"), None, 3.0])
    assert (dropped.n, dropped.excluded, dropped.value) == (2, 2, 2.0)
    assert mean_ci([]).value is None
    assert gap_ci([1.0], [2.0, 3.0]).low is None
    with pytest.raises(InputError, match="between 0 and 1"):
        mean_ci([1.0, 2.0], confidence=95)


def test_cohort_means_cover_truth() -> None:
    means = {(m.label, m.metric): m for m in cohort_means(make_cohort(), n_resamples=1000)}
    spleen = means[("spleen", "dice")]
    assert spleen.n == 27 and spleen.ci_low is not None and spleen.ci_high is not None
    assert spleen.ci_low < 0.90 < spleen.ci_high


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.tags: dict[str, int] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.ids.update(v for k, v in attrs if k == "id" and v)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_write_cohort_report_files_and_html(tmp_path: Path) -> None:
    records = make_cohort()
    drift = [{"key": records[0].key, "score": 4.2, "out_of_distribution": True, "reasons": ["HU shift"]}]
    queue = [{"key": r.key, "uncertainty": 0.1 * i, "rank": i + 1} for i, r in enumerate(records[:3])]
    paths = write_cohort_report(records, tmp_path / "report", drift=drift, queue=queue, n_resamples=500)
    assert {k: p.name for k, p in paths.items() if not k.endswith("_parquet")} == REPORT_FILES
    assert not [p for p in (tmp_path / "report").iterdir() if p.name.startswith(".")]  # no staging left
    with paths["studies"].open(encoding="utf-8") as handle:
        studies = list(csv.DictReader(handle))
    assert list(studies[0])[:10] == ["key", "source", "status", "error", "label", "volume_ml", "dice", "iou",
                                     "hd95_mm", "nsd"]  # fmt: skip
    assert len(studies) == 27 * 2 + 1
    (bad,) = [s for s in studies if s["status"] == "failed"]
    assert bad["error"] == "corrupt DICOM" and bad["label"] == ""
    with paths["subgroups"].open(encoding="utf-8") as handle:
        subgroups = list(csv.DictReader(handle))
    assert {"grouping", "group", "n", "mean", "ci_low", "ci_high", "gap", "gap_low", "gap_high", "flag"} <= set(
        subgroups[0]
    )
    b = [s for s in subgroups if (s["group"], s["label"], s["metric"]) == ("B", "liver", "dice")]
    assert [s["flag"] for s in b] == [WORSE]
    with paths["means"].open(encoding="utf-8") as handle:
        assert {"label", "metric", "n", "mean", "ci_low", "ci_high"} <= set(next(csv.DictReader(handle)))

    page = _Collector()
    page.feed(paths["html"].read_text(encoding="utf-8"))
    page.close()
    assert {"summary", "means", "subgroups", "failed", "drift", "queue"} <= page.ids
    text = " ".join(page.text)
    assert "corrupt DICOM" in text and "/data/bad" in text and "HU shift" in text
    assert page.tags["svg"] >= 1 + 2 * 3  # distributions (3 metrics) + a forest plot per label and metric
    assert "gap in Dice" in text and "HD95 (mm)" in text  # axis labels with units


def test_report_refuses_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "report"
    with pytest.raises(InputError, match="no study records"):
        write_cohort_report([], out)
    records = make_cohort()
    with pytest.raises(InputError, match="lacks out_of_distribution"):
        write_cohort_report(records, out, drift=[{"key": records[0].key, "score": 1.0, "reasons": []}])
    with pytest.raises(InputError, match="not in the records"):
        write_cohort_report(records, out, queue=[{"key": "nope", "uncertainty": 1.0, "rank": 1}])
    with pytest.raises(InputError, match="appears twice"):
        write_cohort_report([*records, records[0]], out)
    with pytest.raises(InputError, match="Unknown subgroup grouping"):
        audit_subgroups(records, groupings=["hair colour"])
    assert not out.exists()


def test_report_on_real_label_map_comparisons(tmp_path: Path) -> None:
    """Records from compare_labelmaps on phantom label maps; one study misses the structure (infinite HD95)."""
    reference = np.zeros((16, 16, 16), np.uint8)
    reference[4:12, 4:12, 4:12] = 1
    records = []
    for shift in range(6):
        predicted = np.zeros_like(reference)
        if shift < 5:
            predicted[4 + shift : 12 + shift, 4:12, 4:12] = 1  # shift 5: the cube is missed entirely
        image = Image(predicted, affine_from_parts([0, 0, 0], (1.0, 1.0, 1.0), np.eye(3)))
        (m,) = compare_labelmaps(image, Image(reference, image.ijk_to_ras), [(1, "cube")])
        metrics = {"dice": m.dice, "iou": m.iou, "hd95_mm": m.hd95_mm, "nsd": m.surface_dice}
        source = f"/phantom/{shift}"
        records.append(
            StudyRecord(study_key(source), source, "done", volumes_ml={"cube": m.pred_ml}, metrics={"cube": metrics})
        )
    paths = write_cohort_report(records, tmp_path, n_resamples=500)
    with paths["means"].open(encoding="utf-8") as handle:
        means = {row["metric"]: row for row in csv.DictReader(handle)}
    dices = [r.metrics["cube"]["dice"] for r in records]
    assert dices[0] == 1.0 and dices[-1] == 0.0
    assert float(means["dice"]["mean"]) == pytest.approx(np.mean(dices))
    assert (means["hd95_mm"]["n"], means["hd95_mm"]["excluded"]) == ("5", "1")  # the miss has no finite HD95
    with paths["studies"].open(encoding="utf-8") as handle:
        assert [row["hd95_mm"] for row in csv.DictReader(handle)][-1] == "inf"
