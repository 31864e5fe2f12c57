r"""Train the shipped lung + nodule model on generated phantoms (CPU, ~20 min per run), export and catalogue it.

    python -m MedAIExtension.training.train --iterations 1800 --train-cases 24 [--catalog CATALOG]
    python -m MedAIExtension.training.train --init Resources/Models/chest-ct-lung-nodule-bundle/models/model.pt \
        --iterations 1500 --train-cases 32 --case-seed 3000 --lr 1e-3 --nodule-weight 3 --nodule-share 0.45 \
        --version 1.1.0

The second form fine-tunes existing weights (loaded with ``weights_only=True``) on new phantoms; the catalogue
entry records every argument, so the shipped weights can be rebuilt from a clean clone.

Writes ``chest-ct-lung-nodule.onnx`` (ONNX, default exporter), a MONAI bundle ``chest-ct-lung-nodule-bundle/``
(the same weights, used to run the network in torch), and the catalogue entry with sha256 and the Dice measured
on held-out phantoms.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from MedAIExtension.batch.drift import input_statistics, training_distribution
from MedAIExtension.io.image import Image
from MedAIExtension.metrics import dice
from MedAIExtension.models.backends import load_backend
from MedAIExtension.models.catalog import DEFAULT_CATALOG, ModelEntry
from MedAIExtension.models.devices import cpu_threads
from MedAIExtension.models.preprocessing import (
    crop_image,
    foreground_bounding_box,
    model_grid,
    normalize_intensity,
    resample_to_grid,
)
from MedAIExtension.phantom import LABEL_LUNG, Phantom, generate_chest_phantom, random_phantom_spec
from MedAIExtension.phantom.spec import PhantomSpec, _rows, _triple
from MedAIExtension.segmentation.froc import ScanDetections, froc, lesions_from_instances
from MedAIExtension.training.case_specs import V2Lesions, case_specs, random_native_grid
from MedAIExtension.training.export import export_onnx, update_catalog, write_monai_bundle
from MedAIExtension.training.heldout_v2 import detection_figures, lesion_candidates, segment_with_probability
from MedAIExtension.training.network import NETWORK_ARGS, build_network

if TYPE_CHECKING:
    import torch

__all__ = [
    "MODEL_NAME",
    "TrainingCase",
    "bundle_entry",
    "case_input_statistics",
    "case_specs",
    "fit",
    "loss_function",
    "main",
    "model_entry",
    "prepare_case",
    "to_model_grid",
    "train",
]

MODEL_NAME = "chest-ct-lung-nodule"
SPACING = (1.25, 1.25, 1.25)
PATCH = (96, 96, 96)
TRAIN_PATCH = (64, 64, 64)
NORMALIZATION = {"type": "clip_scale", "a_min": -1000.0, "a_max": 400.0, "b_min": 0.0, "b_max": 1.0, "clip": True}
BODY_THRESHOLD_HU = -500.0


def model_entry(version: str = "1.0.0") -> dict[str, Any]:
    """The catalogue entry (without sha256 and metrics) of the shipped model."""
    return {
        "name": MODEL_NAME,
        "title": "Chest CT: lungs and lung lesions, nodules and masses (trained on MedAI phantoms)",
        "version": version,
        "task": "segmentation",
        "backend": "onnx",
        "description": (
            "Small 3D U-Net (MONAI) trained on MedAI's synthetic chest CT phantoms with "
            "MedAIExtension.training.train. Research/demo use only; not validated on patient data."
        ),
        "cpu_variant": f"{MODEL_NAME}-torch",  # torch runs this network faster than ONNX Runtime on the CPU
        "files": [{"path": f"{MODEL_NAME}.onnx", "role": "model"}],
        "input": {
            "modality": "CT",
            "spacing": list(SPACING),
            "orientation": "LPS",
            "axis_order": "kji",
            "normalization": NORMALIZATION,
            "patch_size": list(PATCH),
            "channels": 1,
            "crop_foreground_above": BODY_THRESHOLD_HU,
        },
        "inference": {"overlap": 0.25, "batch_size": 2, "mode": "gaussian"},
        "postprocessing": {"keep_largest_component": [{"label": 1, "components": 2}], "min_component_mm3": 10.0},
        "labels": [
            {
                "value": 1,
                "name": "Lung",
                "color": [0.50, 0.68, 0.82],
                "category": {"value": "123037004", "scheme": "SCT", "meaning": "Anatomical Structure"},
                "type": {"value": "39607008", "scheme": "SCT", "meaning": "Lung"},
            },
            {
                "value": 2,
                "name": "Lung lesion",  # nodules and masses (issue 17); 1.x called it "Lung nodule"
                "color": [0.95, 0.35, 0.20],
                "category": {"value": "49755003", "scheme": "SCT", "meaning": "Morphologically Altered Structure"},
                "type": {"value": "52988006", "scheme": "SCT", "meaning": "Lesion"},
            },
        ],
    }


def to_model_grid(
    ct: Image,
    spacing: tuple[float, float, float] | None = SPACING,
    orientation: str = "LPS",
    crop_above: float | None = BODY_THRESHOLD_HU,
) -> Image:
    """The CT as the inference code feeds it to the network, before normalisation: cropped to the voxels above
    ``crop_above`` HU (the body; None: no crop) and resampled (linear) to the model grid of ``spacing`` and
    ``orientation``."""
    if crop_above is not None:
        box = foreground_bounding_box(ct, crop_above)
        if box is not None:
            ct = crop_image(ct, box)
    grid = model_grid(ct, spacing, orientation)
    return ct if grid is None else resample_to_grid(ct, *grid)


def prepare_case(spec: PhantomSpec, ct: Image | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The network's view of a phantom and its exact labels on the model grid.

    The CT is generated on its native grid (or given: ``generate_chest_phantom(spec).ct``) and goes through the
    inference code (body crop, resampling to the model grid, normalisation); the labels are generated *directly on
    the model grid* from the same analytic anatomy, so small nodules get exact voxel-centre targets rather than
    nearest-neighbour copies.
    """
    if ct is None:
        ct = generate_chest_phantom(spec).ct
    ct = to_model_grid(ct)
    affine, (nk, nj, ni) = ct.ijk_to_ras, ct.shape
    centre = affine[:3, :3] @ ((np.array([ni, nj, nk]) - 1.0) / 2.0) + affine[:3, 3]
    label_spec = replace(
        spec,
        size_ijk=(ni, nj, nk),
        spacing=SPACING,
        direction_ras=_rows(affine[:3, :3] / SPACING[0]),
        center_ras=_triple(centre, "center_ras"),
        noise_hu=0.0,
    )
    labels = generate_chest_phantom(label_spec).labels
    assert np.allclose(labels.ijk_to_ras, affine, atol=1e-4), "label grid must be the model grid"
    return normalize_intensity(ct.array, NORMALIZATION), labels.array.astype(np.uint8)


