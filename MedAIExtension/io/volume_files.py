"""NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd) volumes through SimpleITK (LPS handled
by ITK), with the checks SimpleITK does not do.

Readers do not report bad values; some hide them:

* SimpleITK's NIfTI reader (niftilib) replaces every NaN and ±inf voxel of a float32/float64 image with 0, and
  replaces a non-finite ``scl_slope``, ``scl_inter``, ``pixdim``, quaternion or ``srow`` value with 0 (a NaN
  ``scl_slope`` silently means "no scaling"). So the stored values of a NIfTI file are checked here, raw: the
  header is parsed (NIfTI-1; NIfTI-2 too, which ITK 5 does not read yet; either byte order, plain or gzip) and
  float voxels are streamed from the file in chunks and counted.
* MetaIO reads a header number it cannot parse (``nan``, ``inf``, text) as 0, e.g. ``Offset = nan 0 0`` gives the
  origin 0. NRRD treats a NaN in ``spacings`` as "unknown" and ITK then uses 1 mm. The geometry fields of both
  text headers are checked here.
* NRRD and MetaImage voxel values keep NaN and inf through ITK; they are counted on the array that ITK returns.

Every problem is an :class:`~MedAIExtension.errors.InputError` (values) or
:class:`~MedAIExtension.errors.GeometryError` (geometry) naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from MedAIExtension.atomic import atomic_path
from MedAIExtension.errors import GeometryError, InputError
from MedAIExtension.io.image import Image

__all__ = ["VOLUME_SUFFIXES", "is_volume_file", "read_volume_file", "write_volume_file"]

VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: NIfTI datatype codes of real floating-point voxels, with their numpy type (byte order added when read).
_NIFTI_FLOAT_TYPES: dict[int, str] = {16: "f4", 64: "f8"}
#: Bytes of voxel data checked at a time (bounded memory on large volumes).
_CHUNK_BYTES = 1 << 24
#: Text headers longer than this are not parsed (the data follows; a real header is a few hundred bytes).
_TEXT_HEADER_LIMIT = 1 << 20
#: MetaImage header keys that place voxels in space.
_META_GEOMETRY_KEYS = frozenset(
    {"offset", "origin", "position", "elementspacing", "elementsize", "transformmatrix", "rotation", "orientation"}
)
#: NRRD axis kinds that are not spatial (their spacing may legitimately be NaN, "unknown").
_NRRD_NON_SPATIAL_KINDS = frozenset(
    {"list", "point", "vector", "covariant-vector", "normal", "stub", "scalar", "complex", "2-vector", "3-color",
     "rgb-color", "hsv-color", "xyz-color", "4-color", "rgba-color", "3-vector", "3-gradient", "3-normal",
     "4-vector", "quaternion", "2d-symmetric-matrix", "2d-masked-symmetric-matrix", "2d-matrix",
     "2d-masked-matrix", "3d-symmetric-matrix", "3d-masked-symmetric-matrix", "3d-matrix", "3d-masked-matrix"}
)  # fmt: skip


def is_volume_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a volume-file suffix MedAI reads."""
    name = Path(path).name.lower()
    return any(name.endswith(suffix) for suffix in VOLUME_SUFFIXES)


