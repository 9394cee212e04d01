"""Shapes and CT phantoms: the pixels hold what the answers say, seeds decide everything, DICOM reads back."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw

from glmlab.data import (
    GENERATORS,
    generate,
    generate_phantoms,
    generate_shapes,
    generator_options,
    load_records,
)
from glmlab.data.phantoms import FIELD_OF_VIEW_MM, LUNG_WINDOW, size_class
from glmlab.data.shapes import COLORS, SHAPES
from glmlab.errors import ConfigError
from glmlab.images import to_pil

FILL_RATIO = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}  # shape area / box area


def _regions(image: Image.Image, background: tuple[int, int, int]) -> list[tuple[tuple[int, ...], int]]:
    """(colour, pixel count) of each connected non-background region, found by flood-filling them away."""
    image = image.copy()
    regions = []
    while True:
        pixels = np.asarray(image)
        ys, xs = np.nonzero(np.any(pixels != background, axis=-1))
        if not len(ys):
            return regions
        colour = tuple(int(v) for v in pixels[ys[0], xs[0]])
        ImageDraw.floodfill(image, (int(xs[0]), int(ys[0])), background, thresh=0)
        regions.append((colour, int(np.sum(np.any(pixels != np.asarray(image), axis=-1)))))


def test_shape_images_hold_exactly_the_answered_count_colour_and_shape():
    for record in generate_shapes(60, seed=4):
        meta = record["metadata"]
        regions = _regions(record["image"], tuple(meta["background"]))
        assert len(regions) == len(meta["shapes"])
        assert sorted(colour for colour, _ in regions) == sorted(COLORS[s["color"]] for s in meta["shapes"])
        if meta["question_type"] == "count":
            assert record["answer"] == str(len(regions))
        elif meta["question_type"] == "color":
            assert COLORS[record["answer"]] == regions[0][0]
        else:
            x0, y0, x1, y1 = meta["shapes"][0]["box"]
            ratio = regions[0][1] / ((x1 - x0 + 1) * (y1 - y0 + 1))
            assert min(FILL_RATIO, key=lambda shape: abs(FILL_RATIO[shape] - ratio)) == record["answer"]


def test_shape_answers_are_balanced_per_question_type():
    records = generate_shapes(108, seed=0)
    by_type = Counter((r["metadata"]["question_type"], r["answer"]) for r in records)
    assert {answer for kind, answer in by_type if kind == "shape"} == set(SHAPES)
    assert {count for (kind, _), count in by_type.items() if kind == "color"} == {6}
    assert {count for (kind, _), count in by_type.items() if kind == "count"} == {12}


def test_same_seed_gives_identical_shape_files_and_other_seeds_differ(tmp_path):
    generate_shapes(9, seed=1, out_dir=tmp_path / "a")
    generate_shapes(9, seed=1, out_dir=tmp_path / "b")
    generate_shapes(9, seed=2, out_dir=tmp_path / "c")
    assert _folder_bytes(tmp_path / "a") == _folder_bytes(tmp_path / "b")
    assert _folder_bytes(tmp_path / "a")["data.jsonl"] != _folder_bytes(tmp_path / "c")["data.jsonl"]


def test_phantom_answers_agree_with_the_lesions_drawn():
    for record in generate_phantoms(40, seed=3):
        meta, answer = record["metadata"], record["answer"]
        lesions, kind = meta["lesions"], meta["question_type"]
        width = record["image"].width
        for lesion in lesions:
            assert lesion["size"] == size_class(lesion["diameter_mm"])
            assert lesion["side"] == (
                "right" if lesion["center_px"][0] < width / 2 else "left"
            )  # radiological
        expected = {
            "presence": "yes" if lesions else "no",
            "count": str(len(lesions)),
            "side": lesions[0]["side"] if lesions else None,
            "size": lesions[0]["size"] if lesions else None,
        }
        if kind in expected:
            assert answer == expected[kind]
        else:
            assert answer.startswith(f"{len(lesions)} lesion" if lesions else "No lesion")


def test_lesions_are_brighter_than_the_lung_around_them():
    for record in generate_phantoms(20, seed=8, question_types=("count",)):
        pixels = np.asarray(record["image"])[..., 0].astype(float)
        for lesion in record["metadata"]["lesions"]:
            x, y = lesion["center_px"]
            radius = lesion["radius_px"]
            yy, xx = np.mgrid[0 : pixels.shape[0], 0 : pixels.shape[1]]
            distance = np.hypot(xx - x, yy - y)
            inside, ring = (
                pixels[distance <= radius - 1].mean(),
                pixels[(distance > radius + 1) & (distance < radius + 3)],
            )
            assert inside > np.median(ring) + 20


def test_phantom_dicom_reads_back_as_the_windowed_image(tmp_path):
    written = generate_phantoms(5, seed=6, out_dir=tmp_path)
    in_memory = generate_phantoms(5, seed=6)
    for file_record, memory_record in zip(written, in_memory, strict=True):
        assert file_record["images"][0].endswith(".dcm")
        read_back = np.asarray(to_pil(file_record["images"][0])[0], dtype=int)
        assert np.abs(read_back - np.asarray(memory_record["image"], dtype=int)).max() <= 1


def test_phantom_dicom_has_ct_headers_and_16_bit_hu(tmp_path):
    path = generate_phantoms(1, seed=0, out_dir=tmp_path)[0]["images"][0]
    ds = pydicom.dcmread(path)
    assert (ds.Modality, ds.BitsAllocated, ds.PixelRepresentation, ds.RescaleType) == ("CT", 16, 0, "HU")
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == LUNG_WINDOW
    assert ds.PatientID == "PHANTOM-S0-00000" and ds.pixel_array.dtype == np.uint16
    assert float(ds.PixelSpacing[0]) * ds.Columns == pytest.approx(FIELD_OF_VIEW_MM)
    hu = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
    assert hu.min() >= -1024 and -1000 - 100 < np.median(hu[:10, :10]) < -1000 + 100  # air in the corner
    again = pydicom.dcmread(generate_phantoms(1, seed=0, out_dir=tmp_path / "again")[0]["images"][0])
    assert again.StudyInstanceUID == ds.StudyInstanceUID != ds.SeriesInstanceUID


def test_same_seed_gives_identical_phantom_files_and_other_seeds_differ(tmp_path):
    generate_phantoms(4, seed=1, out_dir=tmp_path / "a")
    generate_phantoms(4, seed=1, out_dir=tmp_path / "b")
    generate_phantoms(4, seed=2, out_dir=tmp_path / "c")
    first = _folder_bytes(tmp_path / "a")
    assert first == _folder_bytes(tmp_path / "b")
    assert (
        first["images/phantom-s1-00000.dcm"] != _folder_bytes(tmp_path / "c")["images/phantom-s2-00000.dcm"]
    )


def test_phantom_folder_of_dicom_files_loads_through_the_folder_loader(tmp_path):
    records = generate_phantoms(5, seed=0, out_dir=tmp_path)
    dataset = load_records(tmp_path)
    assert [row["messages"][-1]["content"] for row in dataset] == [record["answer"] for record in records]
    assert dataset[0]["images"][0].size == (256, 256)


def test_registry_names_each_generator_and_checks_its_options(tmp_path):
    assert set(GENERATORS) == {
        "shapes",
        "invoices-zh",
        "invoices-en",
        "medical-phantoms",
        "moderation",
        "moving-shapes",
    }
    assert generate("shapes", 2, seed=0, size=56)[0]["image"].size == (56, 56)
    assert "language" not in generator_options("invoices-en")
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['colour'\]"):
        generate("shapes", 2, colour="red")
    with pytest.raises(ConfigError, match="generator 'cats': unknown"):
        generate("cats", 1)


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
