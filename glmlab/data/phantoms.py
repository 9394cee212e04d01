"""Synthetic chest-CT phantoms with lung lesions, in Hounsfield units, written as real DICOM files.

Each phantom is one axial slice built in HU: air around a body (fat rim, soft tissue), two lungs
(about -850 HU, with smooth texture), a heart and a vertebra, scanner noise, and 0..`max_lesions`
round lesions inside the lungs, each with its own size and density (-500 HU ground-glass to +60 HU
solid, so contrast against the lung varies). The same HU array gives both outputs:

- in memory, a PIL image in the lung window (centre -600, width 1500 by default);
- with `out_dir` (and `image_format="dicom"`), a CT DICOM file: 16-bit stored values with
  RescaleSlope 1 / RescaleIntercept -1024, the window in WindowCenter/WindowWidth, synthetic patient
  and deterministic Study/Series/SOP Instance UIDs, so `glmlab.images.to_pil` reads back the same
  windowed picture and the DICOM input path is exercised end to end.

Conventions the answers rely on:
- Sides are the PATIENT's, shown in the radiological convention: the patient's right is on the image's
  LEFT. "right lung" = the lung on the left half of the image.
- Size classes by lesion diameter: small < 10 mm <= medium <= 20 mm < large. Generated diameters
  stay at least 1 mm away from the thresholds (small 5-9, medium 11-19, large 21-30 mm) so every
  label is unambiguous. Pixel spacing is the field of view (300 mm) over the image size.

Each lesion in metadata `lesions` has side, size, diameter_mm, radius_px, center_px (x, y), hu and
image_quadrant ("upper-left", ... in image coordinates, for location questions a suite may add).

Question types (metadata `question_type`, and `answer_type` closed = a fixed set of options, open =
free text): presence (closed, yes/no), side (closed, left/right, one lesion), size (closed,
small/medium/large, one lesion), count (open, "0".."3"), findings (open, a one-line report).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from glmlab.data.loaders import IMAGE_DIR, write_and_reference
from glmlab.errors import ConfigError

FIELD_OF_VIEW_MM = 300.0
LUNG_WINDOW = (-600.0, 1500.0)  # (centre, width) in HU
SIZE_RANGES_MM = {"small": (5.0, 9.0), "medium": (11.0, 19.0), "large": (21.0, 30.0)}
SIZE_THRESHOLDS_MM = (10.0, 20.0)
QUESTIONS = {
    "presence": ("Is there a lesion in this CT image?", "closed"),
    "count": ("How many lesions are there?", "open"),
    "side": ("Which lung contains the lesion, left or right?", "closed"),
    "size": ("Is the lesion small, medium or large?", "closed"),
    "findings": ("Describe the lesions.", "open"),
}
HU_MIN, HU_MAX = -1024, 3071  # what 12 stored bits hold with intercept -1024


def size_class(diameter_mm: float) -> str:
    """small < 10 mm <= medium <= 20 mm < large."""
    low, high = SIZE_THRESHOLDS_MM
    return "small" if diameter_mm < low else "medium" if diameter_mm <= high else "large"


def generate_phantoms(
    n: int,
    seed: int = 0,
    out_dir: str | Path | None = None,
    *,
    size: int = 256,
    max_lesions: int = 3,
    question_types: tuple[str, ...] = tuple(QUESTIONS),
    window: tuple[float, float] = LUNG_WINDOW,
    image_format: str = "dicom",
) -> list[dict[str, Any]]:
    """`n` phantom records, deterministic given `seed`; answers of each question type are balanced.

    size: image side in pixels. max_lesions: most lesions per image (1..3). window: (centre, width) in
    HU used for the picture and stored in the DICOM header. image_format: "dicom" or "png" files when
    `out_dir` is given (in memory the images are always PIL).
    """
    _check_options(size, max_lesions, question_types, image_format)
    rng = np.random.default_rng(seed)
    spacing = FIELD_OF_VIEW_MM / size
    classes = {
        "presence": ["yes", "no"],
        "count": [str(k) for k in range(max_lesions + 1)],
        "side": ["left", "right"],
        "size": list(SIZE_RANGES_MM),
        "findings": [str(k) for k in range(max_lesions + 1)],
    }
    queues: dict[str, list[str]] = {kind: [] for kind in question_types}
    if out_dir is not None:
        (Path(out_dir) / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(n):
        kind = question_types[index % len(question_types)]
        if not queues[kind]:
            queues[kind] = [classes[kind][i] for i in rng.permutation(len(classes[kind]))]
        target = queues[kind].pop()
        hu, lungs = _anatomy(size, rng)
        lesions = _lesions(kind, target, max_lesions, lungs, spacing, rng)
        hu = _finish(hu, lesions, rng)
        record_id = f"phantom-s{seed}-{index:05d}"
        question, answer_type = QUESTIONS[kind]
        if out_dir is not None and image_format == "dicom":
            image: Any = str(
                write_dicom(
                    hu,
                    Path(out_dir) / IMAGE_DIR / f"{record_id}.dcm",
                    spacing_mm=spacing,
                    window=window,
                    uid_key=f"{seed}-{index}",
                    patient_id=record_id.upper(),
                )
            )
        else:
            image = Image.fromarray(window_to_uint8(hu, window)).convert("RGB")
        records.append(
            {
                "id": record_id,
                "image": image,
                "question": question,
                "answer": _answer(kind, lesions),
                "metadata": {
                    "question_type": kind,
                    "answer_type": answer_type,
                    "lesions": lesions,
                    "convention": "radiological: the patient's right is on the image's left",
                    "pixel_spacing_mm": round(spacing, 4),
                    "window": list(window),
                },
            }
        )
    return write_and_reference(records, out_dir)


def _check_options(size: int, max_lesions: int, question_types: tuple[str, ...], image_format: str) -> None:
    if size < 128:
        raise ConfigError(f"size={size}: expected at least 128 pixels so small lesions stay visible.")
    if not 1 <= max_lesions <= 3:
        raise ConfigError(f"max_lesions={max_lesions}: expected 1..3.")
    unknown = [kind for kind in question_types if kind not in QUESTIONS]
    if unknown or not question_types:
        raise ConfigError(f"question_types={question_types!r}: expected some of {tuple(QUESTIONS)}.")
    if image_format not in ("dicom", "png"):
        raise ConfigError(f"image_format={image_format!r}: expected 'dicom' or 'png'.")


def _anatomy(size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """HU of the body without lesions, and the mask of each lung by the patient's side."""
    y, x = np.mgrid[0:size, 0:size] / size
    jitter = lambda value, spread=0.04: value + float(rng.uniform(-spread, spread))  # noqa: E731

    def ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0

    hu = np.full((size, size), -1000.0)
    body_rx, body_ry = jitter(0.44, 0.02), jitter(0.33, 0.02)
    hu[ellipse(0.5, 0.52, body_rx, body_ry)] = -100.0  # subcutaneous fat
    hu[ellipse(0.5, 0.52, body_rx - 0.03, body_ry - 0.03)] = 45.0  # muscle and soft tissue
    texture = _smooth_noise(size, rng) * 40.0
    lungs = {}
    for side, cx in (("right", 0.5 - jitter(0.19, 0.02)), ("left", 0.5 + jitter(0.19, 0.02))):
        mask = ellipse(cx, jitter(0.5, 0.02), jitter(0.14, 0.015), jitter(0.21, 0.02))
        hu[mask] = -850.0 + texture[mask]
        lungs[side] = mask
    heart = ellipse(jitter(0.55, 0.02), jitter(0.58, 0.02), jitter(0.1, 0.01), jitter(0.09, 0.01))
    hu[heart] = 40.0
    hu[ellipse(0.5, jitter(0.8, 0.01), 0.045, 0.045)] = 600.0  # vertebral body
    return hu, {side: mask & ~heart for side, mask in lungs.items()}


