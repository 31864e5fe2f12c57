r"""Choose the lesion outline's hysteresis margin of a catalogued model on validation phantoms and catalogue it.

    python -m MedAIExtension.training.train_lesion_extent --model chest-ct-lung-nodule \
        --seeds 6100-6115 [--margins 0,1,2,3,4,5] [--catalog PATH]

Each seed is a random patient under a random acquisition (:func:`~MedAIExtension.phantom.acquisition.
random_ct_spec`, as for the lesion filter's validation), segmented once by the catalogued model through the real
inference path (its CPU variant where it has one, with its lesion filter). For every margin the label map is made
again from the same scores (:mod:`MedAIExtension.models.lesion_extent`) and the Dice of each reference lesion of at
least 6 mm is measured in a box of twice its diameter (:func:`~MedAIExtension.training.heldout_v2.lesion_dices`).
The margin with the best mean Dice is written to ``postprocessing.lesion_filter.extent_logit`` of the model and
its CPU variant, with the curve in the model's ``training.lesion_extent`` record. Growth adds no component, so
detection and false positives are the same for every margin.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError, MedAIError
from MedAIExtension.models.backends import load_backend
from MedAIExtension.models.catalog import DEFAULT_CATALOG, ModelEntry, load_catalog
from MedAIExtension.models.devices import cpu_threads
from MedAIExtension.models.inference import predict_scores, prepare_input, scores_to_labelmap
from MedAIExtension.models.variants import runtime_entry
from MedAIExtension.phantom import generate_chest_phantom
from MedAIExtension.phantom.acquisition import random_ct_spec
from MedAIExtension.training.export import update_catalog
from MedAIExtension.training.heldout_v2 import lesion_dices
from MedAIExtension.training.train_lesion_filter import parse_seeds

__all__ = ["choose_margin", "main", "with_extent"]


def with_extent(entry: ModelEntry, margin: float) -> ModelEntry:
    """``entry`` with its lesion filter's ``extent_logit`` set to ``margin``."""
    spec = entry.postprocessing.lesion_filter
    if spec is None:
        raise InputError(f"Model {entry.name} has no lesion filter; run train_lesion_filter first.")
    return replace(
        entry, postprocessing=replace(entry.postprocessing, lesion_filter=replace(spec, extent_logit=margin))
    )


def choose_margin(dices: dict[float, list[float]]) -> float:
    """The margin with the best mean lesion Dice (the smaller one on a tie)."""
    if not dices or not any(dices.values()):
        raise InputError("No validation lesion of 6 mm or more: give more validation seeds.")
    return max(sorted(dices), key=lambda m: (round(float(np.mean(dices[m])), 4), -m))


def _catalogue_extent(catalog_path: Path, names: Sequence[str], margin: float, record: dict[str, Any]) -> None:
    """Write ``extent_logit`` into ``postprocessing.lesion_filter`` and ``record`` into ``training.lesion_extent``
    of the entries ``names``."""
    for name in names:
        data = json.loads(catalog_path.read_text(encoding="utf-8"))
        raw = next(m for m in data["models"] if m["name"] == name)
        post = dict(raw.get("postprocessing", {}))
        post["lesion_filter"] = {**post["lesion_filter"], "extent_logit": margin}
        entry = {**raw, "postprocessing": post, "training": {**raw.get("training", {}), "lesion_extent": record}}
        update_catalog(catalog_path, entry, catalog_path.parent)


def main(argv: Sequence[str] | None = None) -> int:
    """Segment the validation phantoms once, score every margin, catalogue the best."""
    import torch

    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--model", default="chest-ct-lung-nodule")
    parser.add_argument("--seeds", required=True, help="validation seeds, e.g. 6100-6115 (never held-out ones)")
    parser.add_argument("--margins", default="0,1,2,3,4,5", help="logit margins to try, comma-separated")
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        seeds = parse_seeds(args.seeds)
        margins = sorted({float(m) for m in args.margins.split(",") if m.strip()})
        if not margins or min(margins) < 0:
            raise InputError(f"--margins {args.margins!r}: give non-negative numbers, e.g. 0,1,2,3.")
        catalog = load_catalog(args.catalog, include_user_models=False)
        entry = catalog.get(args.model)
        runner = runtime_entry(entry, "cpu", catalog)
        with_extent(runner, 0.0)  # refuses a model without a lesion filter before any work
        torch.set_num_threads(cpu_threads())
        backend = load_backend(runner, "cpu")
        dices: dict[float, list[float]] = {m: [] for m in margins}
        for seed in seeds:
            try:
                phantom = generate_chest_phantom(random_ct_spec(seed)[0])
            except InputError as exc:
                print(f"  seed {seed}: skipped ({exc})")
                continue
            prepared = prepare_input(phantom.ct, runner)
            if prepared is None:
                continue
            scores, _ = predict_scores(prepared, backend)
            for margin in margins:
                labelmap = scores_to_labelmap(scores, prepared, with_extent(runner, margin), phantom.ct)
                dices[margin] += lesion_dices(phantom, labelmap)
            print(f"  seed {seed}: " + ", ".join(f"{m:g}: {np.mean(d):.3f}" for m, d in dices.items() if d))
        margin = choose_margin(dices)
    except MedAIError as exc:
        print(f"error: {exc}")
        return 2
    record = {
        "script": "python -m MedAIExtension.training.train_lesion_extent",
        "seeds": args.seeds,
        "lesions_ge_6mm": len(dices[margin]),
        "dice_by_margin": {f"{m:g}": round(float(np.mean(d)), 4) for m, d in dices.items() if d},
        "chosen": margin,
    }
    names = [entry.name, *([entry.cpu_variant] if entry.cpu_variant and entry.cpu_variant in catalog else [])]
    _catalogue_extent(args.catalog, names, margin, record)
    load_catalog(args.catalog, include_user_models=False)  # the result must load (schema, files, labels)
    print(f"validation lesion Dice ≥ 6 mm by margin: {record['dice_by_margin']}; chose {margin:g}")
    print(f"catalogued for {', '.join(names)}; {round(time.perf_counter() - started)} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
