"""The reporting part of ``medai demo``: the nodule assessment of the phantom study and what a PACS and a RIS get.

:func:`write_demo_reports` assesses the phantom CT's nodules (the classical detector, no model: a few seconds on a
CPU) and writes into one folder the tracking DICOM SEG and SR, a Grayscale Softcopy Presentation State with the
nodules circled and labelled, that presentation state rendered onto the slice through the largest nodule (PNG;
skipped, with a note, where dcmtk's ``dcmp2pgm`` is not installed), and the report as plain text, an HL7 v2.5.1
ORU^R01 and a FHIR R4 DiagnosticReport.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from MedAIExtension.atomic import atomic_path, ensure_writable_directory
from MedAIExtension.dicom.pr_render import render_presentation_state
from MedAIExtension.dicom.tools import MissingToolError, find_tool
from MedAIExtension.errors import OutputError
from MedAIExtension.interop.fhir_report import write_fhir_report
from MedAIExtension.interop.hl7_oru import build_oru
from MedAIExtension.interop.report_text import report_content, tracking_report_text
from MedAIExtension.io.image import Image
from MedAIExtension.progress import Progress
from MedAIExtension.tracking.outputs import write_study_dicom
from MedAIExtension.tracking.pipeline import TrackingOptions, assess_study
from MedAIExtension.tracking.presentation_state import write_tracking_presentation_state
from MedAIExtension.tracking.results import StudyResult

__all__ = ["DemoReports", "largest_nodule_slice", "write_demo_reports"]


@dataclass(frozen=True)
class DemoReports:
    """What :func:`write_demo_reports` wrote.

    Attributes:
        result: the nodule assessment of the study.
        files: description -> written file (the presentation-state PNG is absent when dcmp2pgm is missing).
        facts: (heading, text) lines for the demo's summary page.
    """

    result: StudyResult
    files: dict[str, Path]
    facts: list[tuple[str, str]]


def largest_nodule_slice(result: StudyResult) -> int | None:
    """Index ``k`` of the slice through the centre of the largest nodule (by long axis); None without nodules.

    The slice on which the presentation state draws that nodule (the voxel nearest its centre).
    """
    if not result.nodules:
        return None
    largest = max(result.nodules, key=lambda n: float(n.baseline.measurement.long_axis_mm) if n.baseline else 0.0)
    assert largest.baseline is not None  # a single-study result sees every nodule in its only study
    image = result.baseline.image
    centre = np.r_[np.asarray(largest.baseline.measurement.center_ras, dtype=float), 1.0]
    return int(np.floor((np.linalg.inv(image.ijk_to_ras) @ centre)[2] + 0.5))


def _write_hl7(message: str, path: Path) -> Path:
    """The ORU as UTF-8 bytes, segments separated by carriage returns only, written atomically."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(message.encode("utf-8"))
    except OSError as exc:
        raise OutputError(f"Writing the HL7 message {path} failed ({exc.strerror or exc}).") from None
    return path


def _write_text(text: str, path: Path) -> Path:
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"Writing the report {path} failed ({exc.strerror or exc}).") from None
    return path


def write_demo_reports(ct: Image, folder: Path, device: str, progress: Progress) -> DemoReports:
    """Assess ``ct``'s nodules and write the tracking DICOM, presentation state (+ PNG) and reports into ``folder``.

    ``ct`` must have been read from DICOM (the presentation state and the reports reference its files).

    Raises:
        InputError: ``ct`` is not a CT read from DICOM.
        OutputError: ``folder`` cannot be written.
    """
    out = ensure_writable_directory(folder)
    progress(0.0, "assessing the nodules")
    result = assess_study(ct, TrackingOptions(model=None, device=device), progress=progress.stage(0.0, 0.7))
    progress(0.7, "writing the presentation state and reports")
    dicom = write_study_dicom(result, "baseline", out)
    files = {f"tracking DICOM {k.removeprefix('baseline_').upper()}": v for k, v in dicom.items()}
    files["presentation state"] = write_tracking_presentation_state(result, "baseline", out / "presentation_state.dcm")
    facts: list[tuple[str, str]] = []
    k = largest_nodule_slice(result)
    if k is not None:
        try:
            find_tool("dcmp2pgm", "")
        except MissingToolError:
            facts.append(("Presentation state PNG", "not rendered: install dcmtk (it provides dcmp2pgm)"))
        else:
            png = render_presentation_state(
                files["presentation state"], ct.source_files[k], out / "presentation_state.png"
            )
            files["presentation state PNG"] = png
    content = report_content(result)
    files["report text"] = _write_text(tracking_report_text(content), out / "report.txt")
    files["HL7 ORU^R01"] = _write_hl7(build_oru(content), out / "report.hl7")
    files["FHIR DiagnosticReport"] = write_fhir_report(content, out / "diagnostic_report.json")
    facts.insert(
        0,
        (
            "Nodule assessment",
            f"{len(result.nodules)} nodule(s), Lung-RADS {content.exam_lung_rads}: {content.management} "
            f"(reading priority {content.triage.priority}; preliminary, AI)",
        ),
    )
    progress(1.0, "reports written")
    return DemoReports(result, files, facts)
