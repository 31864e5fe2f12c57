"""``medai train``: fine-tune a catalogued model on annotators' corrections into a new user model.

    medai train --init chest-ct-lung-nodule-torch --corrections results/ [--output ~/.medai/models]
        [--iterations 200] [--lr 1e-4] [--device auto] [--name NEW_MODEL_NAME]

Every check (the corrections, their studies, the base model's torch weights, the new name and the output folder)
runs before the training; bad input is one error line, exit status 2, and nothing written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from MedAIExtension.command_types import SetHandler, SubParsers

__all__ = ["add_train_parser"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")  # the catalogue schema's model name pattern


def _image_overrides(values: list[str]) -> dict[Path, Path]:
    from MedAIExtension.errors import InputError

    images: dict[Path, Path] = {}
    for value in values:
        folder, sep, study = value.partition("=")
        if not sep or not folder or not study:
            raise InputError(f"--image {value!r}: write it as CORRECTION_FOLDER=STUDY_PATH.")
        images[Path(folder).resolve()] = Path(study)
    return images


def _check_settings(args: argparse.Namespace) -> None:
    from MedAIExtension.errors import InputError

    checks = [
        (args.iterations >= 1, f"--iterations {args.iterations}: give at least 1."),
        (args.lr > 0, f"--lr {args.lr}: give a positive learning rate, e.g. 1e-4."),
        (args.batch_size >= 1, f"--batch-size {args.batch_size}: give at least 1."),
        (args.patch >= 8 and args.patch % 8 == 0, f"--patch {args.patch}: give a multiple of 8 (e.g. 32 or 64)."),
        (
            args.name is None or bool(_NAME.match(args.name)),
            f"--name {args.name!r}: use lower-case letters, digits, '.', '_' and '-' (starting with a letter or "
            "digit).",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(message)


def _torch_device(value: str) -> str:
    import torch

    from MedAIExtension.errors import InputError

    if value == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: torch sees no GPU here. Use --device cpu or --device auto.")
    if value != "cpu" and torch.cuda.is_available():
        return "cuda"
    from MedAIExtension.models.devices import cpu_threads

    torch.set_num_threads(cpu_threads())
    return "cpu"


def _cmd_train(args: argparse.Namespace, bar: Any, _warn: Callable[[str], None]) -> int:
    from MedAIExtension.atomic import check_output_directory
    from MedAIExtension.errors import InputError
    from MedAIExtension.models.catalog import DEFAULT_CATALOG, load_catalog, user_model_dirs
    from MedAIExtension.training import finetune_corrections as ft

    started = time.perf_counter()
    _check_settings(args)
    images = _image_overrides(args.image or [])
    corrections = [ft.read_correction(folder, images) for folder in ft.find_corrections(Path(args.corrections))]
    output = Path(args.output) if args.output else ft.default_output()
    if output.resolve() == DEFAULT_CATALOG.parent.resolve():
        raise InputError(f"--output {output} holds the shipped models; write the new model to a user model folder.")
    catalog = load_catalog(args.catalog, models_dirs=[*(args.models_dir or ()), *([output] if output.is_dir() else [])])
    entry = catalog.get(args.init)
    weights = ft.torch_weights(entry, catalog)
    if weights is None:
        tunable = [e.name for e in catalog.entries() if ft.torch_weights(e, catalog) is not None]
        raise InputError(
            f"Model {entry.name} has no torch weights (only {entry.backend} ones) and cannot be fine-tuned. Models "
            f"that can: {', '.join(tunable) or '(none)'}."
        )
    entry.verify_files()
    if entry.cpu_variant and weights not in [f.path for f in entry.files]:
        catalog.get(entry.cpu_variant).verify_files()
    name, version = ft.default_name(entry, dt.datetime.now(dt.UTC))
    name = args.name or name
    version = args.version or version
    if name in catalog:
        raise InputError(f"--name {name}: a model of that name exists already; choose another name.")
    taken = [p.name for p in (output / f"{name}{s}" for s in (".onnx", ".pt", ".json")) if p.exists()]
    if taken:
        raise InputError(f"{output} already holds {', '.join(taken)}; choose another --name or --output.")
    check_output_directory(output)
    device = _torch_device(args.device)
    settings = ft.FineTuneSettings(args.iterations, args.lr, args.batch_size, args.patch, args.seed)
    base = ft.base_entry_json(entry, args.catalog)
    bar(0.05, f"fine-tuning on {len(corrections)} correction(s)")
    network = ft.fine_tune(entry, weights, corrections, settings, device, log=lambda _m: None)
    bar(0.85, "exporting the new model")
    training = {
        "iterations": settings.iterations,
        "lr": settings.lr,
        "batch_size": settings.batch_size,
        "patch_size": settings.patch,
        "seed": settings.seed,
        "nodule_weight": settings.nodule_weight,
        "nodule_share": settings.nodule_share,
        "device": device,
        "seconds": ft.elapsed(started),
    }
    data = ft.new_entry(base, entry, name, version, corrections, training)
    sidecar = ft.write_finetuned_model(network, data, entry, output)
    bar(1.0, "done")
    bar.close()
    print(f"Model {name} {version}: {entry.name} {entry.version} fine-tuned on {len(corrections)} correction(s).")
    print(f"  entry      {sidecar}")
    if output.resolve() not in [d.resolve() for d in user_model_dirs()]:
        print(f"  use it with: medai segment --model {name} --models-dir {output} ...")
    return 0


def add_train_parser(sub: SubParsers, set_handler: SetHandler) -> None:
    """Register ``medai train``."""
    train = sub.add_parser(
        "train",
        help="fine-tune a model on annotators' corrections (medai view) into a new user model",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    train.add_argument("--init", required=True, metavar="MODEL", help="catalogue model to start from (torch weights)")
    train.add_argument(
        "--corrections", required=True, metavar="DIR", help="folder searched for corrections (provenance.json)"
    )
    train.add_argument(
        "--output", default=None, help="user model folder (default: $MEDAI_MODELS_DIR or ~/.medai/models)"
    )
    train.add_argument("--name", default=None, help="the new model's name (default: <base>-corrected-<UTC time>)")
    train.add_argument("--version", default=None, help="the new model's version (default: <base version>+corrected.…)")
    train.add_argument(
        "--image",
        action="append",
        metavar="CORRECTION=STUDY",
        help="the study a correction was drawn on, when its provenance.json names none or a moved one (repeat)",
    )
    train.add_argument("--iterations", type=int, default=200, help="optimiser steps (default 200)")
    train.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4, cosine decay)")
    train.add_argument("--batch-size", type=int, default=4, help="patches per step (default 4)")
    train.add_argument("--patch", type=int, default=64, help="training patch edge in voxels, multiple of 8 (64)")
    train.add_argument("--seed", type=int, default=0, help="seed of the patch sampling (default 0)")
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    train.add_argument("--models-dir", action="append", help="extra folder with user models (to find MODEL)")
    train.add_argument("--catalog", type=Path, default=None, help="model catalogue JSON (default: the shipped one)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    set_handler(train, _cmd_train, bar="lazy")