def read_volume_file(path: str | os.PathLike[str], modality: str = "") -> Image:
    """Read a NIfTI/NRRD/MetaImage volume, refusing NaN/inf voxel values and non-finite geometry.

    Args:
        path: the volume file (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``).
        modality: DICOM modality to record on the image (``"CT"``, ``"MR"``), if known.

    Returns:
        The image, with ``metadata["SourceFile"]`` set.

    Raises:
        InputError: the file is missing or unreadable, 2D, not scalar, holds NaN or infinite voxel values, or
            (NIfTI) its intensity scaling ``scl_slope``/``scl_inter`` is not finite.
        GeometryError: the header's spacing, origin or orientation holds NaN, infinite or unreadable numbers.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist. Check the --input path.")
    name = path.name.lower()
    nifti = _read_nifti_header(path) if name.endswith((".nii", ".nii.gz")) else None
    if nifti is not None:
        _check_nifti_header(path, nifti)
        _check_nifti_length(path, nifti)
    elif name.endswith((".nrrd", ".nhdr")):
        _check_nrrd_header(path)
    elif name.endswith((".mha", ".mhd")):
        _check_meta_header(path)
    try:
        sitk_image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        if nifti is not None and nifti.version == 2:
            raise InputError(
                f"Cannot read {path.name}: it is a NIfTI-2 file, which the volume reader (ITK) does not read. Save "
                "it as NIfTI-1 (e.g. with nibabel's Nifti1Image) or NRRD and rerun."
            ) from None
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise InputError(
            f"Cannot read {path.name} as a volume ({first_line}). Give a valid .nii.gz, .nrrd or DICOM folder."
        ) from None
    if nifti is not None and nifti.datatype in _NIFTI_FLOAT_TYPES:
        nan, inf, total = _count_nifti_nonfinite(path, nifti)
        _refuse_nonfinite(path, nan, inf, total)
    if sitk_image.GetDimension() == 3 and sitk_image.GetNumberOfComponentsPerPixel() == 1:
        values = sitk.GetArrayViewFromImage(sitk_image)
        if np.issubdtype(values.dtype, np.floating):
            _refuse_nonfinite(path, *_count_nonfinite(values), values.size)
    return Image.from_sitk(sitk_image, modality=modality, metadata={"SourceFile": str(path)})


def write_volume_file(image: Image, path: str | os.PathLike[str], compress: bool = True) -> Path:
    """Write ``image`` to ``path`` (format from the suffix) atomically."""
    import SimpleITK as sitk

    path = Path(path)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image.to_sitk(), str(tmp), compress)
    return path


# ---- voxel values ----------------------------------------------------------------------------------------------
def _count_nonfinite(values: np.ndarray) -> tuple[int, int]:
    """``(NaN count, ±inf count)`` of a float array."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return 0, 0
    nan = int(np.count_nonzero(np.isnan(values)))
    return nan, int(np.count_nonzero(bad)) - nan


def _refuse_nonfinite(path: Path, nan: int, inf: int, total: int) -> None:
    """Raise :class:`InputError` naming the file and the counts when any voxel value is NaN or infinite."""
    if nan == 0 and inf == 0:
        return
    if nan == total:
        what = f"all {total} voxel values are NaN (not a number)"
    elif inf == total:
        what = f"all {total} voxel values are infinite"
    else:
        parts = [f"{nan} NaN (not a number)"] if nan else []
        parts += [f"{inf} infinite"] if inf else []
        what = f"{' and '.join(parts)} voxel value(s) of {total}"
    raise InputError(
        f"{path.name}: {what}. MedAI does not guess values for them (some readers silently turn them into 0, "
        "which gives wrong results). Replace them with a real value (e.g. the background: -1000 HU for air in CT) "
        "or crop them away, save the volume again and rerun."
    )


# ---- NIfTI -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _NiftiHeader:
    """The fields of a NIfTI-1/NIfTI-2 header that the checks need."""

    version: int  # 1 or 2
    byteorder: str  # "<" or ">"
    datatype: int
    shape: tuple[int, ...]
    vox_offset: int
    scl_slope: float
    scl_inter: float
    pixdim: tuple[float, ...]  # pixdim[0] (qfac) .. pixdim[3]
    qform_code: int
    sform_code: int
    quaternion: tuple[float, ...]  # quatern_b, c, d, qoffset_x, y, z
    srow: tuple[float, ...]  # srow_x, srow_y, srow_z (12 values)
    bitpix: int = 0  # bits per voxel