def case_input_statistics(phantom: Phantom) -> dict[str, Any]:
    """A training phantom's input statistics for drift checks (its native CT, lungs from its exact labels)."""
    return input_statistics(phantom.ct, phantom.labels.array == LABEL_LUNG)


def _make_cases(
    seeds: Sequence[int],
    log: Callable[[str], None],
    diameter_range_mm: tuple[float, float] = (4.0, 20.0),
    v2_share: float = 0.0,
    input_stats: list[dict[str, Any]] | None = None,
    v2_lesions: V2Lesions | None = None,
) -> list[TrainingCase]:
    cases = []
    for seed, spec in zip(seeds, case_specs(seeds, diameter_range_mm, v2_share, v2_lesions), strict=True):
        size, spacing = spec.size_ijk, spec.spacing
        phantom = generate_chest_phantom(spec)
        if input_stats is not None:
            input_stats.append(case_input_statistics(phantom))
        cases.append(TrainingCase.from_arrays(*prepare_case(spec, phantom.ct), np.random.default_rng(seed)))
        del phantom
        log(
            f"  case seed {seed}: native {size} @ {tuple(round(s, 2) for s in spacing)} "
            f"-> model grid {cases[-1].image.shape}, {len(cases[-1].nodules)} nodule(s)"
        )
    return cases


