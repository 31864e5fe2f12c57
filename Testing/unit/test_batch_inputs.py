"""``medai batch`` without Ray: finding the studies (tree, manifest), their references, and the DICOM acquisition."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from MedAIExtension.batch.inputs import discover_studies
from MedAIExtension.batch.records import study_key
from MedAIExtension.batch.study import acquisition_of
from MedAIExtension.errors import InputError
from MedAIExtension.io.loader import load_image
from MedAIExtension.phantom.study import write_phantom_study


@pytest.fixture(scope="module")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_phantom_study(tmp_path_factory.mktemp("p"), size_ijk=(32, 32, 12), spacing=(4.0, 4.0, 6.0), seed=2)


def _copy_as_new_series(source: Path, target: Path, **tags: object) -> None:
    target.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        ds.save_as(target / f"new-{path.name}")


def test_tree_gives_one_study_per_series_folder_and_volume_file(small_study, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(small_study["ct"], tree / "patient1" / "ct")
    shutil.copy(small_study["nifti"], tree / "b.nii.gz")
    shutil.copytree(small_study["ct"], tree / "two")  # a folder holding two series: two studies
    _copy_as_new_series(small_study["ct"], tree / "two")
    (tree / "out").mkdir()  # the batch's own output folder inside the tree: left out
    shutil.copy(small_study["nifti"], tree / "out" / "x.nii.gz")
    (tree / "notes.txt").write_text("not a study")
    references = tmp_path / "refs"
    references.mkdir()
    shutil.copy(small_study["labels"], references / "b.nrrd.nii.gz")  # stem "b.nrrd": no match
    shutil.copy(small_study["labels"], references / "ct.nii.gz")  # the DICOM folder "ct"

    studies = discover_studies(tree, references, skip=tree / "out")
    sources = [s.source for s in studies]
    assert sources == sorted(
        [str(tree / "b.nii.gz"), str(tree / "patient1" / "ct"), f"{tree / 'two'}#series-1", f"{tree / 'two'}#series-2"]
    )
    assert all(s.key == study_key(s.source) for s in studies)
    by_source = {s.source: s for s in studies}
    assert by_source[str(tree / "patient1" / "ct")].reference == references / "ct.nii.gz"
    assert by_source[str(tree / "b.nii.gz")].reference is None
    two = [by_source[f"{tree / 'two'}#series-{n}"] for n in (1, 2)]
    assert len({s.series for s in two}) == 2 and all(s.is_dicom for s in two)
    assert load_image(two[1].path, series_uid=two[1].series).shape == load_image(small_study["ct"]).shape


def test_manifest_with_relative_paths_and_reference_column(small_study, tmp_path):
    shutil.copy(small_study["nifti"], tmp_path / "a.nii.gz")
    shutil.copy(small_study["labels"], tmp_path / "a-labels.nii.gz")
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(f"input,reference\na.nii.gz,a-labels.nii.gz\n{small_study['ct']},\n", encoding="utf-8")
    studies = discover_studies(manifest)
    assert [(s.path, s.reference) for s in studies] == [
        (tmp_path / "a.nii.gz", tmp_path / "a-labels.nii.gz"),
        (small_study["ct"], None),
    ]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("path\nx.nii.gz\n", "no 'input' column"),
        ("input\nmissing.nii.gz\n", "does not exist"),
        ("input\na.nii.gz\na.nii.gz\n", "twice"),
    ],
)
def test_bad_manifest_is_one_input_error(content, needle, small_study, tmp_path):
    shutil.copy(small_study["nifti"], tmp_path / "a.nii.gz")
    (tmp_path / "m.csv").write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=needle):
        discover_studies(tmp_path / "m.csv")


def test_dicomweb_and_empty_inputs_are_refused(tmp_path):
    with pytest.raises(InputError, match="DICOMweb"):
        discover_studies("https://pacs.example/dicom-web/studies?PatientID=1")
    with pytest.raises(InputError, match="No study found"):
        discover_studies(tmp_path)


def test_acquisition_is_read_from_dicom_as_data_only(small_study, tmp_path):
    series = tmp_path / "s"
    _copy_as_new_series(
        small_study["ct"],
        series,
        PatientAge="045Y",
        PatientSex="F",
        Manufacturer="../../evil",
        ConvolutionKernel=["B30f", "SHARP"],
        ContrastBolusAgent="IODINE",
    )
    acquisition = acquisition_of(load_image(series))
    assert acquisition.sex == "F" and acquisition.age_years == 45.0
    assert acquisition.manufacturer == "../../evil"  # kept as text; the study key comes from the location only
    assert acquisition.kernel == "B30f\\SHARP" and acquisition.contrast is True
    assert acquisition.slice_thickness_mm == pytest.approx(6.0)
    plain = acquisition_of(load_image(small_study["ct"]))
    assert plain.contrast is False and plain.age_years is None and plain.manufacturer == "MedAI"
    assert acquisition_of(load_image(small_study["nifti"])).manufacturer is None