def _open_raw(path: Path) -> io.BufferedIOBase:
    """Open ``path`` for reading its stored bytes, decompressing gzip (detected from the magic bytes)."""
    with path.open("rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else path.open("rb")


def _read_nifti_header(path: Path) -> _NiftiHeader | None:
    """Parse the NIfTI header of ``path``; ``None`` when it is not one (ITK then reports the problem)."""
    try:
        with _open_raw(path) as stream:
            head = stream.read(540)
    except (OSError, EOFError, zlib.error):
        return None
    for order in "<>":
        if len(head) >= 348 and struct.unpack_from(f"{order}i", head, 0)[0] == 348:
            version = 1
            dims = struct.unpack_from(f"{order}8h", head, 40)
            datatype, bitpix = struct.unpack_from(f"{order}2h", head, 70)
            pixdim = struct.unpack_from(f"{order}8f", head, 76)
            vox_offset, slope, inter = struct.unpack_from(f"{order}3f", head, 108)
            qform, sform = struct.unpack_from(f"{order}2h", head, 252)
            quaternion = struct.unpack_from(f"{order}6f", head, 256)
            srow = struct.unpack_from(f"{order}12f", head, 280)
        elif len(head) >= 540 and struct.unpack_from(f"{order}i", head, 0)[0] == 540:
            version = 2
            datatype, bitpix = struct.unpack_from(f"{order}2h", head, 12)
            dims = struct.unpack_from(f"{order}8q", head, 16)
            pixdim = struct.unpack_from(f"{order}8d", head, 104)
            vox_offset = struct.unpack_from(f"{order}q", head, 168)[0]
            slope, inter = struct.unpack_from(f"{order}2d", head, 176)
            qform, sform = struct.unpack_from(f"{order}2i", head, 344)
            quaternion = struct.unpack_from(f"{order}6d", head, 352)
            srow = struct.unpack_from(f"{order}12d", head, 400)
        else:
            continue
        ndim = int(dims[0])
        if not 1 <= ndim <= 7 or not math.isfinite(vox_offset) or vox_offset < 0:
            return None  # not a header ITK would read either: let it say so
        return _NiftiHeader(
            version=version,
            byteorder=order,
            datatype=int(datatype),
            shape=tuple(max(int(d), 1) for d in dims[1 : ndim + 1]),
            vox_offset=int(vox_offset),
            scl_slope=float(slope),
            scl_inter=float(inter),
            pixdim=tuple(float(v) for v in pixdim[:4]),
            qform_code=int(qform),
            sform_code=int(sform),
            quaternion=tuple(float(v) for v in quaternion),
            srow=tuple(float(v) for v in srow),
            bitpix=int(bitpix),
        )
    return None


def _stored_bytes(path: Path) -> int | None:
    """How many bytes ``path`` holds once decompressed; None when its gzip stream is cut short or corrupt."""
    total = 0
    try:
        with _open_raw(path) as stream:
            while block := stream.read(_CHUNK_BYTES):
                total += len(block)
    except (EOFError, zlib.error, OSError):
        return None
    return total


def _check_nifti_length(path: Path, header: _NiftiHeader) -> None:
    """Refuse a NIfTI file whose voxel data is shorter than its header says (a cut download or copy).

    ITK reads a truncated ``.nii.gz`` without an error and returns a partly empty volume.
    """
    if header.bitpix <= 0:
        return
    expected = header.vox_offset + int(np.prod(header.shape, dtype=np.int64)) * header.bitpix // 8
    with path.open("rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        if gzipped and raw.seek(0, os.SEEK_END) >= 18:
            raw.seek(-4, os.SEEK_END)  # the gzip trailer's ISIZE: the uncompressed length modulo 2**32
            if struct.unpack("<I", raw.read(4))[0] == expected % 2**32:
                return  # complete (a cut stream ends in compressed data, which matches by chance 1 in 2**32)
        elif not gzipped and raw.seek(0, os.SEEK_END) >= expected:
            return
    stored = _stored_bytes(path)  # decompress it all: a cut stream, or a longer one (extensions, several members)
    if stored is None or stored < expected:
        held = "a gzip stream cut short" if stored is None else f"{stored} bytes"
        raise InputError(
            f"{path.name} is truncated: its header promises {expected} bytes of voxel data and header, the file "
            f"holds {held}. Copy or export the file again and rerun."
        )


def _check_nifti_header(path: Path, header: _NiftiHeader) -> None:
    """Refuse non-finite intensity scaling and geometry, which niftilib silently turns into 0."""
    if not (math.isfinite(header.scl_slope) and math.isfinite(header.scl_inter)):
        raise InputError(
            f"{path.name}: the header's intensity scaling is not a number (scl_slope={header.scl_slope}, "
            f"scl_inter={header.scl_inter}), so the voxel values are unknown (readers disagree: some ignore it "
            "silently). Fix the header (scl_slope 0 or 1 and scl_inter 0 when the stored values are already in "
            "the right units, e.g. with nibabel) and rerun."
        )
    broken = []
    ndim = min(len(header.shape), 3)
    if not all(math.isfinite(v) for v in header.pixdim[1 : ndim + 1]):
        broken.append("pixdim (voxel spacing)")
    if header.qform_code > 0 and not all(math.isfinite(v) for v in (header.pixdim[0], *header.quaternion)):
        broken.append("qform (quatern_b/c/d, qoffset_x/y/z)")
    if header.sform_code > 0 and not all(math.isfinite(v) for v in header.srow):
        broken.append("sform (srow_x/y/z)")
    if broken:
        raise GeometryError(
            f"{path.name}: the header's geometry holds NaN or infinite numbers in {', '.join(broken)}, so the "
            "voxels cannot be placed in space. Fix the spacing and orientation in the file (re-save it from the "
            "tool that made it) and rerun."
        )


def _count_nifti_nonfinite(path: Path, header: _NiftiHeader) -> tuple[int, int, int]:
    """``(NaN count, ±inf count, voxel count)`` of the stored float voxels of a NIfTI file, read raw in chunks."""
    dtype = np.dtype(header.byteorder + _NIFTI_FLOAT_TYPES[header.datatype])
    total = int(np.prod(header.shape, dtype=np.int64))
    remaining = total * dtype.itemsize
    chunk_bytes = _CHUNK_BYTES - _CHUNK_BYTES % dtype.itemsize
    nan = inf = 0
    with _open_raw(path) as stream:
        stream.seek(header.vox_offset)
        while remaining > 0:
            block = stream.read(min(chunk_bytes, remaining))
            usable = len(block) - len(block) % dtype.itemsize
            if usable == 0:
                break  # shorter than declared: ITK has refused such a file already
            more_nan, more_inf = _count_nonfinite(np.frombuffer(block, dtype=dtype, count=usable // dtype.itemsize))
            nan += more_nan
            inf += more_inf
            remaining -= usable
    return nan, inf, total


# ---- NRRD and MetaImage text headers ---------------------------------------------------------------------------
def _header_lines(path: Path, detached: bool) -> list[str]:
    """The text header lines of an NRRD/MetaImage file (all of a detached header, else up to the data)."""
    try:
        with path.open("rb") as stream:
            raw = stream.read(_TEXT_HEADER_LIMIT)
    except OSError:
        return []  # ITK reports the unreadable file
    text = raw.decode("latin-1")
    lines = []
    for line in text.splitlines():
        if not detached and not line.strip():
            break  # NRRD: the blank line before the data
        lines.append(line)
        if line.strip().lower().startswith("elementdatafile"):
            break  # MetaImage: the last header line
    return lines


def _not_finite(tokens: list[str]) -> bool:
    """Whether any of the number ``tokens`` is not a finite number (NaN, inf or not a number at all)."""
    for token in tokens:
        try:
            if not math.isfinite(float(token)):
                return True
        except ValueError:
            return True
    return False


def _check_meta_header(path: Path) -> None:
    """Refuse a MetaImage header whose geometry numbers MetaIO would silently read as 0."""
    broken = []
    for line in _header_lines(path, detached=path.name.lower().endswith(".mhd")):
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() in _META_GEOMETRY_KEYS and _not_finite(value.split()):
            broken.append(f"{key.strip()} = {value.strip()}")
    if broken:
        raise GeometryError(
            f"{path.name}: the header's geometry is not a list of finite numbers ({'; '.join(broken)}); ITK would "
            "silently read it as 0. Fix the spacing, origin and orientation in the header and rerun."
        )


def _check_nrrd_header(path: Path) -> None:
    """Refuse an NRRD header whose spatial ``spacings`` are NaN/inf (ITK would silently use 1 mm)."""
    fields: dict[str, str] = {}
    for line in _header_lines(path, detached=path.name.lower().endswith(".nhdr"))[1:]:
        if line.startswith("#") or ":=" in line:
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    if "spacings" not in fields:
        return  # geometry in "space directions"/"space origin": ITK refuses NaN there itself
    spacings = fields["spacings"].split()
    kinds = fields.get("kinds", "").lower().split()
    spatial = [s for axis, s in enumerate(spacings) if axis >= len(kinds) or kinds[axis] not in _NRRD_NON_SPATIAL_KINDS]
    if _not_finite(spatial):
        raise GeometryError(
            f"{path.name}: the header's spacings ({fields['spacings']}) are not all finite numbers, so the voxel "
            "size is unknown (ITK would silently use 1 mm and every volume would be wrong). Write the real spacing "
            "into the header and rerun."
        )