@dataclass(frozen=True)
class TrainingCase:
    """One prepared phantom: network input, labels, and where its nodules and lungs are (for patch sampling)."""

    image: np.ndarray
    label: np.ndarray
    nodules: tuple[np.ndarray, ...]  # flat voxel indices of each nodule (connected component of label 2)
    lung_sample: np.ndarray  # flat indices of a random subset of lung voxels

    @classmethod
    def from_arrays(cls, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> TrainingCase:
        """Index the nodules and a sample of lung voxels."""
        from scipy import ndimage

        components, count = ndimage.label(label == 2)
        flat = components.ravel()
        order = np.argsort(flat, kind="stable")
        bounds = np.searchsorted(flat[order], np.arange(1, count + 2))
        nodules = tuple(order[bounds[i] : bounds[i + 1]] for i in range(count))
        lung = np.flatnonzero(label == 1)
        lung_sample = rng.choice(lung, size=min(20000, lung.size), replace=False) if lung.size else lung
        return cls(image, label, nodules, lung_sample)


def _sample_patch(
    case: TrainingCase, rng: np.random.Generator, patch: tuple[int, int, int], nodule_share: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """A training patch: ``nodule_share`` (default 30 %) centred on a nodule chosen uniformly (small ones count as
    much as big ones), 20 % on a nodule voxel (big ones count more), 20 % on lung, the rest anywhere."""
    image, label = case.image, case.label
    draw = rng.random()
    flat_index = None
    if draw < nodule_share + 0.2 and case.nodules:
        if draw < nodule_share:
            voxels = case.nodules[int(rng.integers(len(case.nodules)))]
        else:
            sizes = np.array([n.size for n in case.nodules], dtype=float)
            voxels = case.nodules[int(rng.choice(len(case.nodules), p=sizes / sizes.sum()))]
        flat_index = int(voxels[int(rng.integers(voxels.size))])
    elif draw < nodule_share + 0.4 and case.lung_sample.size:
        flat_index = int(case.lung_sample[int(rng.integers(case.lung_sample.size))])
    if flat_index is not None:
        centre = np.array(np.unravel_index(flat_index, label.shape))
    else:
        centre = np.array([rng.integers(0, s) for s in label.shape])
    pads = [(0, 0)] * 3
    starts = []
    for axis, size in enumerate(patch):
        start = int(centre[axis]) - size // 2 + int(rng.integers(-size // 4, size // 4 + 1))
        start = min(max(start, 0), max(label.shape[axis] - size, 0))
        starts.append(start)
        if label.shape[axis] < size:
            pads[axis] = (0, size - label.shape[axis])
    box = tuple(slice(s, s + n) for s, n in zip(starts, patch))
    img, lab = image[box], label[box]
    if any(p != (0, 0) for p in pads):
        img = np.pad(img, pads, constant_values=0.0)
        lab = np.pad(lab, pads, constant_values=0)
    return img, lab


def train(
    iterations: int = 1500,
    n_train: int = 20,
    batch_size: int = 4,
    seed: int = 0,
    log: Callable[[str], None] = print,
    *,
    init_weights: Path | None = None,
    lr: float = 3e-3,
    case_seed: int = 1000,
    max_diameter_mm: float = 20.0,
    nodule_weight: float = 2.0,
    nodule_share: float = 0.3,
    v2_share: float = 0.0,
    input_stats: list[dict[str, Any]] | None = None,
    v2_lesions: V2Lesions | None = None,
    flip: bool = False,
) -> torch.nn.Module:
    """Train the network on ``n_train`` random phantoms; returns the trained network (eval mode).

    Args:
        iterations: optimiser steps (batches of ``batch_size`` 64³ patches).
        n_train: number of training phantoms (seeds ``case_seed`` … ``case_seed + n_train - 1``).
        batch_size: patches per step.
        seed: seed of the patch sampling and the weight initialisation.
        log: where progress lines go.
        init_weights: a ``state_dict`` file (e.g. the bundle's ``models/model.pt``) to fine-tune instead of
            starting from random weights; loaded with ``weights_only=True``.
        lr: peak learning rate (cosine decay to a tenth of it, at most 1e-4).
        case_seed: first phantom seed (held-out phantoms use 9000 and up).
        max_diameter_mm: largest nodule diameter in the training phantoms (smallest: 4 mm).
        nodule_weight: cross-entropy weight of the nodule class (background and lung: 1).
        nodule_share: share of patches centred on a nodule chosen uniformly (at most 0.6).
        v2_share: share of the training phantoms drawn as phantom-v2 (:func:`v2_spec`), the rest as v1.
        input_stats: when given, each training phantom's :func:`case_input_statistics` is appended to it (for
            the catalogue's ``input_distribution``).
        v2_lesions: the lesions of the phantom-v2 cases (default :class:`V2Lesions`).
        flip: mirror half of the patches left-right (the lungs' labels have no side).
    """
    import torch

    if not 0.0 <= nodule_share <= 0.6:
        raise ValueError(f"nodule_share must be in [0, 0.6] (20 % of patches go to lung), got {nodule_share}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    log(f"generating {n_train} training phantoms")
    cases = _make_cases(
        [case_seed + i for i in range(n_train)], log, (4.0, max_diameter_mm), v2_share, input_stats, v2_lesions
    )
    network = build_network()
    if init_weights is not None:
        network.load_state_dict(torch.load(init_weights, map_location="cpu", weights_only=True))
        log(f"fine-tuning the weights in {init_weights}")
    return fit(
        network,
        cases,
        iterations,
        batch_size,
        rng,
        lr=lr,
        nodule_weight=nodule_weight,
        nodule_share=nodule_share,
        flip=flip,
        log=log,
    )


def loss_function(nodule_weight: float = 2.0, classes: int = 3) -> torch.nn.Module:
    """The training loss: batch Dice (stable when a patch has no nodule) + cross-entropy, the nodule class (channel
    2) weighted ``nodule_weight``, the other classes 1."""
    import torch
    from monai.losses import DiceCELoss

    weights = [float(nodule_weight) if channel == 2 else 1.0 for channel in range(classes)]
    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=True, batch=True, weight=torch.tensor(weights))


def fit(
    network: torch.nn.Module,
    cases: Sequence[TrainingCase],
    iterations: int,
    batch_size: int,
    rng: np.random.Generator,
    *,
    lr: float = 3e-3,
    nodule_weight: float = 2.0,
    nodule_share: float = 0.3,
    patch: tuple[int, int, int] = TRAIN_PATCH,
    device: str = "cpu",
    flip: bool = False,
    log: Callable[[str], None] = print,
) -> torch.nn.Module:
    """Optimise ``network`` on random patches of ``cases`` (:func:`_sample_patch`, mirrored left-right at random
    when ``flip``); returns it on the CPU, in eval mode.

    AdamW (weight decay 1e-5), peak learning rate ``lr`` with cosine decay to a tenth of it (at most 1e-4), the
    :func:`loss_function`; ``iterations`` steps of ``batch_size`` patches of size ``patch`` on torch ``device``.
    """
    import torch

    target = torch.device(device)
    network = network.to(target)
    loss_fn = loss_function(nodule_weight, int(getattr(network, "out_channels", 3))).to(target)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(iterations, 1), eta_min=min(1e-4, lr / 10.0)
    )
    network.train()
    started = time.perf_counter()
    running = 0.0
    for step in range(1, iterations + 1):
        patches = [
            _sample_patch(cases[int(rng.integers(len(cases)))], rng, patch, nodule_share) for _ in range(batch_size)
        ]
        if flip:  # axis 2 is i, the patient's right-left on the model grid
            patches = [(p[0][:, :, ::-1], p[1][:, :, ::-1]) if rng.random() < 0.5 else p for p in patches]
        x = torch.from_numpy(np.stack([p[0] for p in patches])[:, None].astype(np.float32)).to(target)
        y = torch.from_numpy(np.stack([p[1] for p in patches])[:, None].astype(np.int64)).to(target)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running = 0.95 * running + 0.05 * loss.item() if step > 1 else loss.item()
        if step % 50 == 0 or step == iterations:
            log(f"  step {step}/{iterations}  loss {running:.4f}  ({time.perf_counter() - started:.0f} s)")
    return network.cpu().eval()


def evaluate_on_heldout(entry: ModelEntry, seeds: Sequence[int], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the catalogued model through the real inference path on held-out phantoms.

    Dice per label; nodule Dice per nodule ≥ 6 mm inside a box of twice its diameter around it; and nodule
    detection scored lesion by lesion (:mod:`MedAIExtension.segmentation.froc`: FROC, LUNA16 CPM, false-positive
    components per scan), candidates being the lesion components of the final label map (clean-up and lesion
    filter included, as ``medai segment`` writes it) scored by their peak probability.
    """

    backend = load_backend(entry, "cpu")
    lung, nodules, nodule_label = [], [], []
    scans: list[ScanDetections] = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        size, spacing = random_native_grid(rng)
        phantom = generate_chest_phantom(random_phantom_spec(seed, size_ijk=size, spacing=spacing))
        pred, probability = segment_with_probability(phantom.ct, entry, backend)
        truth = phantom.labels.array
        lung.append(dice(pred == 1, truth == 1))
        nodule_label.append(dice(pred == 2, truth == 2))
        found = tuple(c for c, _ in lesion_candidates(phantom.ct, pred, probability))
        scans.append(ScanDetections(found, lesions_from_instances(phantom.nodule_ids)))
        for nod in phantom.truth["nodules"]:
            if nod["diameter_mm"] < 6.0:
                continue
            ijk = np.linalg.inv(phantom.ct.ijk_to_ras) @ np.array([*nod["center_ras"], 1.0])
            centre = np.round(ijk[:3][::-1]).astype(int)
            half = np.ceil(nod["diameter_mm"] / phantom.ct.spacing[::-1]).astype(int)
            box = tuple(slice(max(c - h, 0), c + h + 1) for c, h in zip(centre, half))
            nodules.append(dice(pred[box] == 2, truth[box] == 2))
        log(f"  held-out seed {seed}: lung Dice {lung[-1]:.3f}, nodule-label Dice {nodule_label[-1]:.3f}")
    detection = froc(scans)
    false_positives = [
        sum(1 for c in scan.candidates if not any(lesion.contains(c.center_ras) for lesion in scan.lesions))
        for scan in scans
    ]
    return {
        "heldout_seeds": list(seeds),
        "dice_lung": round(float(np.mean(lung)), 4),
        "dice_nodule_label": round(float(np.mean(nodule_label)), 4),
        "dice_nodules_ge_6mm": round(float(np.mean(nodules)), 4) if nodules else None,
        "nodules_ge_6mm": len(nodules),
        **detection_figures(detection),
        "false_positive_components_per_scan": round(float(np.mean(false_positives)), 2),
    }


def bundle_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """The catalogue entry of the same weights as a MONAI bundle run in torch (gradients for Grad-CAM / IG)."""
    bundle = f"{MODEL_NAME}-bundle"
    return {
        **{key: value for key, value in entry.items() if key != "cpu_variant"},
        "name": f"{MODEL_NAME}-torch",
        "title": f"{entry['title']} — MONAI bundle (torch)",
        "backend": "monai_bundle",
        "bundle_dir": bundle,
        "description": (
            f"The same weights as {MODEL_NAME}, run in torch from its MONAI bundle, so gradient explanations "
            "(Grad-CAM, Grad-CAM++, integrated gradients) work. Research/demo use only."
        ),
        "files": [
            {"path": f"{bundle}/models/model.pt", "role": "model"},
            {"path": f"{bundle}/configs/inference.json", "role": "config"},
            {"path": f"{bundle}/configs/metadata.json", "role": "config"},
        ],
        # decoder block at half resolution: see MedAIExtension.explain.torch_model.default_target_layer
        "explain": {"target_layer": "model.1.submodule.2", "target_label": 2},
    }


def _training_record(catalog: Path) -> dict[str, Any] | None:
    """The catalogue's training record of the shipped model (what the weights being fine-tuned came from)."""
    try:
        models = json.loads(catalog.read_text())["models"]
    except (OSError, ValueError, KeyError):
        return None
    record = next((m.get("training") for m in models if m.get("name") == MODEL_NAME), None)
    if not record:
        return None
    return {key: value for key, value in record.items() if key != "heldout"} | {
        "version": next(m.get("version") for m in models if m.get("name") == MODEL_NAME)
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Train, export (ONNX + MONAI bundle), catalogue and evaluate the shipped model."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--train-cases", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--heldout", type=int, default=4)
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--init", type=Path, default=None, help="state_dict to fine-tune (weights_only load)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--case-seed", type=int, default=1000)
    parser.add_argument("--max-diameter", type=float, default=20.0)
    parser.add_argument("--nodule-weight", type=float, default=2.0)
    parser.add_argument("--nodule-share", type=float, default=0.3)
    parser.add_argument("--v2-share", type=float, default=0.0, help="share of phantom-v2 training cases")
    parser.add_argument(
        "--v2-max-nodules", type=int, default=5, help="phantom-v2 cases get 1 to this many lesions besides a mass"
    )
    parser.add_argument(
        "--v2-diameter",
        type=float,
        nargs=2,
        default=(3.0, 30.0),
        metavar=("MIN", "MAX"),
        help="diameter range (mm) of the phantom-v2 cases' lesions (masses apart)",
    )
    parser.add_argument("--flip", action="store_true", help="mirror half of the patches left-right")
    parser.add_argument("--version", default="1.0.0")
    args = parser.parse_args(argv)
    torch.set_num_threads(cpu_threads())
    started = time.perf_counter()
    if not 0.0 <= args.nodule_share <= 0.6:
        parser.error(f"--nodule-share {args.nodule_share}: must be between 0 and 0.6")
    previous = None
    input_stats: list[dict[str, Any]] = []
    if args.init is not None:
        if not args.init.is_file():
            parser.error(f"--init {args.init}: no such file")
        previous = _training_record(args.catalog)
    network = train(
        args.iterations,
        args.train_cases,
        args.batch_size,
        init_weights=args.init,
        lr=args.lr,
        case_seed=args.case_seed,
        max_diameter_mm=args.max_diameter,
        nodule_weight=args.nodule_weight,
        nodule_share=args.nodule_share,
        v2_share=args.v2_share,
        input_stats=input_stats,
        v2_lesions=V2Lesions(args.v2_max_nodules, (args.v2_diameter[0], args.v2_diameter[1])),
        flip=args.flip,
    )
    model_dir = args.catalog.parent
    entry = model_entry(args.version)
    onnx_path = export_onnx(network, model_dir / f"{MODEL_NAME}.onnx", PATCH, entry)
    write_monai_bundle(network, model_dir / f"{MODEL_NAME}-bundle", NETWORK_ARGS, entry)
    entry["training"] = {
        "script": "python -m MedAIExtension.training.train",
        "iterations": args.iterations,
        "train_cases": args.train_cases,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "case_seed": args.case_seed,
        "max_diameter_mm": args.max_diameter,
        "nodule_weight": args.nodule_weight,
        "nodule_share": args.nodule_share,
        "v2_share": args.v2_share,
        **(
            {"v2_max_nodules": args.v2_max_nodules, "v2_diameter_mm": list(args.v2_diameter), "flip": args.flip}
            if (args.v2_max_nodules, tuple(args.v2_diameter), args.flip) != (5, (3.0, 30.0), False)
            else {}
        ),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if previous is not None:
        # the stages that made the starting weights, oldest first, so the shipped file can be rebuilt
        entry["training"]["fine_tuned_from"] = previous
    # what the training CTs looked like, for the batch's drift flags (MedAIExtension.batch.drift)
    entry["input_distribution"] = training_distribution(input_stats)
    update_catalog(args.catalog, entry, model_dir)
    catalogued = ModelEntry.from_dict(
        next(m for m in json.loads(args.catalog.read_text())["models"] if m["name"] == MODEL_NAME), model_dir
    )
    print(f"exported {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB); evaluating on held-out phantoms")
    metrics = evaluate_on_heldout(catalogued, [9000 + i for i in range(args.heldout)])
    entry["training"]["heldout"] = metrics
    update_catalog(args.catalog, entry, model_dir)
    update_catalog(args.catalog, bundle_entry(entry), model_dir)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
