"""``medai demo``: generate a phantom study, segment it, write DICOM SEG + seg.nrrd + overlay PNG + HTML,
explain the shipped classifier's view of the largest nodule (Grad-CAM map, Parametric Map, key slices), and assess
the nodules for a PACS and a RIS (presentation state + PNG, plain-text, HL7 ORU and FHIR reports; see
:mod:`MedAIExtension.demo_reports`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from MedAIExtension.atomic import ensure_writable_directory
from MedAIExtension.demo_reports import write_demo_reports
from MedAIExtension.explain.outputs import write_explanation_outputs
from MedAIExtension.explain.pipeline import explain_image
from MedAIExtension.explain.request import Roi
from MedAIExtension.io.dicom_series import read_dicom_series
from MedAIExtension.io.volume_files import read_volume_file
from MedAIExtension.labels import label_statistics
from MedAIExtension.metrics import compare_labelmaps
from MedAIExtension.phantom.study import write_phantom_study
from MedAIExtension.progress import Progress
from MedAIExtension.segmentation.pipeline import SegmentRequest, segment_to_folder
from MedAIExtension.segmentation.report import render_overlay_png, write_html_summary

__all__ = ["DEMO_CLASSIFIER", "DEMO_MODEL", "run_demo"]

DEMO_MODEL = "chest-ct-lung-nodule"
DEMO_CLASSIFIER = "chest-ct-nodule-classifier"
#: The report files run_demo returns (its key -> the key of DemoReports.files).
_REPORTED = {
    "PR": "presentation state",
    "PR PNG": "presentation state PNG",
    "report": "report text",
    "HL7 ORU": "HL7 ORU^R01",
    "FHIR report": "FHIR DiagnosticReport",
}


def run_demo(
    output_dir: str | os.PathLike[str],
    device: str = "auto",
    progress: Callable[[float, str], None] | None = None,
    model: str = DEMO_MODEL,
) -> dict[str, Path]:
    """Run the main job end to end on an embedded default phantom; returns the written files."""
    reporter = Progress(progress)
    out = ensure_writable_directory(output_dir)
    reporter(0.0, "generating the phantom study")
    study = write_phantom_study(out / "phantom", seed=7)
    ct = read_dicom_series(study["ct"])
    request = SegmentRequest(ct, model, out / "segmentation", ("dicom-seg", "seg.nrrd", "nii.gz"), device=device)
    segmented = segment_to_folder(request, progress=reporter.stage(0.1, 0.8))
    result, files = segmented.result, segmented.files
    explained = _explain_largest_nodule(ct, study["truth"], out / "explanation", device, reporter.stage(0.8, 0.88))
    reports = write_demo_reports(ct, out / "report", device, reporter.stage(0.88, 0.97))
    reporter(0.97, "rendering the overlay")
    overlay = render_overlay_png(ct, result.labelmap, result.labels, out / "overlay.png", prefer_label=2)
    truth = read_volume_file(study["labels"])
    metrics = compare_labelmaps(result.labelmap, truth, [(label.value, label.name) for label in result.labels])
    facts = [
        (
            "Input",
            f"phantom CT {ct.shape[2]}×{ct.shape[1]}×{ct.shape[0]} voxels, spacing "
            + " × ".join(f"{s:.2f}" for s in ct.spacing)
            + " mm",
        ),
        ("Model", f"{result.model.title} ({result.model.name} {result.model.version})"),
        ("Ran on", f"{result.provider} in {result.seconds:.1f} s"),
        *[(f"Dice vs truth: {m.name}", f"{m.dice:.3f} (HD95 {m.hd95_mm:.1f} mm)") for m in metrics],
        *[(f"Grad-CAM sanity: {name}", check.get("summary", "")) for name, check in explained["sanity"].items()],
        *reports.facts,
    ]
    rel = {k: os.path.relpath(v, out) for k, v in files.items()}
    html = write_html_summary(
        out / "summary.html",
        "MedAI demo: lungs and nodules on a phantom chest CT",
        facts,
        label_statistics(result.labelmap, result.labels),
        image_name="overlay.png",
        files={
            **rel,
            "phantom CT (DICOM)": os.path.relpath(study["ct"], out),
            **{f"explanation {k}": f"explanation/{v}" for k, v in explained["files"].items() if isinstance(v, str)},
            **{k: os.path.relpath(v, out) for k, v in reports.files.items()},
        },
    )
    reporter(1.0, "done")
    return {
        **{f"seg {k}": v for k, v in files.items()},
        "overlay": overlay,
        "html": html,
        "phantom": study["ct"],
        "explanation": out / "explanation" / "explanation.json",
        **{key: reports.files[name] for key, name in _REPORTED.items() if name in reports.files},
    }


def _explain_largest_nodule(ct: Any, truth_path: Path, output: Path, device: str, progress: Progress) -> dict[str, Any]:
    """Grad-CAM of the shipped classifier on the phantom's largest nodule, written with every explanation output."""
    import json

    nodules = json.loads(Path(truth_path).read_text(encoding="utf-8"))["nodules"]
    largest = max(nodules, key=lambda n: n["diameter_mm"])
    roi = Roi(tuple(largest["center_ras"]), (20.0, 20.0, 20.0))
    explanation = explain_image(ct, DEMO_CLASSIFIER, "gradcam", roi=roi, device=device, progress=progress.stage(0, 0.8))
    return write_explanation_outputs(
        explanation, ct, output, input_label="phantom-ct", progress=progress.stage(0.8, 1.0)
    )
