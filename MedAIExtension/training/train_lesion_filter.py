r"""Learn the lesion false-positive filter of a catalogued model on phantoms and catalogue it (issue 17).

    python -m MedAIExtension.training.train_lesion_filter --model chest-ct-lung-nodule \
        --train-seeds 20000-20059 --val-seeds 21000-21029 [--catalog PATH] [--max-fp-per-scan 1.0]

For every seed a random patient under a random acquisition (:func:`~MedAIExtension.phantom.acquisition.
random_ct_spec`) is rendered and segmented by the catalogued model *without* its lesion filter through the real
inference path (the CPU variant where the catalogue has one). Each 26-connected component of the lesion label is
described by :func:`~MedAIExtension.models.lesion_filter.lesion_components` and is true when its centroid hits a
reference lesion (LUNA16's rule, :class:`~MedAIExtension.segmentation.froc.Lesion`), false otherwise. A logistic
regression is fitted on the training seeds; its threshold is the lowest one at which the validation seeds keep at
most ``--max-fp-per-scan`` false components of at least ``--min-fp-diameter`` mm per scan (so it keeps as many true
lesions as that budget allows). Masses (≥ 30 mm) are never removed and are left out of the fit.

The filter is written next to the catalogue as ``<model>-lesion-filter.json``; the model's entry and its CPU
variant get it in their files (role ``postprocessing``, sha256) and in ``postprocessing.lesion_filter``.

Each phantom's components are cached in ``--work-dir`` (default ``~/.cache/medai/lesion-filter/<model>-<sha>``,
keyed by the model file's sha256; a record is reused only while the phantom's spec and the features are the same),
so an interrupted run goes on where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.atomic import atomic_path
from MedAIExtension.errors import InputError, MedAIError
from MedAIExtension.models.backends import Backend, load_backend
from MedAIExtension.models.catalog import DEFAULT_CATALOG, ModelEntry, load_catalog, sha256_of
from MedAIExtension.models.devices import cpu_threads
from MedAIExtension.models.inference import run_inference
from MedAIExtension.models.lesion_filter import (
    ALL_FEATURES,
    FEATURE_NAMES,
    MASS_DIAMETER_MM,
    LesionClassifier,
    lesion_components,
)
from MedAIExtension.models.variants import runtime_entry
from MedAIExtension.phantom import LABEL_LUNG, LABEL_NODULE, generate_chest_phantom
from MedAIExtension.phantom.acquisition import random_ct_spec
from MedAIExtension.segmentation.froc import LUNA16_FP_RATES, lesions_from_instances
from MedAIExtension.training.export import update_catalog

__all__ = ["choose_threshold", "main", "operating_point", "parse_seeds", "scan_components"]

#: Bumped when the features or the matching change, so cached scans are measured again.
CACHE_VERSION = 1


def parse_seeds(text: str) -> list[int]:
    """Non-negative seeds from ``"A-B"`` (both included), ``"A,B,C"`` or a mix (``"1-3,7"``)."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if "-" in part:
                first, last = (int(v) for v in part.split("-"))
                if not 0 <= first <= last:
                    raise ValueError(part)
                seeds += range(first, last + 1)
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise InputError(f"Seeds {text!r}: give a range A-B (A ≤ B) or a comma list of integers.") from None
    if not seeds:
        raise InputError(f"Seeds {text!r}: no seed given.")
    return seeds


def _cache_key(seed: int) -> dict[str, Any]:
    """What a cached record must match to be reused: this code's version, the features and the phantom's spec."""
    try:
        spec = repr(random_ct_spec(seed))
    except InputError as exc:
        spec = str(exc)
    digest = hashlib.sha256(spec.encode("utf-8")).hexdigest()[:16]
    return {"version": CACHE_VERSION, "features": list(ALL_FEATURES), "seed": seed, "spec_sha256": digest}


