"""One catalogue entry and its parts (:class:`ModelEntry`, :class:`ModelFile`, the input, inference and
post-processing specs), the catalogue's JSON schema and its validation, and :func:`sha256_of`.

Both :mod:`MedAIExtension.models.catalog` (which re-exports these names) and
:mod:`MedAIExtension.models.discovery` build entries from here, so neither imports the other's internals.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from MedAIExtension.errors import CatalogError, ChecksumError
from MedAIExtension.labels import SegmentLabel

__all__ = [
    "DEFAULT_CATALOG",
    "RESOURCES_DIR",
    "SCHEMA_PATH",
    "InferenceSpec",
    "InputSpec",
    "LesionFilterSpec",
    "ModelEntry",
    "ModelFile",
    "PostprocessingSpec",
    "sha256_of",
    "validate_catalog_data",
]


def _find_resources() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "Resources" / "Models" / "catalog.json"
        if candidate.is_file():
            return parent / "Resources"
    return here.parents[2] / "Resources"


RESOURCES_DIR: Path = _find_resources()
DEFAULT_CATALOG: Path = RESOURCES_DIR / "Models" / "catalog.json"
SCHEMA_PATH: Path = RESOURCES_DIR / "Models" / "catalog.schema.json"


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelFile:
    """A file that belongs to a model, with the sha256 it must have."""

    path: Path
    sha256: str | None
    role: str = "model"

    def verify(self) -> None:
        """Check existence and sha256; raises :class:`ChecksumError` / :class:`CatalogError`."""
        if not self.path.is_file():
            raise CatalogError(
                f"Model file {self.path} is missing. Reinstall the extension or fix the path in the catalogue."
            )
        if self.sha256 is None:
            return
        actual = sha256_of(self.path)
        if actual != self.sha256:
            raise ChecksumError(
                f"Model file {self.path.name} is corrupt or was replaced: its sha256 is {actual[:16]}… but the "
                f"catalogue expects {self.sha256[:16]}…. Restore the original file (reinstall the extension) or, "
                "for a model you changed on purpose, update its sha256 in the catalogue."
            )


@dataclass(frozen=True)
class InputSpec:
    """What the model expects as input."""

    modality: str = "any"
    spacing: tuple[float, float, float] | None = None
    orientation: str = "native"
    normalization: Mapping[str, Any] = field(default_factory=lambda: {"type": "none"})
    patch_size: tuple[int, int, int] = (96, 96, 96)
    channels: int = 1
    crop_foreground_above: float | None = None
    axis_order: str = "kji"


@dataclass(frozen=True)
class InferenceSpec:
    """Sliding-window settings (the user may override them per run)."""

    overlap: float = 0.25
    batch_size: int = 2
    mode: str = "gaussian"


@dataclass(frozen=True)
class LesionFilterSpec:
    """A learned false-positive filter for one label (see :mod:`MedAIExtension.models.lesion_filter`).

    Attributes:
        label: the label whose connected components are scored and, when rejected, removed.
        path: the filter's JSON file (listed in the entry's files with role ``postprocessing`` and its sha256).
        lung_label: the lung's label value: a rejected component inside the lung becomes lung; None: background.
        extent_logit: a kept component takes in the voxels connected to it whose lesion score is within this many
            logits of the winning class (:mod:`MedAIExtension.models.lesion_extent`); 0: the arg-max outline.
    """

    label: int
    path: Path
    lung_label: int | None = None
    extent_logit: float = 0.0


@dataclass(frozen=True)
class PostprocessingSpec:
    """Label-map clean-up after argmax."""

    keep_largest_component: tuple[tuple[int, int], ...] = ()
    min_component_mm3: float = 0.0
    lesion_filter: LesionFilterSpec | None = None


@dataclass(frozen=True)
class ModelEntry:
    """One model in the catalogue."""

    name: str
    title: str
    version: str
    task: str
    backend: str
    files: tuple[ModelFile, ...]
    input: InputSpec
    labels: tuple[SegmentLabel, ...]
    inference: InferenceSpec = InferenceSpec()
    postprocessing: PostprocessingSpec = PostprocessingSpec()
    description: str = ""
    bundle_dir: Path | None = None
    source: str = "catalogue"
    training: Mapping[str, Any] = field(default_factory=dict)
    #: Explainability defaults from the catalogue (``target_layer``, ``target_label``).
    explain: Mapping[str, Any] = field(default_factory=dict)
    #: Another entry with the same weights that runs faster on the CPU (segmentation loads it there).
    cpu_variant: str | None = None
    #: The training CTs' input statistics (:func:`MedAIExtension.batch.drift.training_distribution`), for drift
    #: checks; None when the catalogue has none for this model.
    input_distribution: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        values = [label.value for label in self.labels]
        if len(set(values)) != len(values):
            raise CatalogError(f"Model {self.name}: two labels share a value; give each label its own value.")
        lesion_filter = self.postprocessing.lesion_filter
        if lesion_filter is not None:
            _check_lesion_filter(self, lesion_filter, values)

    @property
    def model_file(self) -> Path:
        """The main file the backend loads (first file with role 'model', else the first file)."""
        for item in self.files:
            if item.role == "model":
                return item.path
        return self.files[0].path

    def verify_files(self) -> None:
        """Check that every file exists and has its catalogue sha256."""
        for item in self.files:
            item.verify()

    @property
    def is_classifier(self) -> bool:
        """True for a classification model (one score per class; channel ``c`` is ``labels[c]``)."""
        return self.task == "classification"

    def channel_of(self, value: int) -> int:
        """The output channel that holds label ``value`` (segmentation: channel 0 is background)."""
        for index, label in enumerate(self.labels):
            if label.value == value:
                return index if self.is_classifier else index + 1
        names = ", ".join(f"{label.value} ({label.name})" for label in self.labels)
        raise KeyError(f"Model {self.name} has no label {value}; its labels are {names}.")

    def label(self, value: int) -> SegmentLabel:
        """The label with voxel value ``value``."""
        for label in self.labels:
            if label.value == value:
                return label
        raise KeyError(value)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: Path, source: str = "catalogue") -> ModelEntry:
        """Build an entry from its (already schema-validated) JSON form; paths are relative to ``base_dir``."""
        inp = data["input"]
        spacing = inp.get("spacing")
        return cls(
            name=data["name"],
            title=data["title"],
            version=data["version"],
            task=data["task"],
            backend=data["backend"],
            description=data.get("description", ""),
            files=tuple(
                ModelFile(base_dir / f["path"], f.get("sha256"), f.get("role", "model")) for f in data["files"]
            ),
            bundle_dir=(base_dir / data["bundle_dir"]) if data.get("bundle_dir") else None,
            input=InputSpec(
                modality=inp["modality"],
                spacing=tuple(float(v) for v in spacing) if spacing else None,  # type: ignore[arg-type]
                orientation=inp["orientation"],
                normalization=dict(inp["normalization"]),
                patch_size=tuple(int(v) for v in inp["patch_size"]),  # type: ignore[arg-type]
                channels=int(inp.get("channels", 1)),
                crop_foreground_above=inp.get("crop_foreground_above"),
                axis_order=inp.get("axis_order", "kji"),
            ),
            inference=InferenceSpec(**data.get("inference", {})),
            postprocessing=PostprocessingSpec(
                keep_largest_component=tuple(
                    (int(item["label"]), int(item.get("components", 1)))
                    for item in data.get("postprocessing", {}).get("keep_largest_component", [])
                ),
                min_component_mm3=float(data.get("postprocessing", {}).get("min_component_mm3", 0.0)),
                lesion_filter=_lesion_filter_spec(data.get("postprocessing", {}).get("lesion_filter"), base_dir),
            ),
            labels=tuple(SegmentLabel.from_dict(label) for label in data["labels"]),
            source=source,
            training=dict(data.get("training", {})),
            explain=dict(data.get("explain", {})),
            cpu_variant=data.get("cpu_variant"),
            input_distribution=(
                dict(data["input_distribution"]) if data.get("input_distribution") is not None else None
            ),
        )


def _lesion_filter_spec(data: Mapping[str, Any] | None, base_dir: Path) -> LesionFilterSpec | None:
    """The catalogue's ``postprocessing.lesion_filter`` (``label``, ``file``, optional ``lung_label`` and
    ``extent_logit``)."""
    if not data:
        return None
    lung = data.get("lung_label")
    return LesionFilterSpec(
        int(data["label"]),
        base_dir / data["file"],
        int(lung) if lung is not None else None,
        float(data.get("extent_logit", 0.0)),
    )


def _check_lesion_filter(entry: ModelEntry, spec: LesionFilterSpec, values: list[int]) -> None:
    """Refuse a lesion filter on an unknown label or whose file is not among the entry's (sha256-checked) files."""
    for what, value in (("label", spec.label), ("lung_label", spec.lung_label)):
        if value is not None and value not in values:
            raise CatalogError(
                f"Model {entry.name}: postprocessing.lesion_filter {what} {value} is not one of its labels "
                f"{values}; fix the catalogue entry."
            )
    listed = [item for item in entry.files if item.path == spec.path]
    if not listed or listed[0].role != "postprocessing":
        raise CatalogError(
            f"Model {entry.name}: its lesion filter {spec.path.name} must be listed in its files with role "
            "'postprocessing' and its sha256, so the catalogue's integrity check covers it; add it there."
        )


def _load_schema() -> dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return json.load(handle)


def validate_catalog_data(data: Any, where: str, entry_only: bool = False) -> None:
    """Validate catalogue JSON (or one entry) against the schema; raise :class:`CatalogError` naming the spot."""
    import jsonschema

    schema = _load_schema()
    if entry_only:
        schema = {**schema, "$ref": "#/$defs/model"}
        for key in ("required", "properties", "additionalProperties", "type"):
            schema.pop(key, None)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        location = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise CatalogError(
            f"{where} does not match the catalogue schema at {location}: {error.message}. "
            f"Fix the entry (schema: {SCHEMA_PATH.name})."
        )