def _smooth_noise(size: int, rng: np.random.Generator) -> np.ndarray:
    coarse = rng.normal(0.0, 1.0, (size // 16, size // 16)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BILINEAR))


def _lesions(
    kind: str,
    target: str,
    max_lesions: int,
    lungs: dict[str, np.ndarray],
    spacing: float,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Lesion specs that make `target` the right answer to a `kind` question."""
    if kind == "presence":
        count = 0 if target == "no" else int(rng.integers(1, max_lesions + 1))
    elif kind in ("side", "size"):
        count = 1
    else:
        count = int(target)
    sizes = list(SIZE_RANGES_MM)
    lesions: list[dict[str, Any]] = []
    for _ in range(count):
        side = target if kind == "side" else ("left", "right")[int(rng.integers(2))]
        label = target if kind == "size" else sizes[int(rng.integers(len(sizes)))]
        diameter_mm = round(float(rng.uniform(*SIZE_RANGES_MM[label])), 1)
        centre = _free_spot(lungs[side], diameter_mm / spacing / 2, lesions, rng)
        lesions.append(
            {
                "side": side,
                "size": label,
                "diameter_mm": diameter_mm,
                "radius_px": round(diameter_mm / spacing / 2, 2),
                "center_px": centre,
                "image_quadrant": _quadrant(centre, lungs[side].shape[0]),
                "hu": int(rng.integers(-500, 61)),
            }
        )
    return sorted(lesions, key=lambda lesion: (lesion["center_px"][1], lesion["center_px"][0]))


def _quadrant(centre: list[int], size: int) -> str:
    """'upper-left' etc. in IMAGE coordinates (not the patient's sides)."""
    return (
        ("upper" if centre[1] < size / 2 else "lower") + "-" + ("left" if centre[0] < size / 2 else "right")
    )


def _free_spot(lung: np.ndarray, radius: float, placed: list[dict], rng: np.random.Generator) -> list[int]:
    """A centre where a disc of `radius` lies inside the lung, 3 px clear of other lesions."""
    rows, cols = np.nonzero(lung)
    size = lung.shape[0]
    y, x = np.mgrid[0:size, 0:size]
    for _ in range(500):
        pick = int(rng.integers(len(rows)))
        cy, cx = int(rows[pick]), int(cols[pick])
        disc = (x - cx) ** 2 + (y - cy) ** 2 <= (radius + 1) ** 2
        clear = all(
            np.hypot(cx - other["center_px"][0], cy - other["center_px"][1]) > radius + other["radius_px"] + 3
            for other in placed
        )
        if clear and lung[disc].all():
            return [cx, cy]
    raise ConfigError(f"could not place a {radius * 2:.0f} px lesion in the lung; use a larger image size.")


def _finish(hu: np.ndarray, lesions: list[dict], rng: np.random.Generator) -> np.ndarray:
    """Draw the lesions, add scanner noise, and round to the integer HU a DICOM file stores."""
    size = hu.shape[0]
    y, x = np.mgrid[0:size, 0:size]
    for lesion in lesions:
        cx, cy = lesion["center_px"]
        hu[(x - cx) ** 2 + (y - cy) ** 2 <= lesion["radius_px"] ** 2] = lesion["hu"]
    hu = hu + rng.normal(0.0, float(rng.uniform(10.0, 25.0)), hu.shape)
    return np.clip(np.round(hu), HU_MIN, HU_MAX).astype(np.int16)


def _answer(kind: str, lesions: list[dict]) -> str:
    if kind == "presence":
        return "yes" if lesions else "no"
    if kind == "count":
        return str(len(lesions))
    if kind == "side":
        return lesions[0]["side"]
    if kind == "size":
        return lesions[0]["size"]
    if not lesions:
        return "No lesion."
    noun = "lesion" if len(lesions) == 1 else "lesions"
    parts = "; ".join(f"{lesion['size']} in the {lesion['side']} lung" for lesion in lesions)
    return f"{len(lesions)} {noun}: {parts}."


def window_to_uint8(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Grey levels 0-255 from HU through a linear (centre, width) window, clipping outside it."""
    centre, width = window
    low = centre - width / 2
    return np.round((np.clip(hu.astype(np.float64), low, low + width) - low) / width * 255).astype(np.uint8)


def write_dicom(
    hu: np.ndarray,
    path: str | Path,
    *,
    spacing_mm: float,
    window: tuple[float, float],
    uid_key: str,
    patient_id: str,
) -> Path:
    """Write one CT slice of integer HU as a DICOM file; UIDs are derived from `uid_key`, so the same
    key gives byte-identical files."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    uid = lambda role: generate_uid(entropy_srcs=["glmlab-phantom", uid_key, role])  # noqa: E731
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = uid("sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    study_date = (datetime.date(2024, 1, 1) + datetime.timedelta(days=sum(map(ord, uid_key)) % 365)).strftime(
        "%Y%m%d"
    )
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = (
        uid("study"),
        uid("series"),
        uid("frame"),
    )
    ds.Modality, ds.ImageType, ds.BodyPartExamined = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"], "CHEST"
    ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientBirthDate = (
        "Phantom^Synthetic",
        patient_id,
        "O",
        "",
    )
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.StudyID, ds.AccessionNumber, ds.SeriesNumber, ds.InstanceNumber = "1", "", 1, 1
    ds.StudyDescription, ds.SeriesDescription = "Synthetic chest phantom", "glmlab phantom, lung window"
    ds.Manufacturer, ds.InstitutionName = "glmlab", "glmlab synthetic data (not a patient)"
    ds.KVP, ds.SliceThickness, ds.PatientPosition = "120", "1.0", "HFS"
    ds.ImagePositionPatient = [-FIELD_OF_VIEW_MM / 2, -FIELD_OF_VIEW_MM / 2, 0.0]
    ds.ImageOrientationPatient, ds.SliceLocation = [1, 0, 0, 0, 1, 0], 0.0
    ds.PixelSpacing = [round(spacing_mm, 6), round(spacing_mm, 6)]
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = str(HU_MIN), "1", "HU"
    ds.WindowCenter, ds.WindowWidth = f"{window[0]:g}", f"{window[1]:g}"
    ds.WindowCenterWidthExplanation = "LUNG"
    ds.PixelData = (hu.astype(np.int32) - HU_MIN).astype("<u2").tobytes()
    path = Path(path)
    ds.save_as(path, enforce_file_format=True)
    return path
