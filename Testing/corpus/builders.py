"""Builders of the input corpus: real-world encodings and malformed variants of a small phantom CT series.

Everything is made at test time with real tools — pydicom, dcmtk (dcmcjpeg, dcmcjpls, dcmcrle, dcmconv, dcmmkdir),
gdcm (gdcmconv), highdicom — from the phantom series written by ``write_phantom_study`` and from the test files that
pydicom-data ships. Each builder takes the phantom's DICOM folder and an empty work folder and returns the path to
give to ``medai segment --input``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

MODEL = "chest-ct-lung-nodule"
#: The phantom of the corpus: small enough that one segmentation run takes a few seconds on 2 cores.
PHANTOM_SIZE_IJK = (96, 96, 40)
PHANTOM_SPACING = (2.5, 2.5, 2.5)
PHANTOM_SEED = 11


# ---------------------------------------------------------------------------------------------------- running medai
@dataclass(frozen=True)
class Run:
    """What one ``medai segment`` run gave back."""

    code: int
    out: str
    err: str
    output: Path
    seconds: float

    @property
    def text(self) -> str:
        """stdout and stderr together."""
        return self.out + self.err

    def lines(self, prefix: str) -> list[str]:
        """The stderr lines that start with ``prefix`` (e.g. ``"error: "``)."""
        return [line for line in self.err.splitlines() if line.startswith(prefix)]


def run_segment(input_path: Path, output: Path, *extra: str, model: str = MODEL) -> Run:
    """Run ``medai segment`` in this process, capturing stdout/stderr; never raises."""
    from MedAIExtension.cli import main

    argv = ["segment", "--input", str(input_path), "--model", model, "--output", str(output), "--quiet", *extra]
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse refusals
            code = int(exc.code or 0)
        except BaseException:  # noqa: BLE001 - a crash must show up as a traceback in the assertions
            import traceback

            traceback.print_exc()
            code = -1
    return Run(code, out.getvalue(), err.getvalue(), output, time.perf_counter() - start)


def label_volume(path: Path) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Labels, origin, spacing and direction of a NIfTI label map, read with SimpleITK (not with MedAI's reader)."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image.GetOrigin(), image.GetSpacing(), image.GetDirection()


def lossy_flags(document: Any, prefix: str = "") -> dict[str, Any]:
    """Every key (dotted path) of a JSON document whose name contains 'lossy', with its value."""
    found: dict[str, Any] = {}
    if isinstance(document, dict):
        for key, value in document.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if "lossy" in str(key).lower():
                found[path] = value
            found.update(lossy_flags(value, path))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found.update(lossy_flags(value, f"{prefix}[{index}]"))
    return found


def summary(output: Path) -> dict[str, Any]:
    """The summary.json of a run."""
    return json.loads((output / "summary.json").read_text())


# ------------------------------------------------------------------------------------------------- file helpers
def series_files(folder: Path) -> list[Path]:
    """The phantom's slice files, in slice order (0001.dcm …)."""
    return sorted(folder.glob("*.dcm"))


def copy_series(src: Path, dst: Path) -> list[Path]:
    """Copy the phantom series into ``dst``; returns the copies in slice order."""
    dst.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(f, dst / f.name)) for f in series_files(src)]


def edit(path: Path, change: Callable[[Dataset], None], *, write_like_original: bool = False) -> None:
    """Read ``path`` with pydicom, apply ``change`` and write it back in place."""
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=not write_like_original)


def edit_all(paths: Sequence[Path], change: Callable[[int, Dataset], None]) -> None:
    """Apply ``change(index, dataset)`` to every file."""
    for index, path in enumerate(paths):
        edit(path, lambda ds, i=index: change(i, ds))


def delete(*keywords: str) -> Callable[[int, Dataset], None]:
    """An edit that deletes the given attributes."""

    def change(_: int, ds: Dataset) -> None:
        for keyword in keywords:
            if keyword in ds:
                delattr(ds, keyword)

    return change


def replace_bytes(path: Path, old: bytes, new: bytes) -> None:
    """Overwrite ``old`` (which must occur exactly once) by ``new`` of the same length, byte for byte."""
    data = path.read_bytes()
    assert len(old) == len(new), (old, new)
    assert data.count(old) == 1, f"{old!r} occurs {data.count(old)} times in {path.name}"
    path.write_bytes(data.replace(old, new))


def run_tool(*command: str | Path) -> None:
    """Run a dcmtk/gdcm command line; fail the build loudly if it fails."""
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(map(str, command))}: {result.stderr[-2000:]}"


def convert_each(src: Path, dst: Path, tool: Sequence[str]) -> list[Path]:
    """Convert every slice of the series with a dcmtk/gdcm tool called as ``tool… in out``."""
    dst.mkdir(parents=True, exist_ok=True)
    outs = []
    for f in series_files(src):
        run_tool(*tool, f, dst / f.name)
        outs.append(dst / f.name)
    return outs


def transfer_syntax(path: Path) -> str:
    """The TransferSyntaxUID of a file."""
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def new_uid(tag: str) -> str:
    """A deterministic UID for the corpus."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["medai-corpus", tag])


def pydicom_testdata(name: str) -> Path:
    """A test file that pydicom-data ships (fails when it is not installed)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    assert path is not None, f"pydicom test file {name} is not installed (pip install pydicom-data)"
    return Path(path)


def write_nifti(path: Path, array: np.ndarray, spacing: Sequence[float] = PHANTOM_SPACING) -> Path:
    """Write a float32 NIfTI-1 (.nii.gz) byte for byte, so NaN/inf reach the file exactly as given.

    ``array`` is indexed [k, j, i] like MedAI's images; the qform/sform are a plain scaling (RAS).
    """
    data = np.ascontiguousarray(np.asarray(array, dtype="<f4"))  # [k, j, i] in C order: i runs fastest
    nk, nj, ni = array.shape
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, ni, nj, nk, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 16, 32)  # datatype FLOAT32, bitpix
    struct.pack_into("<8f", header, 76, 1.0, *spacing, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<f", header, 108, 352.0)  # vox_offset
    struct.pack_into("<f", header, 112, 1.0)  # scl_slope
    header[123] = 2 | 8  # xyzt_units: mm, s
    struct.pack_into("<hh", header, 252, 1, 1)  # qform_code, sform_code: scanner
    origin = (-ni * spacing[0] / 2, -nj * spacing[1] / 2, -nk * spacing[2] / 2)
    struct.pack_into("<6f", header, 256, 0.0, 0.0, 0.0, *origin)  # quatern b, c, d (identity), qoffset
    struct.pack_into("<4f", header, 280, spacing[0], 0.0, 0.0, origin[0])  # srow_x
    struct.pack_into("<4f", header, 296, 0.0, spacing[1], 0.0, origin[1])  # srow_y
    struct.pack_into("<4f", header, 312, 0.0, 0.0, spacing[2], origin[2])  # srow_z
    header[344:348] = b"n+1\0"
    with gzip.open(path, "wb") as fh:
        fh.write(bytes(header) + b"\0\0\0\0" + data.tobytes())
    return path


@contextlib.contextmanager
def traced_peak() -> Iterator[list[int]]:
    """Measure the peak of Python/numpy heap allocations (tracemalloc) inside the block, in bytes."""
    import tracemalloc

    box: list[int] = []
    tracemalloc.start()
    try:
        yield box
    finally:
        box.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
