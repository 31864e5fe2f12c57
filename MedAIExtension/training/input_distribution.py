r"""Compute a catalogued model's ``input_distribution`` from its training cases, without training.

    python -m MedAIExtension.training.input_distribution --model chest-ct-lung-nodule [--all-stages] [--write]

The training script writes ``input_distribution`` itself (:func:`MedAIExtension.training.train.main`); for weights
trained before it did, this regenerates the same phantoms from the seeds in the entry's ``training`` block
(``case_seed``, ``train_cases``, ``max_diameter_mm``, ``v2_share``) and summarises their input statistics
(:func:`MedAIExtension.batch.drift.training_distribution`). By default only the last stage's cases count (the run
that wrote the weights); ``--all-stages`` adds the stages in ``fine_tuned_from``. ``--write`` stores the result
in every catalogue entry with the same ``training`` block (the ONNX model and its torch bundle); model files and
their sha256 are untouched.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from MedAIExtension.atomic import atomic_path
from MedAIExtension.batch.drift import training_distribution
from MedAIExtension.errors import InputError
from MedAIExtension.models.catalog import DEFAULT_CATALOG
from MedAIExtension.phantom import generate_chest_phantom
from MedAIExtension.training.case_specs import V2Lesions, case_specs
from MedAIExtension.training.train import case_input_statistics

__all__ = ["distribution_from_training", "main", "stage_seeds", "write_distribution"]


def stage_seeds(
    training: Mapping[str, Any], all_stages: bool = False
) -> list[tuple[list[int], float, float, V2Lesions]]:
    """``(seeds, max_diameter_mm, v2_share, v2_lesions)`` of each stage of a ``training`` block (last stage first).

    Missing values take :func:`~MedAIExtension.training.train.main`'s defaults (case seed 1000, 20 cases,
    20 mm, no v2 cases, v2 cases with 1-5 lesions of 3-30 mm).
    """
    if not training.get("script", "").endswith("training.train"):
        raise InputError(
            f"The model was not trained by MedAIExtension.training.train (training script "
            f"{training.get('script')!r}), so its training cases cannot be regenerated here."
        )
    stages = []
    record: Mapping[str, Any] | None = training
    while record:
        low, high = (float(v) for v in record.get("v2_diameter_mm", (3.0, 30.0)))
        first, count = int(record.get("case_seed", 1000)), int(record.get("train_cases", 20))
        stages.append(
            (
                list(range(first, first + count)),
                float(record.get("max_diameter_mm", 20.0)),
                float(record.get("v2_share", 0.0)),
                V2Lesions(int(record.get("v2_max_nodules", 5)), (low, high)),
            )
        )
        record = record.get("fine_tuned_from") if all_stages else None
    return stages


def distribution_from_training(
    training: Mapping[str, Any], all_stages: bool = False, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Regenerate the training phantoms of a ``training`` block and summarise their input statistics."""
    statistics = []
    for seeds, max_diameter, v2_share, v2_lesions in stage_seeds(training, all_stages):
        for seed, spec in zip(seeds, case_specs(seeds, (4.0, max_diameter), v2_share, v2_lesions), strict=True):
            started = time.perf_counter()
            statistics.append(case_input_statistics(generate_chest_phantom(spec)))
            log(f"  case seed {seed}: {spec.size_ijk} @ {spec.spacing} ({time.perf_counter() - started:.1f} s)")
    return training_distribution(statistics)


def write_distribution(catalog: Path, name: str, distribution: Mapping[str, Any]) -> list[str]:
    """Store ``distribution`` as ``input_distribution`` of ``name`` and of every entry with its training block.

    Returns the names of the entries written. The catalogue is replaced atomically.
    """
    data = json.loads(catalog.read_text(encoding="utf-8"))
    models = data["models"]
    entry = next((m for m in models if m.get("name") == name), None)
    if entry is None:
        raise InputError(f"The catalogue {catalog} has no model {name!r}. Use one of: {[m['name'] for m in models]}.")
    written = []
    for model in models:
        if model.get("name") == name or (model.get("training") and model.get("training") == entry.get("training")):
            model["input_distribution"] = dict(distribution)
            written.append(model["name"])
    with atomic_path(catalog) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Compute (and with ``--write`` store) a model's training input distribution."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--all-stages", action="store_true", help="include the stages in fine_tuned_from")
    parser.add_argument("--write", action="store_true", help="store it in the catalogue")
    args = parser.parse_args(argv)
    models = json.loads(args.catalog.read_text(encoding="utf-8"))["models"]
    entry = next((m for m in models if m.get("name") == args.model), None)
    if entry is None:
        parser.error(f"no model {args.model!r} in {args.catalog}")
    distribution = distribution_from_training(entry.get("training") or {}, args.all_stages)
    print(json.dumps({k: v for k, v in distribution.items() if not k.startswith("hist_")}, indent=2))
    if args.write:
        print("written to:", ", ".join(write_distribution(args.catalog, args.model, distribution)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
