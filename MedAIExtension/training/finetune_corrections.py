"""Fine-tuning a catalogued segmentation model on annotators' corrections (``medai train --corrections``).

A correction is a folder ``<result>/corrections/<UTC time>/`` as ``medai view``'s editor saves it
(:mod:`MedAIExtension.view.corrections`): the corrected label map ``segmentation.nii.gz`` and ``provenance.json``
(source model and version, annotator, time, source result, study path). Each correction gives one training case:
its study goes through the model's own preprocessing (:func:`~MedAIExtension.training.train.to_model_grid` and the
normalisation), its label map is resampled (nearest neighbour) onto the same grid, and the network, patch
sampling, loss and optimiser of :mod:`MedAIExtension.training.train` (:func:`~MedAIExtension.training.train.fit`)
refine the base model's torch weights.

The result is a NEW user model, written atomically into a user model folder (never over a shipped model):
``<name>.onnx`` (the network, run by ONNX Runtime), ``<name>.pt`` (its weights, to fine-tune again), a copy of the
base model's lesion filter when it has one, and the sidecar ``<name>.json`` with the catalogue entry, every file's
sha256 and, under ``training``, the corrections used (folders, annotators, times), the base model and version and
the settings. The loader finds it through the sidecar (:func:`~MedAIExtension.models.discovery.describe_onnx_model`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from MedAIExtension.atomic import staged_output
from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.io.loader import load_image
from MedAIExtension.io.resample import resample_to_grid
from MedAIExtension.io.volume_files import read_volume_file
from MedAIExtension.models.catalog import DEFAULT_CATALOG, Catalog, ModelEntry, sha256_of, validate_catalog_data
from MedAIExtension.models.discovery import describe_monai_bundle, describe_onnx_model
from MedAIExtension.models.preprocessing import normalize_intensity
from MedAIExtension.training.export import export_onnx
from MedAIExtension.training.network import build_network
from MedAIExtension.training.train import TrainingCase, fit, to_model_grid

if TYPE_CHECKING:
    import torch

__all__ = [
    "CorrectionCase",
    "FineTuneSettings",
    "base_entry_json",
    "find_corrections",
    "fine_tune",
    "prepare_correction",
    "read_correction",
    "torch_weights",
    "write_finetuned_model",
]

PROVENANCE = "provenance.json"
LABELMAP = "segmentation.nii.gz"


@dataclass(frozen=True)
class CorrectionCase:
    """A correction ready to train on: its folder, label map, study and provenance."""

    folder: Path
    labelmap: Path
    study: Path
    provenance: Mapping[str, Any]

    def record(self) -> dict[str, Any]:
        """What the new model's catalogue entry says about this correction."""
        keys = ("annotator", "time_utc", "source_model", "model_version", "source_result")
        return {"folder": str(self.folder), "study": str(self.study), **{k: self.provenance.get(k) for k in keys}}


@dataclass(frozen=True)
class FineTuneSettings:
    """The fine-tune's settings (recorded in the new entry's ``training``)."""

    iterations: int = 200
    lr: float = 1e-4
    batch_size: int = 4
    patch: int = 64
    seed: int = 0
    nodule_weight: float = 2.0
    nodule_share: float = 0.3


def find_corrections(root: Path) -> list[Path]:
    """The correction folders (each holding ``provenance.json``) anywhere under ``root``, sorted."""
    if not root.is_dir():
        raise InputError(
            f"--corrections {root}: no such folder. Point it at a result folder, its corrections/ folder or a "
            "folder holding several."
        )
    folders = sorted(
        {
            path.parent
            for path in root.rglob(PROVENANCE)
            if not any(part.startswith(".medai-") for part in path.relative_to(root).parts)  # staging folders
        }
    )
    if not folders:
        raise InputError(
            f"No corrections under {root}: a correction is a folder with {PROVENANCE} and {LABELMAP}, as medai "
            "view's editor saves it into <result>/corrections/<UTC time>/. Save corrections there first, or point "
            "--corrections at the folder that holds them."
        )
    return folders


