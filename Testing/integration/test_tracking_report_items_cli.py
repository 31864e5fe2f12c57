"""``medai track`` on a phantom pair: what a radiologist reads in tracking.csv, report.html, tracking.json, the
key-slice pictures and the SR (issue 17).

The phantom places each nodule in a known lung, with known growth; the outputs are parsed (CSV reader, an HTML
parser, highdicom) and checked against that truth: side in every output and as the SR's finding-site laterality
code, diameters to one decimal, volumes to whole mm³ in the report, both categories with reasons and the
management, growth in words (a nodule that did not change is "stable within measurement error"), and pictures at
>= 4 px/mm with their scale bar.
"""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pytest
from PIL import Image as PILImage

from MedAIExtension.cli import main
from MedAIExtension.dicom import read_tracking_sr, run_dciodvfy
from MedAIExtension.dicom.sr import read_exam_management
from MedAIExtension.phantom import AnatomySpec, NoduleSpec, PhantomSpec
from MedAIExtension.phantom.followup import write_phantom_pair
from MedAIExtension.tracking.reading import STABLE_WORDING
from MedAIExtension.tracking.recommendations import management_recommendation
from MedAIExtension.tracking.report import MIN_PIXELS_PER_MM, SCALE_BAR_COLOR, SCALE_BAR_MM

