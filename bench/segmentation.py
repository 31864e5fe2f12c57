"""Benchmark: MedAI's engine vs MONAI's sliding_window_inference in torch, same network, same ROI, one run.

    .venv/bin/python bench/segmentation.py [--size 512 512 300] [--device cpu] [--repeat 2]

A 512×512×300 phantom CT is segmented by three variants, each run in its own child process (so peak RSS is its
own), all with the same weights:

* baseline    — the plain MONAI way: the network as MONAI builds it (from the model's MONAI bundle, default
                memory layout), the whole volume resampled to the model grid, MONAI ``sliding_window_inference``
                (same ROI, overlap, batch, blending), every class channel resampled back linearly, arg-max, the
                same post-processing;
* engine      — ``run_inference`` as ``medai segment --model chest-ct-lung-nodule`` runs it on this device (on
                the CPU the catalogue's ``cpu_variant``: the same weights in torch, batch norms folded,
                channels-last): body crop before resampling, batched windows, scores mapped back only near
                label boundaries;
* engine-onnx — the same engine forced onto the ONNX entry (ONNX Runtime, full graph optimisation).

The engine children set up their process as ``medai`` does (``keep_freed_memory``: glibc keeps freed memory
for reuse instead of faulting it in again); ``--tuned-baseline`` gives the baseline the same setting, to see how
much of the speed-up that setting is.

The variants run in turn ``--repeat`` times and each keeps its best time (the machine's speed drifts by tens of
per cent within minutes; the best of interleaved runs compares like with like). Prints each engine's time ratio
against the baseline (target ≥ 2.0), Dice between its label map and the baseline's per label (target ≥ 0.999)
and its peak RSS (target ≤ 3 GB).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = "chest-ct-lung-nodule"
ENGINES = ("engine", "engine-onnx")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _baseline(image: Any, entry: Any, device: str) -> tuple[Any, float, str, int, tuple[int, ...]]:
    """The plain MONAI way: resample the whole volume, torch network in sliding_window_inference, every class
    channel resampled back with linear interpolation, arg-max, the same post-processing."""
    import torch
    from monai.inferers import sliding_window_inference

    from MedAIExtension.models.backends import load_bundle_module
    from MedAIExtension.models.catalog import load_catalog
    from MedAIExtension.models.devices import cpu_threads
    from MedAIExtension.models.inference import count_windows, postprocess_labelmap
    from MedAIExtension.models.preprocessing import model_grid, normalize_intensity, resample_to_grid
    from MedAIExtension.models.resample_scores import scores_to_labels_reference

    bundle_dir = entry.model_file.parent / f"{MODEL}-bundle"
    # the network as MONAI builds it (default memory layout), not MedAI's backend
    network = load_bundle_module(load_catalog(models_dirs=[bundle_dir]).get(f"{MODEL}-monai-bundle"))
    network = network.to(torch.device(device)).eval()
    if device == "cpu":
        torch.set_num_threads(cpu_threads())
    spec = entry.input
    started = time.perf_counter()
    grid = model_grid(image, spec.spacing, spec.orientation)
    model_image = resample_to_grid(image, *grid)
    data = torch.from_numpy(normalize_intensity(model_image.array, spec.normalization))[None, None]
    with torch.inference_mode():
        scores = sliding_window_inference(
            data,
            roi_size=spec.patch_size,
            sw_batch_size=entry.inference.batch_size,
            predictor=network,
            overlap=entry.inference.overlap,
            mode=entry.inference.mode,
        )[0].numpy()
    labels = scores_to_labels_reference(scores, model_image.ijk_to_ras, image)
    postprocess_labelmap(labels, entry, image.voxel_volume_mm3)
    windows = count_windows(model_image.shape, tuple(spec.patch_size), entry.inference.overlap)
    return labels, time.perf_counter() - started, f"torch:{device}", windows, model_image.shape


def _child(variant: str, volume: Path, output: Path, device: str, tuned_baseline: bool) -> None:
    if variant in ENGINES or tuned_baseline:
        from MedAIExtension.allocator import keep_freed_memory

        keep_freed_memory()  # as the medai program and the Slicer worker do at start
    import monai.inferers  # noqa: F401 - import time is not inference time, for either variant

    from MedAIExtension.io.volume_files import read_volume_file, write_volume_file
    from MedAIExtension.models.backends import load_backend
    from MedAIExtension.models.catalog import load_catalog
    from MedAIExtension.models.inference import run_inference
    from MedAIExtension.models.variants import runtime_entry

    image = read_volume_file(volume, modality="CT")
    catalog = load_catalog(include_user_models=False)
    entry = catalog.get(MODEL)
    if variant in ENGINES:
        runs_as = runtime_entry(entry, device, catalog) if variant == "engine" else entry
        backend = load_backend(runs_as, device)
        started = time.perf_counter()
        result = run_inference(image, entry, backend)
        seconds = time.perf_counter() - started
        labels, provider, windows, grid = (
            result.labelmap.array,
            backend.provider,
            result.windows,
            result.model_grid_shape,
        )
    else:
        labels, seconds, provider, windows, grid = _baseline(image, entry, device)
    write_volume_file(image.with_array(labels), output)
    report = {
        "variant": variant,
        "seconds": seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "provider": provider,
        "windows": windows,
        "model_grid": list(grid),
    }
    print(json.dumps(report))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 300])
    parser.add_argument("--spacing", type=float, nargs=3, default=[0.7, 0.7, 1.25])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=2, help="runs per variant, interleaved; the best counts")
    parser.add_argument("--tuned-baseline", action="store_true", help="the baseline keeps freed memory too")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "VOLUME", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]), Path(args.child[2]), args.device, args.tuned_baseline)
        return 0

    import numpy as np

    from MedAIExtension.io.volume_files import read_volume_file, write_volume_file
    from MedAIExtension.metrics import dice
    from MedAIExtension.models.devices import cpu_threads
    from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"generating a {args.size[0]}×{args.size[1]}×{args.size[2]} phantom …", flush=True)
        phantom = generate_chest_phantom(PhantomSpec(size_ijk=tuple(args.size), spacing=tuple(args.spacing), seed=11))
        write_volume_file(phantom.ct, work / "ct.nrrd", compress=False)
        del phantom
        runs: dict[str, dict[str, Any]] = {}
        for round_ in range(max(args.repeat, 1)):
            for variant in ("baseline", *ENGINES):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--device",
                        args.device,
                        *(["--tuned-baseline"] if args.tuned_baseline else []),
                        "--child",
                        variant,
                        str(work / "ct.nrrd"),
                        str(work / f"{variant}.nii.gz"),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode != 0:
                    print(out.stdout, out.stderr, file=sys.stderr)
                    return 1
                run = json.loads(out.stdout.strip().splitlines()[-1])
                print(
                    f"  run {round_ + 1}  {variant:<12} {run['seconds']:7.1f} s  peak RSS {run['peak_rss_mb']:7.0f} MB"
                    f"  {run['provider']}  {run['windows']} windows on {run['model_grid']}",
                    flush=True,
                )
                best = runs.setdefault(variant, run)
                best["seconds"] = min(best["seconds"], run["seconds"])
                best["peak_rss_mb"] = max(best["peak_rss_mb"], run["peak_rss_mb"])
        labels = {variant: read_volume_file(work / f"{variant}.nii.gz").array for variant in runs}
    print(
        f"machine: {platform.processor() or platform.machine()}, {cpu_threads()} threads, "
        f"Python {platform.python_version()}"
    )
    reference = labels.pop("baseline")
    for variant, result in labels.items():
        dices = {value: dice(reference == value, result == value) for value in (1, 2)}
        ratio = runs["baseline"]["seconds"] / runs[variant]["seconds"]
        print(f"{variant} ({runs[variant]['provider']}), best of {max(args.repeat, 1)}:")
        print(
            f"  speed-up (baseline / engine): {ratio:.2f}x   (target >= 2.0; best times: baseline "
            f"{runs['baseline']['seconds']:.1f} s, engine {runs[variant]['seconds']:.1f} s)"
        )
        print(f"  Dice engine vs baseline: lung {dices[1]:.5f}, nodule {dices[2]:.5f}   (target >= 0.999)")
        print(f"  peak RSS engine: {runs[variant]['peak_rss_mb'] / 1024:.2f} GB   (target <= 3 GB)")
        print(f"  voxels differing: {int(np.count_nonzero(reference != result))} of {reference.size}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
