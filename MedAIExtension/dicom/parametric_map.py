"""DICOM Parametric Map of an explanation map (Grad-CAM, occlusion, integrated gradients, uncertainty).

The map is written with highdicom's ``ParametricMap`` on the grid of the source series, one frame per source
slice, each frame referencing its source image (Derivation Image Sequence). Values are stored as 32-bit floats
(Float Pixel Data) with an identity Real World Value Mapping, so a float32 map reads back bit for bit; a
float64 map is rounded to float32 (relative precision 2**-24, about 6e-8).

What a PACS user sees, and what :func:`read_parametric_map_info` reads back:

- Series Description (default ``"MedAI <method title> <target>"``), Content Label and Content Description
  (``"<method title> for <target>, <model> <version>"``); Content Qualification ``RESEARCH`` (not a product
  approved for clinical use).
- The Real World Value Mapping: LUT Label = the method key (``"gradcam"``), LUT Explanation =
  ``"<method title> for <target>"``, the unit (UCUM, default ``"1"`` = no units) and a Quantity Definition
  Sequence of three content items:

  - (246205007, SCT, "Quantity") = the standard quantity of the map. DICOM PS3.16 CID 7180 has codes for
    explanation maps: (130403, DCM, "Gradient-weighted class activation") for Grad-CAM and Grad-CAM++,
    (130404, DCM, "Saliency") for occlusion sensitivity and integrated gradients. Predictive entropy has no
    standard code, so the uncertainty map uses (PREDENTROPY, 99MEDAI, "Predictive entropy").
  - (370129005, SCT, "Measurement Method") = the explanation method, a private code
    (``<METHOD>``, 99MEDAI, ``<method title>``), e.g. (GRADCAM, 99MEDAI, "Grad-CAM"): no standard code names
    these methods.
  - (TARGET, 99MEDAI, "Explained target") = TEXT: the class or label whose score the map explains.

  The private scheme ``99MEDAI`` is declared in the Coding Scheme Identification Sequence.
- The model: a Contributing Equipment item (purpose "Processing Equipment") with Manufacturer, Manufacturer's
  Model Name = model name, Software Versions = model version and a Contribution Description in words. The
  object's own Manufacturer's Model Name is the model name too (as in the SEG), Software Versions MedAI's.

Each frame's derivation code is highdicom's default (112187, DCM, "Unspecified method of calculation"): CID 7203
"Image Derivation" has no code for a model explanation. Body Part Examined and Laterality are copied from the
source series.

highdicom, pydicom and SimpleITK are imported lazily inside the functions that need them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension import __version__
from MedAIExtension.atomic import save_dataset
from MedAIExtension.dicom.map_methods import ExplainMethod
from MedAIExtension.dicom.source import (
    POSITION_TOLERANCE_MM,
    check_frame_of_reference,
    copy_anatomy,
    load_source_datasets,
    reference_sop_uids,
)
from MedAIExtension.dicom.values import coded_concept, long_string
from MedAIExtension.errors import GeometryError, InputError, OutputError
from MedAIExtension.io.dicom_metadata import series_metadata
from MedAIExtension.io.geometry import LPS_TO_RAS
from MedAIExtension.io.image import Image
from MedAIExtension.io.resample import resample_array
from MedAIExtension.labels import CodedTerm

__all__ = [
    "PARAMETRIC_MAP_STORAGE",
    "ParametricMapInfo",
    "quantity_of",
    "read_parametric_map",
    "read_parametric_map_info",
    "write_parametric_map",
]

#: SOP Class UID of the Parametric Map Storage IOD.
PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"

_PRIVATE_SCHEME = "99MEDAI"  # the same private scheme as the tracking SR (dicom.sr.PRIVATE_SCHEME)
_SH_MAX = 16
_FLOAT32_MAX = float(np.finfo(np.float32).max)

_QUANTITY = CodedTerm("246205007", "SCT", "Quantity")
_MEASUREMENT_METHOD = CodedTerm("370129005", "SCT", "Measurement Method")
_TARGET = CodedTerm("TARGET", _PRIVATE_SCHEME, "Explained target")
_GRADCAM_QUANTITY = CodedTerm("130403", "DCM", "Gradient-weighted class activation")
_SALIENCY = CodedTerm("130404", "DCM", "Saliency")
_QUANTITIES: dict[ExplainMethod, CodedTerm] = {
    ExplainMethod.GRADCAM: _GRADCAM_QUANTITY,
    ExplainMethod.GRADCAMPP: _GRADCAM_QUANTITY,
    ExplainMethod.OCCLUSION: _SALIENCY,
    ExplainMethod.IG: _SALIENCY,
    ExplainMethod.UNCERTAINTY: CodedTerm("PREDENTROPY", _PRIVATE_SCHEME, "Predictive entropy"),
}
_UNIT_MEANINGS = {"1": "no units", "%": "Percent", "bit": "bit", "[nat]": "nat"}
_NOT_FOR_DIAGNOSIS = "Explanation of a model output for review, not for diagnosis."


@dataclass(frozen=True)
class ParametricMapInfo:
    """What a MedAI Parametric Map records about its map (see the module docstring for where each is stored).

    Attributes:
        method: the method key (``"gradcam"``, ``"occlusion"``, ...); the LUT Label for maps of other software.
        method_title: the method's name for people (``"Grad-CAM"``); empty if not recorded.
        target: the class or label whose score the map explains; empty if not recorded.
        model_name: the model that was explained; empty if not recorded.
        model_version: that model's version; empty if not recorded.
        units: the UCUM code of the values (``"1"`` = no units).
        quantity: the meaning of the quantity code (``"Saliency"``); empty if not recorded.
        lut_label: the Real World Value Mapping's LUT Label.
        value_range: the first and last real-world value mapped (the map's minimum and maximum).
        study_instance_uid: the study (that of the source series).
        series_instance_uid: the Parametric Map's series.
        sop_instance_uid: the Parametric Map instance.
        frame_of_reference_uid: the patient coordinate system (that of the source series).
        source_series_instance_uids: the series the map references (the source CT/MR series).
        series_description: the Series Description.
        content_label: the Content Label.
        content_description: the Content Description.
    """

    method: str
    method_title: str
    target: str
    model_name: str
    model_version: str
    units: str
    quantity: str
    lut_label: str
    value_range: tuple[float, float]
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    frame_of_reference_uid: str
    source_series_instance_uids: tuple[str, ...]
    series_description: str
    content_label: str
    content_description: str


def quantity_of(method: str | ExplainMethod) -> CodedTerm:
    """The quantity code a Parametric Map of ``method`` records (standard DCM code where one exists).

    Raises:
        InputError: ``method`` is not an explanation method.
    """
    return _QUANTITIES[ExplainMethod.parse(method)]


# ---- writing ------------------------------------------------------------------------------------------------


def _required_text(name: str, value: str) -> str:
    text = str(value or "").strip()
    if not text:
        raise InputError(f"{name} is empty; the Parametric Map records it so a reader knows what the map shows.")
    return text


def _map_values(values: Image) -> np.ndarray:
    """The map as float32, after checking it holds finite numbers a 32-bit float can store."""
    array = np.asarray(values.array)
    if array.dtype == bool:
        array = array.astype(np.float32)
    if not np.issubdtype(array.dtype, np.integer) and not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"The map holds {array.dtype} values; a Parametric Map stores real numbers.")
    if not np.isfinite(array).all():  # an Image rejects NaN already; kept for arrays changed in place
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(
            f"The map contains {bad} NaN or infinite value(s). Replace them (e.g. with 0) before writing the map."
        )
    peak = float(np.abs(array).max())
    if peak > _FLOAT32_MAX:
        raise InputError(
            f"The map holds values up to {peak:.3g}, beyond the 32-bit float range the Parametric Map stores "
            f"(±{_FLOAT32_MAX:.3g}). Rescale the map (e.g. normalise it to 0..1) before writing it."
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def _units_code(units: str) -> CodedTerm:
    code = str(units or "").strip()
    if not code or len(code) > _SH_MAX or "\\" in code:
        raise InputError(f"units {units!r} is not a UCUM code of at most 16 characters; use '1' for a unitless map.")
    return CodedTerm(code, "UCUM", _UNIT_MEANINGS.get(code, code))


def _content_label(text: str) -> str:
    label = re.sub(r"[^A-Z0-9_ ]", "_", str(text).upper())[:_SH_MAX].strip()
    return label or "MEDAIMAP"


def _quantity_definition(method: ExplainMethod, method_title: str, target: str) -> list[Any]:
    """The Quantity Definition Sequence: quantity, measurement method and explained target."""
    import highdicom as hd

    return [
        hd.sr.CodeContentItem(name=coded_concept(_QUANTITY), value=coded_concept(_QUANTITIES[method])),
        hd.sr.CodeContentItem(
            name=coded_concept(_MEASUREMENT_METHOD),
            value=coded_concept(CodedTerm(method.value.upper(), _PRIVATE_SCHEME, method_title)),
        ),
        hd.sr.TextContentItem(name=coded_concept(_TARGET), value=target),
    ]


def write_parametric_map(
    values: Image,
    source: Image,
    path: str | os.PathLike[str],
    *,
    method: str | ExplainMethod,
    method_title: str | None = None,
    target: str,
    model_name: str,
    model_version: str,
    units: str = "1",
    series_description: str | None = None,
    series_number: int = 310,
    content_label: str = "MEDAIMAP",
    manufacturer: str = "MedAI",
) -> Path:
    """Write an explanation map as a DICOM Parametric Map that references its source series.

    The map is stored as 32-bit floats with an identity real-world value mapping (float32 maps are kept
    exactly), one frame per source slice in the source's study and frame of reference. The method, target and
    model are recorded as described in the module docstring. The file is written atomically: on any error no
    file is left at ``path``.

    Args:
        values: the map, on the grid of ``source`` (same shape and affine).
        source: the image the map explains, read with
            :func:`~MedAIExtension.io.dicom_series.read_dicom_series` (its ``source_files`` are referenced).
        path: output file (``.dcm``).
        method: the explanation method (:class:`~MedAIExtension.dicom.map_methods.ExplainMethod` or its key).
        method_title: the method's name for people; ``None`` = the method's title (``"Grad-CAM"``).
        target: the class or label whose score the map explains (e.g. ``"Nodule"``).
        model_name: the model that was explained.
        model_version: that model's version.
        units: UCUM code of the map values (``"1"``: unitless).
        series_description: Series Description; ``None`` = ``"MedAI <method title> <target>"``.
        series_number: Series Number of the map's series.
        content_label: Content Label (upper case code string, at most 16 characters).
        manufacturer: Manufacturer of the software that made the map.

    Returns:
        The written path.

    Raises:
        GeometryError: the map is not on the source grid, or the source files do not match the source.
        InputError: NaN/infinite or out-of-range values, an unknown method, empty names, or a source without
            its DICOM files.
        OutputError: the file cannot be written.
    """
    import highdicom as hd
    from highdicom.coding_schemes import CodingSchemeIdentificationItem
    from pydicom.sr.codedict import codes

    if not values.same_grid(source):
        raise GeometryError(
            f"The map (shape {values.shape}) is not on the grid of the source series (shape {source.shape}) or "
            "their affines differ. A Parametric Map stores one frame per source slice: resample the map onto the "
            "source image grid (linear) before writing it."
        )
    explain_method = ExplainMethod.parse(method)
    title = _required_text("method_title", method_title or explain_method.display_name)
    target_name = _required_text("target", target)
    model = _required_text("model_name", model_name)
    version = _required_text("model_version", model_version)
    unit = _units_code(units)
    output = Path(path)
    if not output.parent.is_dir():
        raise OutputError(f"The folder {output.parent} does not exist; create it or choose another output path.")
    pixels = _map_values(values)
    source_datasets = load_source_datasets(source, "Parametric Map")

    low, high = float(pixels.min()), float(pixels.max())
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=explain_method.value,
        lut_explanation=long_string(f"{title} for {target_name}"),
        unit=coded_concept(unit),
        value_range=(low, high),
        slope=1.0,
        intercept=0.0,
    )
    mapping.QuantityDefinitionSequence = _quantity_definition(explain_method, title, target_name)
    # LINEAR_EXACT: maps of probabilities or normalised relevance span less than 1, which plain LINEAR forbids
    window = hd.VOILUTTransformation(
        window_center=(low + high) / 2.0,
        window_width=max(high - low, 1e-6),
        window_explanation="map range",
        voi_lut_function=hd.VOILUTFunctionValues.LINEAR_EXACT,
    )
    model_equipment = hd.ContributingEquipment(
        manufacturer=long_string(manufacturer),
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=long_string(model),
        software_versions=long_string(version),
        contribution_description=f"{title} map of the score of '{target_name}' computed from model {model} "
        f"{version} by MedAI {__version__}. {_NOT_FOR_DIAGNOSIS}",
    )
    private_scheme = CodingSchemeIdentificationItem(
        designator=_PRIVATE_SCHEME, name="MedAI private codes", responsible_organization="MedAI"
    )
    description = series_description if series_description is not None else f"MedAI {title} {target_name}"
    try:
        parametric_map = hd.pm.ParametricMap(
            source_images=source_datasets,
            pixel_array=pixels,
            series_instance_uid=hd.UID(),
            series_number=int(series_number),
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=long_string(manufacturer),
            manufacturer_model_name=long_string(model),
            software_versions=long_string(f"MedAI {__version__}"),
            device_serial_number="0",
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[mapping],
            voi_lut_transformations=[window],
            content_label=_content_label(content_label),
            content_description=long_string(f"{title} for {target_name}, {model} {version}"),
            contributing_equipment=[model_equipment],
            series_description=long_string(description),
            coding_schemes=[private_scheme],
        )
    except (ValueError, TypeError) as exc:
        raise InputError(f"highdicom cannot build the Parametric Map ({exc}); check the map and its source.") from None
    if "ContentCreatorName" not in parametric_map:
        parametric_map.ContentCreatorName = None  # Type 2: present, empty for an automatic result
    copy_anatomy(parametric_map, source_datasets[0])
    return save_dataset(parametric_map, output, "Parametric Map")


# ---- reading ------------------------------------------------------------------------------------------------
def _open_map(path: Path) -> Any:
    """Read ``path`` with highdicom, turning its failure types into one :class:`InputError`."""
    import highdicom as hd
    from pydicom.errors import InvalidDicomError

    try:
        return hd.pm.ParametricMap.from_file(path)
    except (OSError, ValueError, TypeError, AttributeError, KeyError, InvalidDicomError) as exc:
        raise InputError(
            f"Cannot read {path} as a DICOM Parametric Map ({exc}). Check that it is a Parametric Map file."
        ) from None


def _first_mapping(dataset: Any) -> Any:
    """The first Real World Value Mapping item (shared functional groups, else the first frame's)."""
    for groups in (dataset.get("SharedFunctionalGroupsSequence"), dataset.get("PerFrameFunctionalGroupsSequence")):
        if groups and "RealWorldValueMappingSequence" in groups[0]:
            return groups[0].RealWorldValueMappingSequence[0]
    return None


def _concept_value(item: Any) -> Any:
    sequence = item.get("ConceptCodeSequence")
    return sequence[0] if sequence else None


def read_parametric_map_info(path: str | os.PathLike[str]) -> ParametricMapInfo:
    """The method, target, model, units and UIDs a Parametric Map records (headers only, no pixel data).

    Maps of other software give what they hold; fields they do not record are empty strings.

    Raises:
        InputError: the file is not a readable DICOM Parametric Map.
    """
    import pydicom

    path = Path(path)
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise InputError(f"Cannot read {path} ({exc}); give a DICOM Parametric Map file.") from None
    if str(dataset.get("SOPClassUID", "")) != PARAMETRIC_MAP_STORAGE:
        raise InputError(
            f"{path.name} is not a Parametric Map (SOP class {dataset.get('SOPClassUID', 'missing')}); "
            "give the map file written by write_parametric_map."
        )
    mapping = _first_mapping(dataset)
    method = title = target = quantity = units = lut_label = ""
    value_range = (float("nan"), float("nan"))
    if mapping is not None:
        lut_label = str(mapping.get("LUTLabel", ""))
        method = lut_label
        units_sequence = mapping.get("MeasurementUnitsCodeSequence")
        units = str(units_sequence[0].CodeValue) if units_sequence else ""
        if "DoubleFloatRealWorldValueFirstValueMapped" in mapping:
            value_range = (
                float(mapping.DoubleFloatRealWorldValueFirstValueMapped),
                float(mapping.DoubleFloatRealWorldValueLastValueMapped),
            )
        elif "RealWorldValueFirstValueMapped" in mapping:
            slope = float(mapping.get("RealWorldValueSlope", 1.0))
            intercept = float(mapping.get("RealWorldValueIntercept", 0.0))
            first, last = (
                float(mapping[keyword].value) * slope + intercept
                for keyword in ("RealWorldValueFirstValueMapped", "RealWorldValueLastValueMapped")
            )
            value_range = (first, last)
        for item in mapping.get("QuantityDefinitionSequence", []):
            name = item.ConceptNameCodeSequence[0]
            key = (str(name.CodeValue), str(name.CodingSchemeDesignator))
            concept = _concept_value(item)
            if key == (_QUANTITY.value, _QUANTITY.scheme) and concept is not None:
                quantity = str(concept.CodeMeaning)
            elif key == (_MEASUREMENT_METHOD.value, _MEASUREMENT_METHOD.scheme) and concept is not None:
                if str(concept.CodingSchemeDesignator) == _PRIVATE_SCHEME:
                    method = str(concept.CodeValue).lower()
                title = str(concept.CodeMeaning)
            elif key == (_TARGET.value, _TARGET.scheme):
                target = str(item.get("TextValue", ""))
    model_name = model_version = ""
    for equipment in dataset.get("ContributingEquipmentSequence", []):
        purpose = equipment.get("PurposeOfReferenceCodeSequence")
        name = str(equipment.get("ManufacturerModelName", ""))
        # The model is the first Processing Equipment (109102, DCM); highdicom lists itself after it.
        if purpose and str(purpose[0].CodeValue) == "109102" and name != "highdicom":
            model_name = name
            versions = equipment.get("SoftwareVersions", "")
            model_version = str(versions if isinstance(versions, str) else (versions[0] if versions else ""))
            break
    return ParametricMapInfo(
        method=method,
        method_title=title,
        target=target,
        model_name=model_name,
        model_version=model_version,
        units=units,
        quantity=quantity,
        lut_label=lut_label,
        value_range=value_range,
        study_instance_uid=str(dataset.get("StudyInstanceUID", "")),
        series_instance_uid=str(dataset.get("SeriesInstanceUID", "")),
        sop_instance_uid=str(dataset.get("SOPInstanceUID", "")),
        frame_of_reference_uid=str(dataset.get("FrameOfReferenceUID", "")),
        source_series_instance_uids=tuple(
            str(item.SeriesInstanceUID) for item in dataset.get("ReferencedSeriesSequence", [])
        ),
        series_description=str(dataset.get("SeriesDescription", "")),
        content_label=str(dataset.get("ContentLabel", "")),
        content_description=str(dataset.get("ContentDescription", "")),
    )


def _check_frame_positions(parametric_map: Any, reference: Image, reference_uids: list[str], path: Path) -> None:
    """Each frame must lie where its source slice lies in the reference image."""
    slice_of = {uid: k for k, uid in enumerate(reference_uids)}
    lps = reference.ijk_to_lps
    for frame in parametric_map.PerFrameFunctionalGroupsSequence:
        derivation = frame.get("DerivationImageSequence")
        positions = frame.get("PlanePositionSequence")
        if not derivation or not positions:
            continue
        uid = str(derivation[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        k = slice_of.get(uid)
        if k is None:
            continue
        expected = lps[:3, 2] * k + lps[:3, 3]
        position = np.array(positions[0].ImagePositionPatient, dtype=float)
        if not np.allclose(position, expected, atol=POSITION_TOLERANCE_MM + 1e-4 * np.abs(expected).max()):
            raise GeometryError(
                f"A frame of {path.name} lies at {position.round(3).tolist()} mm but its source slice {k} of the "
                f"reference image is at {expected.round(3).tolist()} mm: the map does not match the reference. "
                "Read the map onto the series it was computed from (read_dicom_series, slices not reordered)."
            )


def _volume_image(volume: Any, metadata: dict[str, str]) -> Image:
    """A highdicom ``Volume`` (array [slice, row, column], affine to LPS) as an :class:`Image`."""
    affine = np.asarray(volume.affine, dtype=float)
    lps = np.eye(4)
    lps[:3, :3] = affine[:3, :3][:, [2, 1, 0]]  # (slice, row, column) -> (i = column, j = row, k = slice)
    lps[:3, 3] = affine[:3, 3]
    return Image(np.asarray(volume.array, dtype=np.float32), LPS_TO_RAS @ lps, metadata=metadata)


def read_parametric_map(path: str | os.PathLike[str], reference: Image | None = None) -> Image:
    """Read a DICOM Parametric Map into a float32 map of real-world values.

    Pixel values go through the first Real World Value Mapping. Without ``reference`` the map keeps its own
    grid (slices sorted in space by highdicom). With ``reference``: the frame of reference must match; when
    ``reference`` was read from the map's source series, frames are matched by source SOP instance (exact, any
    orientation) and their positions checked against the reference slices; otherwise the map is taken as is
    when it lies on the reference grid, and resampled onto it in physical space (linear, 0 outside) when not.
    Read the recorded method, target and model with :func:`read_parametric_map_info`.

    Args:
        path: the Parametric Map file.
        reference: the image whose grid the map is wanted on (usually the source series), or ``None``.

    Returns:
        The map as a float32 image; its metadata holds the map's patient, study and series UIDs.

    Raises:
        InputError: the file is not a readable Parametric Map.
        GeometryError: the map is not in the reference's frame of reference, its frames do not lie on their
            source slices, or its frames form no regular volume and the reference is not its source series.
    """
    path = Path(path)
    parametric_map = _open_map(path)
    metadata = series_metadata(parametric_map)
    if reference is not None:
        check_frame_of_reference(parametric_map, reference, path, "Parametric Map")
        reference_uids = reference_sop_uids(reference)
        referenced = {uids[2] for uids in parametric_map.get_source_image_uids()}
        if reference_uids is not None and referenced and referenced <= set(reference_uids):
            _check_frame_positions(parametric_map, reference, reference_uids, path)
            try:
                array = parametric_map.get_pixels_by_source_instance(
                    source_sop_instance_uids=reference_uids,
                    apply_real_world_transform=True,
                    dtype=np.float64,
                )
            except (ValueError, KeyError, RuntimeError) as exc:
                raise GeometryError(
                    f"The frames of {path.name} cannot be matched to the reference slices ({exc}). Read the map "
                    "onto the complete series it was computed from."
                ) from None
            return reference.with_array(
                np.asarray(array, dtype=np.float32), source_files=(), modality="", metadata=metadata
            )
    try:
        volume = parametric_map.get_volume(apply_real_world_transform=True, dtype=np.float64)
    except (ValueError, RuntimeError) as exc:
        raise GeometryError(
            f"The frames of {path.name} do not form a regular volume ({exc}); read it onto the DICOM series it "
            "was made from (read_dicom_series) so that frames are matched by source image."
        ) from None
    image = _volume_image(volume, metadata)
    if reference is None:
        return image
    array = _flipped_onto(image, reference)
    if array is None:
        array = _resample_linear(image, reference)
    return reference.with_array(array, source_files=(), modality="", metadata=metadata)


def _flipped_onto(image: Image, reference: Image) -> np.ndarray | None:
    """The map's voxels on the reference grid when the two grids differ at most by reversed axes, else None.

    highdicom sorts the frames in space, which may reverse the slice order of the source series; reversing it
    back keeps the values exact where resampling would interpolate.
    """
    if image.shape != reference.shape:
        return None
    lps = image.ijk_to_lps
    for flips in np.ndindex(2, 2, 2):  # flips of (i, j, k)
        affine = lps.copy()
        for axis, flip in enumerate(flips):
            if flip:
                affine[:3, 3] += affine[:3, axis] * (image.size_ijk[axis] - 1)
                affine[:3, axis] *= -1
        if np.allclose(LPS_TO_RAS @ affine, reference.ijk_to_ras, atol=1e-4):
            # array axes are (k, j, i): axis 0 of the array is flips[2]
            index = tuple(slice(None, None, -1) if flips[2 - axis] else slice(None) for axis in range(3))
            return np.ascontiguousarray(image.array[index])
    return None


def _resample_linear(image: Image, reference: Image) -> np.ndarray:
    """Linear resampling of ``image`` onto the reference grid in physical space (0 outside the map)."""
    if not reference.is_orthogonal() or not image.is_orthogonal():
        raise GeometryError(
            "The map or the reference image has non-perpendicular axes (sheared, e.g. gantry tilt), so the map "
            "cannot be resampled in physical space. Read the map onto its source series (read_dicom_series)."
        )
    return resample_array(image, reference.ijk_to_ras, reference.shape, linear=True, fill=0.0).astype(np.float32)
