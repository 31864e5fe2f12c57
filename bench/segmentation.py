"""Benchmark: MedAI's engine vs MONAI's sliding_window_inference in torch, same network, same ROI, one run.

    .venv/bin/python bench/segmentation.py [--size 512 512 300] [--device cpu]

A 512×512×300 phantom CT is segmented three times, each variant in its own child process (so peak RSS is its
own), all with the same weights:

* baseline     — the plain MONAI way: the network as a torch module (from the model's MONAI bundle), the whole
                 volume resampled to the model grid, MONAI ``sliding_window_inference`` (same ROI, overlap,
                 batch, blending), every class channel resampled back linearly, arg-max, same post-processing;
* engine-torch — ``run_inference`` with the catalogue's MONAI-bundle entry of the model (torch, channels-last
                 layout on the CPU): body crop before resampling, batched windows, scores mapped back only near
                 label boundaries;
* engine-onnx  — the same engine with the catalogue's ONNX entry on ONNX Runtime (full graph optimisation).

Prints each engine's time ratio against the baseline (target ≥ 2.0), Dice between its label map and the
baseline's per label (target ≥ 0.999) and its peak RSS (target ≤ 3 GB).
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
ENGINES = {"engine-torch": f"{MODEL}-torch", "engine-onnx": MODEL}


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


def _child(variant: str, volume: Path, output: Path, device: str) -> None:
    import monai.inferers  # noqa: F401 - import time is not inference time, for either variant

    from MedAIExtension.io.volume_files import read_volume_file, write_volume_file
    from MedAIExtension.models.backends import load_backend
    from MedAIExtension.models.catalog import load_catalog
    from MedAIExtension.models.inference import run_inference

    image = read_volume_file(volume, modality="CT")
    catalog = load_catalog(include_user_models=False)
    entry = catalog.get(MODEL)
    if variant in ENGINES:
        entry = catalog.get(ENGINES[variant])
        backend = load_backend(entry, device)
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
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "VOLUME", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]), Path(args.child[2]), args.device)
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
        runs = {}
        for variant in ("baseline", *ENGINES):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--device",
                    args.device,
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
            runs[variant] = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"  {variant:<12} {runs[variant]['seconds']:7.1f} s  peak RSS {runs[variant]['peak_rss_mb']:7.0f} MB  "
                f"{runs[variant]['provider']}  {runs[variant]['windows']} windows on {runs[variant]['model_grid']}",
                flush=True,
            )
        labels = {variant: read_volume_file(work / f"{variant}.nii.gz").array for variant in runs}
    print(
        f"machine: {platform.processor() or platform.machine()}, {cpu_threads()} threads, "
        f"Python {platform.python_version()}"
    )
    reference = labels.pop("baseline")
    for variant, result in labels.items():
        dices = {value: dice(reference == value, result == value) for value in (1, 2)}
        ratio = runs["baseline"]["seconds"] / runs[variant]["seconds"]
        print(f"{variant}:")
        print(f"  speed-up (baseline / engine): {ratio:.2f}x   (target >= 2.0)")
        print(f"  Dice engine vs baseline: lung {dices[1]:.5f}, nodule {dices[2]:.5f}   (target >= 0.999)")
        print(f"  peak RSS engine: {runs[variant]['peak_rss_mb'] / 1024:.2f} GB   (target <= 3 GB)")
        print(f"  voxels differing: {int(np.count_nonzero(reference != result))} of {reference.size}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
