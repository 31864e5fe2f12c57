"""Benchmark: Synthetic Data Review set metrics and memorization check on 200 synthetic + 200 real 128³ CTs.

    .venv/bin/python bench/review.py [--count 200] [--size 128] [--bases 10]

Rendering 400 phantoms would dominate the run, so a few phantoms are rendered (``--bases`` real patients from
``random_phantom_spec`` seeds 0.., as many synthetic "patients" from seeds 1000..) and each set is filled with cheap
variants of them: new Gaussian noise (σ 15–35 HU), a shift of up to 3 voxels and a left-right flip for half of them.
Eight real images are replaced by variants of eight more rendered patients (seeds 100..), each seen once like a
training image, and eight synthetic images are replaced by planted near-copies of real images (a shift of up to 3
voxels, a rotation of up to 3° about a random axis, intensity scaled by up to 3 %, new noise) for the memorization
check to find. To fit a few minutes on 2 cores the set metrics use 4 slices per plane (the GUI default is 8) and 50
MS-SSIM pairs per set (default 100); both are printed. (A copy of one of the 20 noisy variants of a base patient is
also matched to that patient, but it need not be flagged: the score rewards the parent's own noise and fine texture,
and another noisy scan of the same patient scores 0.81-0.93, as high as the closest other patients.) Prints the time
of each stage, the figures, peak RSS, and the memorization pre-filter's speed-up over the exhaustive search (every
real image aligned) on a subset.
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PLANTED = 8


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="images per set")
    parser.add_argument("--size", type=int, default=128, help="voxels a side")
    parser.add_argument("--bases", type=int, default=10, help="rendered phantoms per set")
    parser.add_argument("--subset", type=int, default=4, help="synthetic images for the exhaustive comparison")
    parser.add_argument("--slices", type=int, default=4, help="slices per plane for FID/MMD")
    parser.add_argument("--pairs", type=int, default=50, help="MS-SSIM pairs per set for diversity")
    args = parser.parse_args()
    started_all = time.perf_counter()
    load_before = os.getloadavg()

    import numpy as np
    from scipy import ndimage

    from MedAIExtension.io.image import Image
    from MedAIExtension.models.devices import cpu_threads
    from MedAIExtension.phantom import generate_chest_phantom, random_phantom_spec
    from MedAIExtension.review.memorization import memorization_check
    from MedAIExtension.review.metrics import set_metrics

    size = (args.size,) * 3
    spacing = (360.0 / args.size,) * 3
    rng = np.random.default_rng(0)

    def render(seeds: range) -> list[Image]:
        return [generate_chest_phantom(random_phantom_spec(s, size_ijk=size, spacing=spacing)).ct for s in seeds]

    def variant(base: Image, name: str) -> Image:
        data = np.roll(base.array, tuple(int(v) for v in rng.integers(-3, 4, 3)), axis=(0, 1, 2)).astype(np.float32)
        if rng.random() < 0.5:
            data = data[:, :, ::-1]
        data += rng.normal(0.0, rng.uniform(15.0, 35.0), data.shape).astype(np.float32)
        return Image(np.clip(np.rint(data), -1024, 3071).astype(np.int16), base.ijk_to_ras, "CT", metadata={"id": name})

    started = time.perf_counter()
    real_bases = render(range(args.bases))
    synthetic_bases = render(range(1000, 1000 + args.bases))
    parent_bases = render(range(100, 100 + min(PLANTED, args.count)))
    render_s = time.perf_counter() - started
    started = time.perf_counter()
    real = [variant(real_bases[n % args.bases], f"real-{n}") for n in range(args.count)]
    synthetic = [variant(synthetic_bases[n % args.bases], f"synthetic-{n}") for n in range(args.count)]
    planted = {}
    for p in range(min(PLANTED, args.count)):
        position = (p * 23 + 5) % args.count
        parent = (p * 37 + 3) % args.count
        real[parent] = variant(parent_bases[p], f"real-{parent}")  # a patient seen once, like a training image
        axes = ((1, 2), (0, 1), (0, 2))[p % 3]
        angle = float(rng.uniform(2.0, 3.0) * rng.choice([-1.0, 1.0]))
        data = ndimage.rotate(
            real[parent].array.astype(np.float32), angle, axes=axes, reshape=False, order=1, cval=-1024
        )
        data = ndimage.shift(data, rng.uniform(-3.0, 3.0, 3), order=1, cval=-1024)
        data = data * rng.uniform(0.97, 1.03) + rng.uniform(-15.0, 15.0) + rng.normal(0, 20.0, data.shape)
        synthetic[position] = Image(data.astype(np.float32), real[parent].ijk_to_ras, "CT", metadata={"id": "planted"})
        planted[position] = parent
    variants_s = time.perf_counter() - started
    print(
        f"{args.count} real + {args.count} synthetic {args.size}³ CTs at {spacing[0]:.2f} mm: {args.bases} + "
        f"{args.bases} + {len(parent_bases)} rendered phantoms ({render_s:.1f} s)"
        ", the rest derived by noise/shift/flip "
        f"({variants_s:.1f} s); "
        f"{len(planted)} planted near-copies",
        flush=True,
    )

    started = time.perf_counter()
    metrics = set_metrics(real, synthetic, slices_per_plane=args.slices, diversity_pairs=args.pairs)
    metrics_s = time.perf_counter() - started
    print(
        f"set metrics: {metrics_s:.1f} s  (features of 2x{args.count} volumes at {args.slices} slices per plane, "
        f"FID, MMD, MS-SSIM over {args.pairs} pairs per set, histograms)"
    )
    print(f"  FID 2.5D {metrics.fid}")
    print(f"  MMD²     {metrics.mmd}")
    print(f"  MS-SSIM diversity synthetic {metrics.diversity_synthetic:.3f}, real {metrics.diversity_real:.3f}")
    print(f"  tissue histogram W1 (HU) {metrics.tissue_histogram_distance}", flush=True)

    started = time.perf_counter()
    refine = inspect.signature(memorization_check).parameters["refine"].default
    matches = memorization_check(synthetic, real)
    memo_s = time.perf_counter() - started
    flagged = {m.synthetic_index for m in matches if m.flagged}
    found = sum(1 for position, parent in planted.items() if position in flagged)
    correct_parent = sum(1 for position, parent in planted.items() if matches[position].real_index == parent)
    false_flags = len(flagged - set(planted))
    planted_sims = sorted(round(matches[p].similarity, 3) for p in planted)
    other_max = max((m.similarity for m in matches if m.synthetic_index not in planted), default=float("nan"))
    print(f"  similarity of planted near-copies {planted_sims}; highest other {other_max:.3f}")
    print(
        f"memorization (pre-filter: 5 candidates, {refine} registrations with zoom): {memo_s:.1f} s  "
        f"planted flagged {found}/{len(planted)}, parent patient found {correct_parent}/{len(planted)}, "
        f"other synthetic images flagged {false_flags}/{args.count - len(planted)}",
        flush=True,
    )
    # the naive way: translate-align every synthetic image with every real image
    subset = [synthetic[i] for i in sorted(planted)[: args.subset]]
    started = time.perf_counter()
    filtered = memorization_check(subset, real)
    filtered_s = time.perf_counter() - started
    started = time.perf_counter()
    exhaustive = memorization_check(subset, real, candidates=0)
    exhaustive_s = time.perf_counter() - started
    same = sum(a.real_index == b.real_index for a, b in zip(filtered, exhaustive))
    print(
        f"memorization on {len(subset)} synthetic vs {args.count} real: pre-filter {filtered_s:.1f} s, exhaustive "
        f"{exhaustive_s:.1f} s, speed-up {exhaustive_s / filtered_s:.1f}x, same nearest real image {same}/{len(subset)}"
    )
    print(
        f"total {time.perf_counter() - started_all:.1f} s; machine: {platform.processor() or platform.machine()}, "
        f"{cpu_threads()} threads, Python {platform.python_version()}; peak RSS {_peak_rss_mb() / 1024:.2f} GB; "
        f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (1 min)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
