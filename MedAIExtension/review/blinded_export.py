"""Blinded export of a reader session and its answer sheet (``medai review reader-study start --export`` / ``answer``).

A blinded reader must not be able to tell real from synthetic by anything but the voxels. Every image of a session
is therefore resampled onto one common grid (the same matrix, spacing, origin (0, 0, 0) and identity LPS
direction for all trials), converted to one voxel type (int16 HU, rounded and clipped to [-1024, 3071]; float32
for a session of normalised images; a session mixing the two is refused) and written
as an uncompressed NRRD with no per-source header keys, so every file has the same header and the same size. Files
are named by trial number only (the session's order is random), get one common modification time, and appear
together or not at all (staged, then moved into place).

The answer sheet (``answers.csv``: trial, file, said, confidence) is read back by :func:`read_answer_sheet`, which
validates the whole sheet before anything is stored.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.atomic import check_output_directory, staged_output
from MedAIExtension.errors import InputError
from MedAIExtension.io.geometry import LPS_TO_RAS
from MedAIExtension.io.image import Image
from MedAIExtension.io.loader import load_image
from MedAIExtension.io.resample import resample_array
from MedAIExtension.progress import Progress
from MedAIExtension.review.store import ImageRecord, ReviewStore

__all__ = [
    "HU_RANGE",
    "MAX_MATRIX",
    "SHEET_NAME",
    "WHOLE_UNITS_RANGE",
    "BlindedGrid",
    "SheetAnswer",
    "blind_image",
    "check_export_folder",
    "common_grid",
    "export_blinded_session",
    "read_answer_sheet",
    "resample_onto_grid",
]

HU_RANGE = (-1024, 3071)
"""Voxel values of a blinded image: int16 HU, rounded and clipped to this range (air fills outside the image)."""
WHOLE_UNITS_RANGE = 255.0
"""Images whose values span more than this are in whole units (CT HU) and are blinded as int16 HU; a session of
images that all span less (normalised intensities) is blinded as float32, unrounded."""
MAX_MATRIX = 1024
"""Most voxels along one axis of the common grid; a coarser spacing is used where the median extent needs more."""
SHEET_NAME = "answers.csv"
SHEET_FIELDS = ("trial", "file", "said", "confidence")
ProgressArg = Progress | Callable[[float, str], None] | None


@dataclass(frozen=True)
class BlindedGrid:
    """The one grid every blinded image of a session is resampled onto (identity LPS direction, origin 0).

    Attributes:
        size: voxels along i (L), j (P), k (S).
        spacing: voxel spacing along i, j, k in mm.
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]


@dataclass(frozen=True)
class SheetAnswer:
    """One validated answer of a filled answer sheet.

    Attributes:
        line: line number in the CSV file (the header is line 1).
        index: 0-based trial index in the session.
        said_synthetic: the reader's answer.
        confidence: 1 (guess) .. 5 (certain).
    """

    line: int
    index: int
    said_synthetic: bool
    confidence: int


def common_grid(records: Sequence[ImageRecord], max_matrix: int = MAX_MATRIX) -> BlindedGrid:
    """One grid for a whole session: per axis the median spacing and the median physical extent of ``records``.

    The grid comes from the recorded shapes and spacings (no image is loaded); along an axis whose median extent
    would need more than ``max_matrix`` voxels the spacing is made coarser.
    """
    if not records:
        raise InputError("The reader session has no images to export.")
    spacing = np.array([r.spacing for r in records], dtype=float)  # (n, 3) along i, j, k
    extent = np.array([r.shape[::-1] for r in records], dtype=float) * spacing
    step = np.median(spacing, axis=0)
    length = np.median(extent, axis=0)
    size = np.clip(np.rint(length / step), 2, max_matrix).astype(int)
    step = np.maximum(step, length / size)
    return BlindedGrid(
        size=(int(size[0]), int(size[1]), int(size[2])),
        spacing=(round(float(step[0]), 4), round(float(step[1]), 4), round(float(step[2]), 4)),
    )


