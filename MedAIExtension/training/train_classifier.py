"""Train the shipped nodule-vs-vessel patch classifier on phantom patches (CPU, a few minutes), export, catalogue.

    python -m MedAIExtension.training.train_classifier [--iterations 1200] [--catalog Resources/Models/catalog.json]

Trains :func:`~MedAIExtension.training.classifier_network.build_classifier` on 32³ patches of 1 mm
(:mod:`MedAIExtension.phantom.patches`: nodules of every kind and size vs pulmonary vessels), measures its
accuracy on patches of held-out phantoms, and writes ``chest-ct-nodule-classifier.ts`` (TorchScript) and
``chest-ct-nodule-classifier.onnx`` (ONNX, dynamic batch and spatial size) with their catalogue entries
(sha256, accuracy, counts, seeds, seconds).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from MedAIExtension.atomic import atomic_path
from MedAIExtension.models.backends import load_backend
from MedAIExtension.models.catalog import DEFAULT_CATALOG, load_catalog
from MedAIExtension.models.preprocessing import normalize_intensity
from MedAIExtension.phantom.patches import (
    CLASS_NODULE,
    CLASS_VESSEL,
    PATCH_SIZE,
    PATCH_SPACING,
    LabelledPatch,
    nodule_vessel_patches,
)
from MedAIExtension.training.classifier_network import CLASSIFIER_TARGET_LAYER, build_classifier
from MedAIExtension.training.export import export_onnx, update_catalog
from MedAIExtension.training.train import NORMALIZATION  # same CT window as the segmentation model

if TYPE_CHECKING:
    import torch

__all__ = [
    "HELDOUT_SETS",
    "MODEL_NAME",
    "NORMALIZATION",
    "ONNX_MODEL_NAME",
    "TRAIN_SETS",
    "augment",
    "evaluate",
    "export_torchscript",
    "main",
    "model_entry",
    "patch_batch",
    "predict_logits",
    "train",
]

MODEL_NAME = "chest-ct-nodule-classifier"
ONNX_MODEL_NAME = f"{MODEL_NAME}-onnx"
#: Training patches: (seed, count, rendering spacing of the phantoms) per call of ``nodule_vessel_patches``.
TRAIN_SETS: tuple[tuple[int, int, tuple[float, float, float]], ...] = (
    (1, 360, (1.25, 1.25, 1.25)),
    (2, 300, (1.0, 1.0, 1.5)),
    (3, 300, (1.5, 1.5, 1.5)),
)
#: Held-out patches (other phantom seeds), one nodule patch per nodule.
HELDOUT_SETS: tuple[tuple[int, int, tuple[float, float, float]], ...] = (
    (9001, 80, (1.25, 1.25, 1.25)),
    (9002, 40, (1.0, 1.0, 1.5)),
)
_TRAIN_PATCHES_PER_NODULE = 3
_CLASS_VALUES = (CLASS_NODULE, CLASS_VESSEL)  # channel c scores label _CLASS_VALUES[c]


def model_entry(backend: str, version: str = "1.0.0") -> dict[str, Any]:
    """The catalogue entry (without sha256 and training figures) of the TorchScript or ONNX export."""
    onnx = backend == "onnx"
    return {
        "name": ONNX_MODEL_NAME if onnx else MODEL_NAME,
        "title": f"Chest CT patch: nodule vs vessel ({'ONNX' if onnx else 'TorchScript'}; trained on MedAI phantoms)",
        "version": version,
        "task": "classification",
        "backend": backend,
        "description": (
            "Small 3D CNN that tells a lung nodule (solid, part-solid or ground-glass, 4-20 mm) from a pulmonary "
            "vessel at the centre of a 32 mm patch; trained on MedAI's synthetic chest CT phantoms with "
            "MedAIExtension.training.train_classifier, to run the explanation methods offline. Research/demo "
            "use only; not validated on patient data."
        ),
        "files": [{"path": f"{MODEL_NAME}.{'onnx' if onnx else 'ts'}", "role": "model"}],
        "input": {
            "modality": "CT",
            "spacing": list(PATCH_SPACING),
            "orientation": "LPS",
            "axis_order": "kji",
            "normalization": dict(NORMALIZATION),
            "patch_size": list(PATCH_SIZE),
            "channels": 1,
        },
        "labels": [
            {
                "value": CLASS_NODULE,
                "name": "Nodule",
                "color": [0.95, 0.55, 0.15],
                "category": {"value": "49755003", "scheme": "SCT", "meaning": "Morphologically Altered Structure"},
                "type": {"value": "27925004", "scheme": "SCT", "meaning": "Nodule"},
            },
            {
                "value": CLASS_VESSEL,
                "name": "Vessel",
                "color": [0.80, 0.15, 0.20],
                "category": {"value": "91723000", "scheme": "SCT", "meaning": "Anatomical Structure"},
                "type": {"value": "59820001", "scheme": "SCT", "meaning": "Blood vessel"},
            },
        ],
        "explain": {"target_layer": CLASSIFIER_TARGET_LAYER, "target_label": CLASS_NODULE},
    }


def patch_batch(patches: Sequence[LabelledPatch]) -> tuple[np.ndarray, np.ndarray]:
    """Network input ``(N, 1, K, J, I)`` (normalised float32) and class channels ``(N,)`` (0 Nodule, 1 Vessel)."""
    x = np.stack([normalize_intensity(p.ct.array, NORMALIZATION) for p in patches])[:, None]
    y = np.array([_CLASS_VALUES.index(p.label) for p in patches], dtype=np.int64)
    return np.ascontiguousarray(x, dtype=np.float32), y


def _patch_sets(
    sets: Sequence[tuple[int, int, tuple[float, float, float]]], per_nodule: int, log: Callable[[str], None]
) -> list[LabelledPatch]:
    out: list[LabelledPatch] = []
    for seed, count, spacing in sets:
        started = time.perf_counter()
        part = nodule_vessel_patches(seed, count, spacing=spacing, patches_per_nodule=per_nodule)
        log(
            f"  seed {seed}: {len(part)} patches from {len({p.phantom_seed for p in part})} phantoms rendered at "
            f"{spacing} mm ({time.perf_counter() - started:.0f} s)"
        )
        out.extend(part)
    return out


def augment(
    x: torch.Tensor, rng: np.random.Generator, crop: int | None = None, noise: float = 0.02, shift: float = 0.02
) -> torch.Tensor:
    """Random flips of each axis, a random 90° rotation, a small intensity shift and noise, per sample.

    Args:
        x: a float tensor ``(N, 1, D, D, D)`` (cubic patches), normalised.
        rng: random generator.
        crop: cut a cube of this size from each sample, centred up to 3 voxels off the patch centre (where the
            object that decides the class lies); None keeps the whole patch.
        noise: largest standard deviation of the added Gaussian noise (normalised units; 0.02 ≈ 28 HU).
        shift: largest intensity shift (normalised units).

    Returns:
        The augmented tensor (a new tensor).
    """
    import torch

    out = []
    planes = ((1, 2), (1, 3), (2, 3))  # spatial axes of one sample (1, D, D, D)
    size = int(x.shape[-1])
    for sample in x:
        if crop is not None and crop < size:
            middle = (size - crop) // 2
            k, j, i = (min(max(middle + int(v), 0), size - crop) for v in rng.integers(-3, 4, size=3))
            sample = sample[:, k : k + crop, j : j + crop, i : i + crop]
        flips = [axis for axis in (1, 2, 3) if rng.random() < 0.5]
        if flips:
            sample = torch.flip(sample, flips)
        turns = int(rng.integers(4))
        if turns:
            sample = torch.rot90(sample, turns, planes[int(rng.integers(3))])
        out.append(sample)
    batch = torch.stack(out)
    n = batch.shape[0]
    sigma = torch.from_numpy(rng.uniform(0.0, noise, size=(n, 1, 1, 1, 1)).astype(np.float32))
    offset = torch.from_numpy(rng.uniform(-shift, shift, size=(n, 1, 1, 1, 1)).astype(np.float32))
    generator = torch.Generator().manual_seed(int(rng.integers(2**31 - 1)))
    return batch + offset + sigma * torch.randn(batch.shape, generator=generator)


def train(
    x: np.ndarray,
    y: np.ndarray,
    iterations: int = 1200,
    batch_size: int = 16,
    crops: Sequence[tuple[int, float]] = ((16, 0.5), (24, 0.3), (32, 0.2)),
    learning_rate: float = 4e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> torch.nn.Module:
    """Train a fresh :func:`build_classifier` on ``(x, y)`` with augmentation; returns it in eval mode.

    The network is fully convolutional with global average pooling, so training grows the input: the first
    steps see small cubes cut around the patch centre (an eighth of the work of a whole patch), the last ones
    whole patches, the size the model is run on.

    Args:
        x: patches ``(N, 1, D, D, D)``, normalised.
        y: class channels ``(N,)``.
        iterations: optimiser steps.
        batch_size: patches per step.
        crops: ``(cube size, fraction of the steps)`` in order; sizes above D mean the whole patch.
        learning_rate: peak learning rate (one-cycle schedule, AdamW).
        seed: seed of the weights, batches and augmentation.
        log: receives progress lines.
    """
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    network = build_classifier()
    optimizer = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=max(iterations, 1), pct_start=0.15
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    data, targets = torch.from_numpy(x), torch.from_numpy(y)
    network.train()
    started = time.perf_counter()
    running, correct = 0.0, 0.0
    order = rng.permutation(len(x))
    cursor = 0
    ends = np.cumsum([fraction for _, fraction in crops]) / sum(fraction for _, fraction in crops) * iterations
    for step in range(1, iterations + 1):
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(x)), 0
        index = torch.from_numpy(order[cursor : cursor + batch_size])
        cursor += batch_size
        crop = crops[min(int(np.searchsorted(ends, step - 0.5)), len(crops) - 1)][0]
        batch = augment(data[index], rng, crop=crop)
        optimizer.zero_grad(set_to_none=True)
        logits = network(batch)
        loss = loss_fn(logits, targets[index])
        loss.backward()
        optimizer.step()
        scheduler.step()
        accuracy = float((logits.argmax(1) == targets[index]).float().mean())
        running = loss.item() if step == 1 else 0.95 * running + 0.05 * loss.item()
        correct = accuracy if step == 1 else 0.95 * correct + 0.05 * accuracy
        if step % 50 == 0 or step == iterations:
            log(
                f"  step {step}/{iterations}  loss {running:.4f}  batch accuracy {correct:.3f}  "
                f"({time.perf_counter() - started:.0f} s)"
            )
    return network.eval()


def predict_logits(model: torch.nn.Module, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits ``(N, 2)`` of a torch module (eval mode, no gradients) for a float32 batch."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            out.append(model(torch.from_numpy(x[start : start + batch_size])).float().numpy())
    return np.concatenate(out)


def evaluate(logits: np.ndarray, y: np.ndarray, patches: Sequence[LabelledPatch]) -> dict[str, Any]:
    """Accuracy overall, per class and per nodule kind."""
    hit = logits.argmax(axis=1) == y
    by_kind = {}
    for kind in sorted({p.kind for p in patches}):
        chosen = np.array([p.kind == kind for p in patches])
        by_kind[kind] = {"count": int(chosen.sum()), "accuracy": round(float(hit[chosen].mean()), 4)}
    return {
        "accuracy": round(float(hit.mean()), 4),
        "count": len(y),
        "accuracy_nodule": round(float(hit[y == 0].mean()), 4),
        "accuracy_vessel": round(float(hit[y == 1].mean()), 4),
        "by_kind": by_kind,
    }


def export_torchscript(network: torch.nn.Module, path: Path) -> Path:
    """Script ``network`` (eval mode) with ``torch.jit.script`` and save it atomically."""
    import torch

    scripted = torch.jit.script(network.eval().cpu())
    with atomic_path(path) as tmp:
        torch.jit.save(scripted, str(tmp))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Generate patches, train, evaluate on held-out phantoms, export TorchScript + ONNX and catalogue both."""
    import torch

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    started = time.perf_counter()
    print("generating training patches")
    train_patches = _patch_sets(TRAIN_SETS, _TRAIN_PATCHES_PER_NODULE, print)
    print("generating held-out patches")
    heldout_patches = _patch_sets(HELDOUT_SETS, 1, print)
    data_seconds = time.perf_counter() - started
    x, y = patch_batch(train_patches)
    hx, hy = patch_batch(heldout_patches)
    print(f"training on {len(x)} patches ({int((y == 0).sum())} nodule, {int((y == 1).sum())} vessel)")
    train_started = time.perf_counter()
    network = train(x, y, args.iterations, args.batch_size)
    train_seconds = time.perf_counter() - train_started
    metrics = evaluate(predict_logits(network, hx), hy, heldout_patches)
    train_metrics = evaluate(predict_logits(network, x), y, train_patches)
    print(f"held-out accuracy {metrics['accuracy']:.4f} on {metrics['count']} patches: {json.dumps(metrics)}")

    model_dir = args.catalog.parent
    ts_entry, onnx_entry = model_entry("torchscript"), model_entry("onnx")
    training = {
        "script": "python -m MedAIExtension.training.train_classifier",
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "train_patches": len(x),
        "train_seeds": [s for s, _, _ in TRAIN_SETS],
        "train_accuracy": train_metrics["accuracy"],
        "heldout_seeds": [s for s, _, _ in HELDOUT_SETS],
        "heldout": metrics,
        "seconds": round(time.perf_counter() - started, 1),
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(train_seconds, 1),
    }
    ts_entry["training"] = onnx_entry["training"] = training
    export_torchscript(network, model_dir / ts_entry["files"][0]["path"])
    export_onnx(
        network, model_dir / onnx_entry["files"][0]["path"], PATCH_SIZE, onnx_entry, size_multiple=4, max_batch=1024
    )
    update_catalog(args.catalog, ts_entry, model_dir)
    update_catalog(args.catalog, onnx_entry, model_dir)

    catalog = load_catalog(args.catalog, include_user_models=False)
    reference = predict_logits(network, hx)
    for name in (MODEL_NAME, ONNX_MODEL_NAME):
        backend = load_backend(catalog.get(name), "cpu")
        logits = np.concatenate([backend.predict(hx[i : i + 32]) for i in range(0, len(hx), 32)])
        difference = float(np.abs(logits - reference).max())
        print(f"{name}: {backend.provider}, largest logit difference to the trained network {difference:.2e}")
        if difference > 1e-4:
            raise SystemExit(f"{name} does not reproduce the trained network (difference {difference:.2e}).")
    print(f"done in {time.perf_counter() - started:.0f} s; catalogue {args.catalog}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