SPEC = PhantomSpec(
    size_ijk=(290, 216, 150),
    spacing=(0.85, 0.85, 1.25),
    seed=11,
    anatomy=AnatomySpec(body_semi_axes_mm=(115.0, 82.0), fat_mm=8.0, lung_height_mm=160.0),
    nodules=(
        NoduleSpec(9.0, "solid", lung="right", position=(0.35, 0.25, 0.35)),
        NoduleSpec(12.0, "part-solid", solid_fraction=0.5, lung="left", position=(0.35, -0.35, -0.3)),
        NoduleSpec(8.0, "solid", lung="left", position=(0.2, 0.3, 0.45)),
    ),
)
GROWTH = (2.0, 1.0, 1.0)  # the first doubles; the others do not change
LATERALITY_CODES = {"right": "24028007", "left": "7771000"}
ONE_DECIMAL = re.compile(r"^\d+\.\d$")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pair = tmp_path_factory.mktemp("pair")
    write_phantom_pair(pair, seed=11, baseline=SPEC, volume_factors=GROWTH, rotation_deg=(0, 0, 3))
    out = tmp_path_factory.mktemp("tracked")
    argv = ["track", "--baseline", str(pair / "baseline" / "ct"), "--followup", str(pair / "followup" / "ct")]
    assert main([*argv, "--output", str(out), "--quiet", "--no-model"]) == 0
    with (out / "tracking.csv").open(newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    truth = json.loads((pair / "truth.json").read_text())
    document = json.loads((out / "tracking.json").read_text())
    matched: dict[int, dict[str, str]] = {}
    for nodule in truth["nodules"]:
        centre = nodule["baseline"]["center_ras"]
        best = min(
            (row for row in table if row["baseline_center_ras"]),
            key=lambda row: float(
                np.linalg.norm(np.subtract([float(v) for v in row["baseline_center_ras"].split()], centre))
            ),
        )
        matched[nodule["id"]] = best
    return {"out": out, "table": table, "truth": truth, "document": document, "matched": matched}


def test_csv_has_the_location_categories_and_management_of_every_nodule(run: dict[str, Any]) -> None:
    for nodule in run["truth"]["nodules"]:
        row = run["matched"][nodule["id"]]
        print(f"\n  {row['tracking_id']}: {row['location']}; {row['growth']}; {row['lung_rads']} {row['management']}")
        assert row["side"] == nodule["lung"], (row["location"], nodule)
        assert row["lung_zone"] in ("upper", "middle", "lower")
        assert row["location"].startswith(f"{nodule['lung']} {row['lung_zone']} zone, image ")
        assert int(row["baseline_image"]) >= 1 and int(row["followup_image"]) >= 1
        assert row["baseline_lung_rads"] and row["baseline_lung_rads_reason"]
        assert row["baseline_management"] == management_recommendation(row["baseline_lung_rads"])
        assert row["lung_rads"] and row["lung_rads_reason"]
        assert row["management"] == management_recommendation(row["lung_rads"])
        for when in ("baseline", "followup"):
            for size in ("long_axis_mm", "short_axis_mm", "mean_diameter_mm"):
                assert ONE_DECIMAL.match(row[f"{when}_{size}"]), (size, row[f"{when}_{size}"])
        assert row["finding"] == "nodule"
        if nodule["kind"] == "solid":
            assert row["nelson"] in ("negative", "indeterminate", "positive") and row["nelson_reason"]


def test_growth_is_worded_and_stable_nodules_get_no_doubling_time(run: dict[str, Any]) -> None:
    for nodule, factor in zip(run["truth"]["nodules"], GROWTH, strict=True):
        row = run["matched"][nodule["id"]]
        if factor == 1.0:
            assert row["growth"] == STABLE_WORDING, row["growth"]
        else:
            assert row["growth"].startswith("growing, VDT "), row["growth"]
            days = re.search(r"VDT (\d+) days", row["growth"])
            assert days is not None and abs(int(days.group(1)) - float(row["vdt_days"])) <= 0.6, row["growth"]


def test_json_carries_the_same_reading_and_the_exam_management(run: dict[str, Any]) -> None:
    document = run["document"]
    by_id = {row["tracking_id"]: row for row in document["nodules"]}
    for row in run["matched"].values():
        same = by_id[row["tracking_id"]]
        assert (same["side"], same["location"], same["growth"]) == (row["side"], row["location"], row["growth"])
    summary = document["summary"]
    for key in ("baseline", "followup"):
        category = summary["exam_lung_rads"][key]["category"]
        assert summary["exam_management"][key] == management_recommendation(category)


class _Page(HTMLParser):
    """The summary table's cells (rows of text) and every section's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.sections: dict[str, str] = {}
        self._cell: list[str] | None = None
        self._section: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "section":
            self._section = dict(attrs)["id"]
            self.sections[str(self._section)] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._section is not None:
            self.sections[self._section] += data


def test_report_html_reads_like_a_report(run: dict[str, Any]) -> None:
    page = _Page()
    page.feed((run["out"] / "report.html").read_text(encoding="utf-8"))
    facts = {row[0]: row[1] for row in page.tables[0] if len(row) == 2}
    assert facts["Management (followup, Lung-RADS v2022)"] == management_recommendation(
        run["document"]["summary"]["exam_lung_rads"]["followup"]["category"]
    )
    nodules = next(t for t in page.tables if t and t[0] and t[0][0] == "Nodule")
    header, rows = nodules[0], nodules[1:]
    column = {name: index for index, name in enumerate(header)}
    assert len(rows) == len(run["table"])
    for cells in rows:
        for name in ("Mean diam. 1 (mm)", "Mean diam. 2 (mm)"):
            assert ONE_DECIMAL.match(cells[column[name]]), cells
        for name in ("Volume 1 (mm³)", "Volume 2 (mm³)"):
            assert re.fullmatch(r"\d+", cells[column[name]]), cells
    for row in run["matched"].values():
        text = page.sections[row["tracking_id"]]
        assert row["location"] in text and row["growth"] in text
        assert "Lung-RADS at baseline" in text and row["baseline_lung_rads_reason"] in text
        assert "Lung-RADS now" in text and row["lung_rads_reason"] in text
        assert row["management"] in text
        volume = f"{float(row['followup_volume_mm3']):.0f} mm³"
        assert volume in text and f"(mean {row['followup_mean_diameter_mm']} mm)" in text


def _longest_run(mask: np.ndarray) -> int:
    """The longest horizontal run of True in a 2D mask."""
    best = 0
    for line in mask.astype(np.int8):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], line, [0]])))
        if len(edges):
            best = max(best, int(np.max(edges[1::2] - edges[0::2])))
    return best


def test_pictures_are_magnified_with_a_scale_bar(run: dict[str, Any]) -> None:
    for row in run["matched"].values():
        picture = PILImage.open(run["out"] / "nodules" / f"{row['tracking_id']}.png")
        mm_per_pixel = float(picture.text["mm_per_pixel"])
        assert 1.0 / mm_per_pixel >= MIN_PIXELS_PER_MM
        pixels = np.asarray(picture.convert("RGB"))
        yellow = np.all(pixels == SCALE_BAR_COLOR, axis=-1)
        assert abs(_longest_run(yellow) - SCALE_BAR_MM / mm_per_pixel) <= 1


@pytest.mark.parametrize("timepoint", ["baseline", "followup"])
def test_sr_finding_sites_carry_the_laterality(run: dict[str, Any], timepoint: str) -> None:
    path = run["out"] / f"{timepoint}_sr.dcm"
    check = run_dciodvfy(path)
    assert check.errors == (), check.output
    groups = {g["tracking_id"]: g for g in read_tracking_sr(path)}
    sr = hd.sr.srread(path)
    sites = {g.tracking_identifier: g.finding_sites for g in sr.content.get_volumetric_roi_measurement_groups()}
    for nodule in run["truth"]["nodules"]:
        row = run["matched"][nodule["id"]]
        group = groups[row["tracking_id"]]
        assert group["laterality"] == nodule["lung"] and group["lung_zone"] == row["lung_zone"]
        assert group["management"] == management_recommendation(group["lung_rads"])
        assert group["location"] and group["location"].startswith(nodule["lung"])
        lung_site = sites[row["tracking_id"]][0]
        assert lung_site.value.value == "39607008"
        assert lung_site.laterality is not None and lung_site.laterality.value == LATERALITY_CODES[nodule["lung"]]
        if timepoint == "followup":
            assert group["growth"] == row["growth"]
    category = run["document"]["summary"]["exam_lung_rads"][timepoint]["category"]
    assert read_exam_management(path) == management_recommendation(category)


def test_a_mass_is_reported_as_a_mass_without_a_doubling_time(tmp_path: Path) -> None:
    """A 45 mm lesion growing 30 %: 'mass' in the table, the page and the SR (SCT Mass), and no VDT anywhere."""
    spec = PhantomSpec(
        size_ijk=(200, 160, 110),
        spacing=(1.8, 1.8, 2.5),
        seed=23,
        nodules=(
            NoduleSpec(45.0, "solid", lung="right", position=(0.0, 0.0, -0.1)),
            NoduleSpec(10.0, "solid", lung="left", position=(0.3, 0.2, 0.55)),
        ),
    )
    write_phantom_pair(tmp_path / "pair", seed=23, baseline=spec, volume_factors=(1.3, 1.0), rotation_deg=(0, 0, 3))
    out = tmp_path / "out"
    argv = ["track", "--baseline", str(tmp_path / "pair/baseline/ct"), "--followup", str(tmp_path / "pair/followup/ct")]
    assert main([*argv, "--output", str(out), "--quiet", "--no-model"]) == 0
    with (out / "tracking.csv").open(newline="", encoding="utf-8") as handle:
        rows = {row["tracking_id"]: row for row in csv.DictReader(handle)}
    masses = [row for row in rows.values() if row["finding"] == "mass"]
    assert len(masses) == 1, rows
    mass = masses[0]
    print(f"\n  {mass['tracking_id']}: {mass['location']}; {mass['growth']}")
    assert mass["side"] == "right" and float(mass["baseline_mean_diameter_mm"]) > 30.0
    assert mass["vdt_days"] == "" and "VDT" not in mass["growth"] and mass["growth"].startswith("mass, ")
    page = _Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    assert not re.search(r"VDT \d", page.sections[mass["tracking_id"]])  # "no VDT is given" may be said
    groups = {g["tracking_id"]: g for g in read_tracking_sr(out / "followup_sr.dcm")}
    group = groups[mass["tracking_id"]]
    assert group["mass"] and group["finding_type"] == "Mass" and group["laterality"] == "right"
    assert "vdt_days" not in group["measurements"]
    others = [g for tid, g in groups.items() if tid != mass["tracking_id"]]
    assert others and not any(g["mass"] for g in others)
    picture = PILImage.open(out / "nodules" / f"{mass['tracking_id']}.png")
    assert 1.0 / float(picture.text["mm_per_pixel"]) >= MIN_PIXELS_PER_MM
    assert picture.size[1] > 4 * 1.5 * float(mass["followup_long_axis_mm"])  # the whole mass with a margin