def resample_onto_grid(image: Image, grid: BlindedGrid, outside: float) -> np.ndarray:
    """``image``'s voxels on ``grid``, centred on the image's own centre: float32, (k, j, i) order.

    Linear interpolation; ``outside`` fills what lies beyond the image. The grid has an identity (LPS) direction,
    so any acquisition orientation comes out axial.
    """
    centre_ras = image.ijk_to_ras @ np.r_[(np.array(image.shape[::-1], dtype=float) - 1.0) / 2.0, 1.0]
    size = np.array(grid.size, dtype=float)
    grid_lps = np.eye(4)
    grid_lps[:3, :3] = np.diag(grid.spacing)
    grid_lps[:3, 3] = (LPS_TO_RAS @ centre_ras)[:3] - grid_lps[:3, :3] @ ((size - 1.0) / 2.0)
    shape_kji = (grid.size[2], grid.size[1], grid.size[0])
    return resample_array(image, LPS_TO_RAS @ grid_lps, shape_kji, linear=True, fill=outside).astype(np.float32)


def blind_image(
    path: str | os.PathLike[str], grid: BlindedGrid, whole_units: bool = True, outside: float = HU_RANGE[0]
) -> Any:
    """The image at ``path`` (volume file or DICOM folder) resampled onto ``grid``, centred on its own centre.

    Linear interpolation, ``outside`` (air, -1024 HU) beyond the image; ``whole_units``: int16 HU clipped to
    :data:`HU_RANGE`, else float32 as interpolated. Origin (0, 0, 0), identity direction and no metadata.
    Returns a ``SimpleITK.Image``.
    """
    import SimpleITK as sitk

    values = resample_onto_grid(load_image(path), grid, outside)
    if whole_units:
        values = np.clip(np.rint(values), *HU_RANGE).astype(np.int16)
    blinded = sitk.GetImageFromArray(values)  # a fresh image: no metadata dictionary from the source
    blinded.SetSpacing([float(v) for v in grid.spacing])
    blinded.SetOrigin((0.0, 0.0, 0.0))
    blinded.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return blinded


def _voxel_policy(records: Sequence[ImageRecord]) -> tuple[bool, float]:
    """(whole units?, outside value) for a session: int16 HU when every image spans CT-like ranges.

    Raises:
        InputError: the session mixes CT HU with normalised images (brightness alone would tell them apart).
    """
    ranges = []
    for record in records:
        values = load_image(record.path).array
        ranges.append((float(values.min()), float(values.max())) if values.size else (0.0, 0.0))
    wide = [high - low > WHOLE_UNITS_RANGE for low, high in ranges]
    if all(wide):
        return True, float(HU_RANGE[0])
    if any(wide):
        narrow = sorted({f"{r.id} ({Path(r.path).name})" for r, w in zip(records, wide, strict=True) if not w})
        raise InputError(
            f"The session mixes CT Hounsfield units with images whose values span {WHOLE_UNITS_RANGE:g} or less "
            f"(image {', '.join(narrow[:5])}); a reader would tell them apart by brightness alone. Convert those "
            "images to HU before adding them to the project, or study them in a session of their own."
        )
    return False, min(low for low, _ in ranges)


def check_export_folder(folder: str | os.PathLike[str]) -> Path:
    """Check, before a session is created, that ``folder`` can take a blinded export without overwriting one.

    Raises:
        InputError: the folder already holds an answer sheet or blinded images (a reader's answers would be lost).
        OutputError: the folder cannot be created or written.
    """
    folder = check_output_directory(folder)
    if folder.is_dir():
        previous = sorted(p.name for p in folder.iterdir() if p.name == SHEET_NAME or p.name.startswith("trial_"))
        if previous:
            raise InputError(
                f"{folder} already holds a blinded export ({', '.join(previous[:3])}…); exporting into it would "
                "overwrite a reader's answer sheet or mix two sessions. Choose a new or empty folder with --export."
            )
    return folder