def read_correction(folder: Path, images: Mapping[Path, Path] | None = None) -> CorrectionCase:
    """Check one correction folder: its provenance, label map and study (``images`` overrides the recorded study,
    keyed by the correction folder's resolved path)."""
    try:
        provenance = json.loads((folder / PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"Correction {folder}: {PROVENANCE} cannot be read ({exc}). Re-save the correction.") from None
    if not isinstance(provenance, dict):
        raise InputError(f"Correction {folder}: {PROVENANCE} is not a JSON object. Re-save the correction.")
    files = provenance.get("files")
    labelmap = folder / str(files.get("labelmap", LABELMAP) if isinstance(files, dict) else LABELMAP)
    if not labelmap.is_file():
        raise InputError(f"Correction {folder}: its label map {labelmap.name} is missing. Re-save the correction.")
    recorded = str(provenance.get("study") or "")
    given = (images or {}).get(folder.resolve())
    study = given if given is not None else (Path(recorded) if recorded else None)
    if study is None or not study.exists():
        shown = study if study is not None else "(not recorded)"
        raise InputError(
            f"Correction {folder}: its study {shown} is missing. Give the image it was drawn on with "
            f"--image {folder}=PATH (a DICOM folder or a .nii.gz/.nrrd file)."
        )
    return CorrectionCase(folder, labelmap, study, provenance)


def torch_weights(entry: ModelEntry, catalog: Catalog) -> Path | None:
    """The state-dict file to fine-tune ``entry`` from: a MONAI bundle's ``model.pt``, a ``.pt`` file with role
    ``weights`` (a fine-tuned model's), or its ``cpu_variant``'s (the same weights); None when it has none."""
    if entry.task != "segmentation":
        return None
    if entry.backend == "monai_bundle" and entry.model_file.suffix == ".pt":
        return entry.model_file
    for item in entry.files:
        if item.role == "weights" and item.path.suffix == ".pt":
            return item.path
    variant = entry.cpu_variant
    if variant and variant in catalog and variant != entry.name:
        variant_entry = catalog.get(variant)
        if variant_entry.cpu_variant is None:
            return torch_weights(variant_entry, catalog)
    return None


def base_entry_json(entry: ModelEntry, catalog_path: Path | None) -> dict[str, Any]:
    """The catalogue entry of ``entry`` in its JSON form (from the catalogue, a sidecar / ONNX or a bundle)."""
    source = entry.source
    if source.startswith("user ONNX "):
        return describe_onnx_model(Path(source.removeprefix("user ONNX ")))
    if source.startswith("MONAI bundle "):
        return describe_monai_bundle(Path(source.removeprefix("MONAI bundle ")))
    path = catalog_path or DEFAULT_CATALOG
    models = json.loads(path.read_text(encoding="utf-8"))["models"]
    return dict(next(model for model in models if model["name"] == entry.name))


def prepare_correction(study: Image, labels: Image, entry: ModelEntry) -> tuple[np.ndarray, np.ndarray]:
    """The network input (study cropped, resampled and normalised as inference does) and the target channels
    (the corrected label map on the same grid, label values turned into the model's output channels)."""
    spec = entry.input
    ct = to_model_grid(study, spec.spacing, spec.orientation, spec.crop_foreground_above)
    target = resample_to_grid(labels, ct.ijk_to_ras, ct.shape, linear=False, fill=0).array
    channels = np.zeros(target.shape, dtype=np.uint8)
    for label in entry.labels:
        channels[target == label.value] = entry.channel_of(label.value)
    image = normalize_intensity(ct.array, spec.normalization)
    if spec.axis_order == "ijk":
        image, channels = image.transpose(2, 1, 0), channels.transpose(2, 1, 0)
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(channels)


def _training_cases(
    corrections: Sequence[CorrectionCase], entry: ModelEntry, rng: np.random.Generator
) -> list[TrainingCase]:
    values = {label.value for label in entry.labels}
    cases = []
    for correction in corrections:
        labels = read_volume_file(correction.labelmap)
        found = {int(v) for v in np.unique(np.asarray(labels.array))} - {0}
        if not found <= values:
            raise InputError(
                f"Correction {correction.folder}: label values {sorted(found - values)} are not labels of "
                f"{entry.name} ({sorted(values)}). Fine-tune the model the correction was made on."
            )
        image, target = prepare_correction(load_image(correction.study), labels, entry)
        if found and not target.any():
            raise InputError(
                f"Correction {correction.folder}: its label map does not overlap its study {correction.study}. "
                f"Give the image it was drawn on with --image {correction.folder}=PATH."
            )
        cases.append(TrainingCase.from_arrays(image, target, rng))
    return cases


def fine_tune(
    entry: ModelEntry,
    weights: Path,
    corrections: Sequence[CorrectionCase],
    settings: FineTuneSettings,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> torch.nn.Module:
    """Fine-tune the network in ``weights`` on the corrections; returns it on the CPU in eval mode."""
    import torch

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    network = build_network()
    try:
        network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (RuntimeError, ValueError, OSError) as exc:
        raise InputError(
            f"Model {entry.name}: its weights {weights.name} do not fit MedAI's training network "
            f"({str(exc).splitlines()[0][:200]}); only models of that network can be fine-tuned."
        ) from None
    cases = _training_cases(corrections, entry, rng)
    patch = (settings.patch,) * 3
    return fit(
        network,
        cases,
        settings.iterations,
        settings.batch_size,
        rng,
        lr=settings.lr,
        nodule_weight=settings.nodule_weight,
        nodule_share=settings.nodule_share,
        patch=patch,
        device=device,
        log=log,
    )


def new_entry(
    base: Mapping[str, Any],
    entry: ModelEntry,
    name: str,
    version: str,
    corrections: Sequence[CorrectionCase],
    training: Mapping[str, Any],
) -> dict[str, Any]:
    """The new model's catalogue entry (files without sha256): the base entry, renamed, as an ONNX model."""
    dropped = ("cpu_variant", "bundle_dir", "explain", "training", "files")
    data = {key: value for key, value in base.items() if key not in dropped}
    annotators = sorted({str(c.provenance.get("annotator") or "unknown") for c in corrections})
    data.update(
        name=name,
        version=version,
        title=f"{base['title']} — fine-tuned on {len(corrections)} correction(s)",
        backend="onnx",
        description=(
            f"{entry.name} {entry.version} fine-tuned with medai train on corrections by {', '.join(annotators)}. "
            f"{base.get('description', '')}"
        ).strip(),
    )
    files: list[dict[str, Any]] = [
        {"path": f"{name}.onnx", "role": "model"},
        {"path": f"{name}.pt", "role": "weights"},
    ]
    lesion_filter = dict(data.get("postprocessing", {}).get("lesion_filter") or {})
    if lesion_filter:
        lesion_filter["file"] = f"{name}-lesion-filter.json"
        data["postprocessing"] = {**data["postprocessing"], "lesion_filter": lesion_filter}
        files.append({"path": lesion_filter["file"], "role": "postprocessing"})
    data["files"] = files
    data["training"] = {
        "script": "medai train --corrections",
        "base_model": entry.name,
        "base_version": entry.version,
        "annotators": annotators,
        "corrections": [c.record() for c in corrections],
        **training,
        **({"fine_tuned_from": dict(entry.training)} if entry.training else {}),
    }
    return data


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the ONNX exporter's progress lines, log records and warnings off the user's terminal."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def write_finetuned_model(
    network: torch.nn.Module,
    data: dict[str, Any],
    entry: ModelEntry,
    output: Path,
) -> Path:
    """Write the new model's files and sidecar into ``output`` atomically; returns the sidecar's path."""
    import torch

    name = data["name"]
    with staged_output(output) as staged:
        folder = staged.folder
        with torch.no_grad():
            torch.save(network.state_dict(), folder / f"{name}.pt")
        with _quiet_exporter():
            export_onnx(network, folder / f"{name}.onnx", entry.input.patch_size, data)
        if entry.postprocessing.lesion_filter is not None:
            shutil.copyfile(entry.postprocessing.lesion_filter.path, folder / f"{name}-lesion-filter.json")
        data = {**data, "files": [{**f, "sha256": sha256_of(folder / f["path"])} for f in data["files"]]}
        validate_catalog_data(data, f"The new model {name}", entry_only=True)
        (folder / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        names = [f["path"] for f in data["files"]] + [f"{name}.json"]  # the sidecar last: it makes the model visible
        final = staged.commit(names)
    return final[f"{name}.json"]


def default_name(entry: ModelEntry, now: dt.datetime) -> tuple[str, str]:
    """A new model's default name and version: ``<base>-corrected-<UTC time>``, ``<base version>+corrected.<time>``."""
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dt%H%M%Sz")
    base = entry.name.removesuffix("-torch")
    return f"{base}-corrected-{stamp}", f"{entry.version}+corrected.{stamp.upper()}"


def default_output() -> Path:
    """Where new models go by default: the first ``$MEDAI_MODELS_DIR`` folder, else ``~/.medai/models``."""
    env = [p for p in os.environ.get("MEDAI_MODELS_DIR", "").split(os.pathsep) if p]
    return Path(env[0]) if env else Path.home() / ".medai" / "models"


def elapsed(started: float) -> float:
    """Seconds since ``started`` (``time.perf_counter``), rounded to 0.1 s."""
    return round(time.perf_counter() - started, 1)