def scan_components(
    seed: int, entry: ModelEntry, backend: Backend, label: int, lung_label: int | None
) -> dict[str, Any]:
    """Render phantom ``seed``, segment it without the lesion filter and describe each lesion-label component.

    Returns a JSON-ready record: the lesions' diameters and, per component, centre, diameter, features and the
    reference lesions it hits; or, for a seed whose phantom cannot be drawn, the reason under ``skipped``.
    """
    started = time.perf_counter()
    key = _cache_key(seed)
    try:
        spec, _ = random_ct_spec(seed)
        phantom = generate_chest_phantom(spec)
    except InputError as exc:  # a draw whose lesions do not fit the patient: no scan (the seed is skipped)
        return {**key, "skipped": str(exc)}
    result = run_inference(phantom.ct, entry, backend)
    lesions = lesions_from_instances(phantom.nodule_ids)
    components = lesion_components(result.labelmap.array, phantom.ct, label, lung_label)
    return {
        **key,
        "spacing_mm": [round(float(s), 3) for s in phantom.ct.spacing],
        "lesion_diameters_mm": [round(lesion.diameter_mm, 2) for lesion in lesions],
        "components": [
            {
                "center_ras": list(c.center_ras),
                "diameter_mm": c.diameter_mm,
                "features": c.features,
                "hits": [i for i, lesion in enumerate(lesions) if lesion.contains(c.center_ras)],
            }
            for c in components
        ],
        "seconds": round(time.perf_counter() - started, 2),
    }


def _cached_scans(
    seeds: Sequence[int], work_dir: Path, measure: Callable[[int], dict[str, Any]], log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Each seed's record from ``work_dir`` when it is there and current, else measured and stored (skipped seeds
    are left out)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    scans = []
    for seed in seeds:
        path = work_dir / f"seed-{seed}.json"
        record = None
        if path.is_file():
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                record = None
            key = _cache_key(seed)
            if not isinstance(record, dict) or any(record.get(k) != v for k, v in key.items()):
                record = None
        if record is None:
            record = measure(seed)
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
            cached = ""
        else:
            cached = " (cached)"
        if "skipped" in record:
            log(f"  seed {seed}: skipped ({record['skipped']})")
            continue
        true = sum(1 for c in record["components"] if c["hits"])
        log(
            f"  seed {seed}: {len(record['lesion_diameters_mm'])} lesion(s), {len(record['components'])} "
            f"component(s), {true} true, spacing {record['spacing_mm']}, {record['seconds']:.1f} s{cached}"
        )
        scans.append(record)
    return scans