def export_blinded_session(
    store: ReviewStore, session_id: int, folder: str | os.PathLike[str], progress: ProgressArg = None
) -> Path:
    """Write the blinded images of reader session ``session_id`` and an empty answer sheet into ``folder``.

    Files are named ``trial_NNN.nrrd`` by trial number (the stored random order) and all share one header, size
    and modification time; they appear together with ``answers.csv`` or not at all.

    Returns:
        The answer sheet's path.
    """
    import SimpleITK as sitk

    out = check_export_folder(folder)
    reporter = Progress(progress)
    trials = store.reader_trials(session_id)
    records = [store.image(trial.image_id) for trial in trials]
    grid = common_grid(records)
    whole_units, outside = _voxel_policy(records)
    width = max(3, len(str(len(trials))))
    names = [f"trial_{trial.index + 1:0{width}d}.nrrd" for trial in trials]
    stamp = time.time()
    with staged_output(out) as staged:
        for position, (trial, name) in enumerate(zip(trials, names, strict=True)):
            reporter(position / len(trials), f"writing blinded image {position + 1}/{len(trials)}")
            blinded = blind_image(store.image(trial.image_id).path, grid, whole_units, outside)
            sitk.WriteImage(blinded, str(staged.folder / name), False)  # raw: the same size for every file
        with open(staged.folder / SHEET_NAME, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(SHEET_FIELDS))
            writer.writeheader()
            for trial, name in zip(trials, names, strict=True):
                writer.writerow({"trial": trial.index + 1, "file": name, "said": "", "confidence": ""})
        for name in names:
            os.utime(staged.folder / name, (stamp, stamp))  # no write-order timing per file
        staged.commit([*names, SHEET_NAME])
    reporter(1.0, f"{len(trials)} blinded images written")
    return out / SHEET_NAME


def _whole_number(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def read_answer_sheet(path: str | os.PathLike[str], n_trials: int) -> list[SheetAnswer]:
    """Read and validate a filled answer sheet of a session with ``n_trials`` trials, all rows before any is used.

    Rows with an empty ``said`` are skipped (not answered yet). Every other row needs a trial number 1..n_trials
    that no other row answers, ``said`` real or synthetic, and a confidence 1..5.

    Raises:
        InputError: one line naming the first bad row (its line number), what is wrong and the valid values.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [name for name in ("trial", "said", "confidence") if name not in (reader.fieldnames or [])]
            rows = list(reader)
    except FileNotFoundError:
        raise InputError(f"The answer sheet {path} does not exist; give the answers.csv of the export.") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(
            f"{path} is not a readable CSV answer sheet ({exc}); give the answers.csv of the export."
        ) from None
    if missing:
        raise InputError(f"{path} has no column(s) {', '.join(missing)}; use the answers.csv the export wrote.")
    answers: list[SheetAnswer] = []
    seen: dict[int, int] = {}
    for line, row in enumerate(rows, start=2):
        said = (row.get("said") or "").strip().lower()
        if not said:
            continue
        where = f"{path} line {line}"
        if said not in ("real", "synthetic"):
            raise InputError(f"{where}: 'said' must be real or synthetic, got {said!r}. Nothing was recorded.")
        trial = _whole_number(row.get("trial") or "")
        if trial is None or not 1 <= trial <= n_trials:
            raise InputError(
                f"{where}: trial {(row.get('trial') or '').strip()!r} is not a trial of this session; the trials "
                f"are 1..{n_trials}. Nothing was recorded."
            )
        if trial in seen:
            raise InputError(
                f"{where}: trial {trial} is answered again (first on line {seen[trial]}); keep one row per trial. "
                "Nothing was recorded."
            )
        seen[trial] = line
        text = (row.get("confidence") or "").strip()
        confidence = _whole_number(text)
        if not text:
            raise InputError(
                f"{where}: trial {trial} has an answer but no confidence; fill 'confidence' (1 guess .. 5 certain). "
                "Nothing was recorded."
            )
        if confidence is None or not 1 <= confidence <= 5:
            raise InputError(
                f"{where}: confidence must be a whole number from 1 (guess) to 5 (certain), got {text!r}. "
                "Nothing was recorded."
            )
        answers.append(SheetAnswer(line, trial - 1, said == "synthetic", confidence))
    return answers
