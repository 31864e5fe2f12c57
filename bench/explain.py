"""Benchmark: MedAI occlusion sensitivity vs MONAI's OcclusionSensitivity (same model, volume, mask, stride, batch),
plus Grad-CAM time per volume.

    .venv/bin/python bench/explain.py [--size 48] [--settings 8:4 12:6] [--batch 16] [--threads N] [--repeat R]

The volume is a cube of ``--size`` voxels (1 mm, LPS, kji) of a phantom chest CT centred on a solid nodule,
normalised like the classifier's input (the catalogue's normalisation; clip -1000..400 HU → 0..1). The model is
the shipped ``chest-ct-nodule-classifier`` (TorchScript) when Resources/Models has it, else ``build_classifier()``
with seeded (untrained) weights — the line "model:" says which. Each variant runs in its own child process (so its peak
RSS is its own), with the same number of torch threads, after one warm-up forward pass:

* medai    — ``occlusion_sensitivity(predict, x, target, module=...)``: MONAI's window scan, exact incremental
             inference on the receptive-field cone of each window (the classifier is a chain of local layers);
* monai    — ``monai.visualize.OcclusionSensitivity(module, mask_size, n_batch, mode=0.0,
             overlap=1 - stride/mask, activate=softmax)``: one full forward pass per window;
* gradcam  — ``grad_cam(module, x, target, layer)`` (Grad-CAM and Grad-CAM++), median of a few runs.

With ``--repeat R`` every variant runs each setting R times in its process (the times are medians, with their
range; on a shared machine the ratio of medians is steadier than that of single runs).

Prints per setting both times, the ratio (target ≥ 5x), max |difference| between the maps (target ≤ 1e-4) and
each variant's peak RSS, then the Grad-CAM time per volume and the machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import cpu_model  # noqa: E402 - bench/machine.py, beside this script

MODEL = "chest-ct-nodule-classifier"
TARGET_CHANNEL = 0  # labels [1 "Nodule", 2 "Vessel"]: channel 0 = Nodule
#: the classifier's input normalisation, used until the shipped model (and its catalogue entry) is there
_NORMALIZATION = {"type": "clip_scale", "a_min": -1000.0, "a_max": 400.0, "b_min": 0.0, "b_max": 1.0, "clip": True}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _load_model() -> tuple[Any, Any, str, str]:
    """(module, predict, description, Grad-CAM layer): the shipped classifier, or seeded weights without it."""
    import torch

    from MedAIExtension.models.backends import load_backend
    from MedAIExtension.models.catalog import load_catalog
    from MedAIExtension.training.classifier_network import CLASSIFIER_TARGET_LAYER, build_classifier

    catalog = load_catalog(include_user_models=False)
    if MODEL in catalog:
        entry = catalog.get(MODEL)
        backend = load_backend(entry, "cpu")
        layer = entry.explain.get("target_layer") or CLASSIFIER_TARGET_LAYER
        return backend.module, backend.predict, f"shipped {MODEL} ({entry.backend}, {entry.model_file.name})", layer
    torch.manual_seed(0)
    module = build_classifier().eval()

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).numpy()

    return (
        module,
        predict,
        "build_classifier() with seeded, untrained weights (shipped model not found)",
        (CLASSIFIER_TARGET_LAYER),
    )


def _volume(size: int) -> tuple[np.ndarray, str]:
    """A ``size``³ crop (1 mm) of a phantom chest CT centred on its first solid nodule, normalised to 0..1."""
    from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom

    probe = generate_chest_phantom(PhantomSpec(size_ijk=(8, 8, 8), spacing=(4.0, 4.0, 4.0), seed=11))
    nodule = next(n for n in probe.truth["nodules"] if n["kind"] == "solid")
    centre = tuple(float(c) for c in nodule["center_ras"])
    spec = PhantomSpec(size_ijk=(size, size, size), spacing=(1.0, 1.0, 1.0), center_ras=centre, seed=11)
    from MedAIExtension.models.catalog import load_catalog
    from MedAIExtension.models.preprocessing import normalize_intensity

    catalog = load_catalog(include_user_models=False)
    normalization = catalog.get(MODEL).input.normalization if MODEL in catalog else _NORMALIZATION
    x = normalize_intensity(generate_chest_phantom(spec).ct.array, normalization)[None, None]
    return np.ascontiguousarray(x, dtype=np.float32), f"{nodule['diameter_mm']:.0f} mm solid nodule at {centre}"


def _child(
    variant: str, work: Path, settings: list[tuple[int, int]], batch: int, threads: int, repeat: int
) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    for name in ("monai.visualize", "MedAIExtension.explain.occlusion"):  # imported before any timing
        importlib.import_module(name)
    from MedAIExtension.explain.types import ScoreTarget

    module, predict, description, layer = _load_model()
    torch.set_num_threads(threads)  # the backend sets its own default
    x = np.load(work / "x.npy")
    target = ScoreTarget(TARGET_CHANNEL, name="Nodule")
    with torch.inference_mode():
        module(torch.from_numpy(x))  # warm-up, for every variant
    report: dict[str, Any] = {"variant": variant, "model": description, "runs": []}
    if variant == "gradcam":
        from MedAIExtension.explain.gradcam import grad_cam

        for plus_plus in (False, True):
            times = []
            for _ in range(5):
                started = time.perf_counter()
                grad_cam(module, x, target, layer, plus_plus=plus_plus)
                times.append(time.perf_counter() - started)
            report["runs"].append({"plus_plus": plus_plus, "seconds": statistics.median(times), "layer": layer})
    for mask, stride in settings if variant != "gradcam" else []:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            raw, extra = _occlusion(variant, module, predict, x, target, mask, stride, batch)
            times.append(time.perf_counter() - started)
        np.save(work / f"{variant}-{mask}-{stride}.npy", raw)
        report["runs"].append(
            {"mask": mask, "stride": stride, "seconds": statistics.median(times), "times": times, **extra}
        )
    report["peak_rss_mb"] = _peak_rss_mb()
    return report


def _occlusion(
    variant: str, module: Any, predict: Any, x: np.ndarray, target: Any, mask: int, stride: int, batch: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """One occlusion map (raw scores of the target) by ``variant`` and what MedAI reports about it."""
    import torch
    from monai.visualize import OcclusionSensitivity

    from MedAIExtension.explain.occlusion import occlusion_sensitivity

    if variant == "medai":
        result = occlusion_sensitivity(
            predict, x, target, mask_size=mask, stride=stride, baseline=0.0, batch_size=batch, module=module
        )
        extra = {
            "engine": result.engine,
            "windows": result.windows_evaluated,
            "skipped": result.windows_skipped,
            "base_score": result.base_score,
            "notes": result.notes,
        }
        return result.raw, extra
    overlap = max(0.0, 1.0 - (stride + 0.5) / mask)  # MONAI's scan interval int(mask * (1 - overlap))
    occ = OcclusionSensitivity(
        module, mask_size=mask, n_batch=batch, verbose=False, mode=0.0, overlap=overlap,
        activate=lambda out: out.softmax(1),
    )  # fmt: skip
    with torch.inference_mode():
        return occ(torch.from_numpy(x))[0][0, TARGET_CHANNEL].numpy(), {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=48, help="edge of the cubic volume in voxels (1 mm)")
    parser.add_argument("--settings", nargs="+", default=["8:4", "12:6"], help="MASK:STRIDE pairs")
    parser.add_argument("--batch", type=int, default=16, help="windows per batch (MONAI n_batch), both variants")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per variant (default 1: on a shared machine extra threads mostly add waits; 0 = all CPUs)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each occlusion setting per variant (median)")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = [(int(m), int(s)) for m, s in (item.split(":") for item in args.settings)]
    from MedAIExtension.models.devices import cpu_threads

    threads = args.threads or cpu_threads()
    if args.child:
        print(json.dumps(_child(args.child[0], Path(args.child[1]), settings, args.batch, threads, args.repeat)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        x, where = _volume(args.size)
        np.save(work / "x.npy", x)
        print(f"volume: {args.size}³ voxels, 1 mm, phantom chest CT crop centred on a {where}", flush=True)
        runs: dict[str, dict[str, Any]] = {}
        for variant in ("medai", "monai", "gradcam"):
            command = [sys.executable, __file__, "--child", variant, str(work), "--batch", str(args.batch)]
            command += ["--threads", str(threads), "--repeat", str(args.repeat), "--settings", *args.settings]
            out = subprocess.run(command, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(out.stdout, out.stderr, file=sys.stderr)
                return 1
            runs[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"model: {runs['medai']['model']}")
        ok = True
        for mine, theirs in zip(runs["medai"]["runs"], runs["monai"]["runs"], strict=True):
            mask, stride = mine["mask"], mine["stride"]
            a = np.load(work / f"medai-{mask}-{stride}.npy")
            b = np.load(work / f"monai-{mask}-{stride}.npy")
            diff = float(np.abs(a - b).max())
            ratio = theirs["seconds"] / mine["seconds"]
            ratios = sorted(slow / fast for fast, slow in zip(mine["times"], theirs["times"], strict=True))
            ok &= ratio >= 5.0 and diff <= 1e-4
            print(
                f"occlusion mask {mask} stride {stride} ({mine['windows']} windows, {mine['skipped']} skipped, "
                f"batch {args.batch}): MedAI {mine['seconds']:.2f} s [{mine['engine']}]  "
                f"MONAI {theirs['seconds']:.2f} s  speed-up {ratio:.1f}x (target >= 5)  "
                + (
                    f"[{args.repeat} runs: MedAI {min(mine['times']):.2f}..{max(mine['times']):.2f} s, MONAI "
                    f"{min(theirs['times']):.2f}..{max(theirs['times']):.2f} s, run-by-run ratio "
                    f"{ratios[0]:.1f}..{ratios[-1]:.1f}x]  "
                    if args.repeat > 1
                    else ""
                )
                + f"max |diff| {diff:.1e} (target <= 1e-4)  "
                f"map range {float(a.min()):.4f}..{float(a.max()):.4f}, base score {mine['base_score']:.4f}",
                flush=True,
            )
            for note in mine["notes"]:
                print(f"  note: {note}")
        for run in runs["gradcam"]["runs"]:
            name = "Grad-CAM++" if run["plus_plus"] else "Grad-CAM"
            print(f"{name} ({run['layer']}): {run['seconds'] * 1000:.0f} ms per {args.size}³ volume (median of 5)")
        print("peak RSS: " + ", ".join(f"{v} {runs[v]['peak_rss_mb']:.0f} MB" for v in ("medai", "monai", "gradcam")))
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs (load {os.getloadavg()[0]:.1f}), {threads} torch threads "
        "per variant, "
        f"Python {platform.python_version()}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