def _rows(scans: Sequence[dict[str, Any]], names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of the non-mass components, whether each is true, and which scan it is in."""
    x, y, scan_of = [], [], []
    for index, scan in enumerate(scans):
        for component in scan["components"]:
            if component["diameter_mm"] >= MASS_DIAMETER_MM:
                continue
            x.append([float(component["features"][n]) for n in names])
            y.append(bool(component["hits"]))
            scan_of.append(index)
    return np.array(x, dtype=float).reshape(-1, len(names)), np.array(y, dtype=bool), np.array(scan_of, dtype=int)


def operating_point(
    scans: Sequence[dict[str, Any]], classifier: LesionClassifier | None, threshold: float, min_fp_mm: float
) -> dict[str, float]:
    """Sensitivity (reference lesions hit by a kept component) and false components ≥ ``min_fp_mm`` per scan.

    Without a classifier (or at threshold 0) every component is kept: the model without the filter.
    """
    lesions = detected = false_positives = 0
    for scan in scans:
        lesions += len(scan["lesion_diameters_mm"])
        hit: set[int] = set()
        for component in scan["components"]:
            kept = component["diameter_mm"] >= MASS_DIAMETER_MM or classifier is None
            if not kept and classifier is not None:
                row = [[float(component["features"][n]) for n in classifier.feature_names]]
                kept = float(classifier.probability(np.array(row))[0]) >= threshold
            if not kept:
                continue
            hit.update(component["hits"])
            if not component["hits"] and component["diameter_mm"] >= min_fp_mm:
                false_positives += 1
        detected += len(hit)
    return {
        "sensitivity": round(detected / lesions, 4) if lesions else float("nan"),
        "lesions": lesions,
        "detected": detected,
        "fp_per_scan": round(false_positives / max(len(scans), 1), 4),
    }


def _candidates(scans: Sequence[dict[str, Any]], classifier: LesionClassifier) -> list[float]:
    """0, the midpoints between consecutive distinct scores of the scans' components, and one above the highest."""
    x, _, _ = _rows(scans, classifier.feature_names)
    scores = np.unique(classifier.probability(x)) if len(x) else np.array([])
    above = [(float(scores[-1]) + 1.0) / 2.0] if len(scores) else []
    return [0.0, *(float(v) for v in (scores[:-1] + scores[1:]) / 2.0), *above]


def choose_threshold(
    scans: Sequence[dict[str, Any]], classifier: LesionClassifier, max_fp_per_scan: float, min_fp_mm: float
) -> float:
    """The lowest threshold at which ``scans`` keep at most ``max_fp_per_scan`` false components per scan.

    Candidates are 0 and the midpoints between consecutive distinct scores (and above the highest), so the chosen
    threshold keeps the most true lesions within the budget and lies between scores, not on one.
    """
    candidates = _candidates(scans, classifier)
    for threshold in candidates:
        if operating_point(scans, classifier, threshold, min_fp_mm)["fp_per_scan"] <= max_fp_per_scan:
            return threshold
    return candidates[-1]


def _curve(scans: Sequence[dict[str, Any]], classifier: LesionClassifier, min_fp_mm: float) -> list[str]:
    """One line per false-positive budget (LUNA16's rates): the threshold it gives and what it keeps."""
    lines = []
    for budget in LUNA16_FP_RATES:
        threshold = choose_threshold(scans, classifier, budget, min_fp_mm)
        point = operating_point(scans, classifier, threshold, min_fp_mm)
        lines.append(
            f"  ≤ {budget:g} FP/scan: threshold {threshold:.4f}, sensitivity {point['sensitivity']:.3f}, "
            f"{point['fp_per_scan']:.2f} false positives per scan"
        )
    return lines


def _default_work_dir(entry: ModelEntry) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "medai" / "lesion-filter" / f"{entry.name}-{sha256_of(entry.model_file)[:16]}"


def _catalogue_filter(
    catalog_path: Path, names: Sequence[str], filter_file: str, label: int, lung_label: int | None
) -> None:
    """Add the filter file (role postprocessing) and ``postprocessing.lesion_filter`` to the entries ``names``."""
    for name in names:
        data = json.loads(catalog_path.read_text(encoding="utf-8"))
        raw = next(m for m in data["models"] if m["name"] == name)
        files = [f for f in raw["files"] if f.get("role") != "postprocessing" and f["path"] != filter_file]
        reference: dict[str, Any] = {"label": label, "file": filter_file}
        if lung_label is not None:
            reference["lung_label"] = lung_label
        extent = raw.get("postprocessing", {}).get("lesion_filter", {}).get("extent_logit")
        if extent is not None:  # the outline's margin (train_lesion_extent) outlives a refitted filter
            reference["extent_logit"] = extent
        entry = {
            **raw,
            "files": [*files, {"path": filter_file, "role": "postprocessing"}],
            "postprocessing": {**raw.get("postprocessing", {}), "lesion_filter": reference},
        }
        update_catalog(catalog_path, entry, catalog_path.parent)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the phantoms, fit the filter, choose its threshold, write and catalogue it."""
    import torch

    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--model", default="chest-ct-lung-nodule")
    parser.add_argument("--train-seeds", required=True, help="e.g. 20000-20059")
    parser.add_argument("--val-seeds", required=True, help="e.g. 21000-21029 (disjoint from the training seeds)")
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--max-fp-per-scan", type=float, default=1.0)
    parser.add_argument("--min-fp-diameter", type=float, default=3.0, help="smaller false components are not counted")
    parser.add_argument("--label", type=int, default=LABEL_NODULE)
    parser.add_argument("--lung-label", type=int, default=LABEL_LUNG, help="0: rejected components become background")
    parser.add_argument("--l2", type=float, default=1.0)
    parser.add_argument("--work-dir", type=Path, default=None, help="per-phantom cache (restarts resume from it)")
    args = parser.parse_args(argv)
    lung_label = args.lung_label or None
    try:
        train_seeds, val_seeds = parse_seeds(args.train_seeds), parse_seeds(args.val_seeds)
        if set(train_seeds) & set(val_seeds):
            raise InputError("Training and validation seeds overlap; give disjoint ranges.")
        if args.max_fp_per_scan < 0:
            raise InputError(f"--max-fp-per-scan must be ≥ 0, got {args.max_fp_per_scan}.")
        catalog = load_catalog(args.catalog, include_user_models=False)
        entry = catalog.get(args.model)
        runner = runtime_entry(entry, "cpu", catalog)
        runner = replace(runner, postprocessing=replace(runner.postprocessing, lesion_filter=None))
        torch.set_num_threads(cpu_threads())
        backend = load_backend(runner, "cpu")
        work_dir = args.work_dir or _default_work_dir(entry)
        print(f"model {entry.name} {entry.version} (run as {runner.name}); per-phantom cache {work_dir}")
        started = time.perf_counter()

        def measure(seed: int) -> dict[str, Any]:
            return scan_components(seed, runner, backend, args.label, lung_label)

        print(f"training phantoms ({len(train_seeds)})")
        train = _cached_scans(train_seeds, work_dir, measure, print)
        print(f"validation phantoms ({len(val_seeds)})")
        val = _cached_scans(val_seeds, work_dir, measure, print)
        x, y, _ = _rows(train, FEATURE_NAMES)
        classifier = LesionClassifier.fit(x, y, FEATURE_NAMES, l2=args.l2)
        threshold = choose_threshold(val, classifier, args.max_fp_per_scan, args.min_fp_diameter)
        before = operating_point(val, None, 0.0, args.min_fp_diameter)
        after = operating_point(val, classifier, threshold, args.min_fp_diameter)
    except MedAIError as exc:
        print(f"error: {exc}")
        return 2
    per_phantom = [scan["seconds"] for scan in (*train, *val)]
    record = {
        "script": "python -m MedAIExtension.training.train_lesion_filter",
        "model": entry.name,
        "model_version": entry.version,
        "model_sha256": sha256_of(entry.model_file),
        "train_seeds": args.train_seeds,
        "val_seeds": args.val_seeds,
        "max_fp_per_scan": args.max_fp_per_scan,
        "min_fp_diameter_mm": args.min_fp_diameter,
        "train_components": int(len(y)),
        "train_true": int(y.sum()),
        "val_before": before,
        "val_after": after,
        "seconds_per_phantom": round(float(np.mean(per_phantom)), 2),
    }
    classifier = classifier.with_threshold(threshold, record)
    filter_file = f"{entry.name}-lesion-filter.json"
    with atomic_path(args.catalog.parent / filter_file) as tmp:
        classifier.save(tmp)
    names = [entry.name, *([entry.cpu_variant] if entry.cpu_variant and entry.cpu_variant in catalog else [])]
    _catalogue_filter(args.catalog, names, filter_file, args.label, lung_label)
    load_catalog(args.catalog, include_user_models=False)  # the result must load (schema, files, labels)
    print(
        f"threshold {threshold:.4f} (at most {args.max_fp_per_scan:g} false components ≥ "
        f"{args.min_fp_diameter:g} mm per validation scan)"
    )
    print("validation operating points per false-positive budget:")
    print(*_curve(val, classifier, args.min_fp_diameter), sep="\n")
    for name, point in (("before", before), ("after ", after)):
        print(
            f"validation {name}: sensitivity {point['sensitivity']:.3f} ({point['detected']}/{point['lesions']}), "
            f"{point['fp_per_scan']:.2f} false positives per scan"
        )
    print(f"wrote {args.catalog.parent / filter_file}; catalogued for {', '.join(names)}")
    print(f"{round(time.perf_counter() - started)} s; {record['seconds_per_phantom']} s per phantom measured")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
