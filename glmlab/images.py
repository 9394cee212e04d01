"""Every image input glmlab accepts, turned into RGB PIL images.

One function, `to_pil`, is the only door: the model, the data loaders, the server and the widget all
call it, so a format supported (or refused) here is supported (or refused) everywhere. It returns a
list because one input can hold several images (a PDF's pages, a ComfyUI batch, a multi-frame DICOM).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from glmlab.errors import InputError

SUPPORTED = "PNG, JPEG, WebP, GIF, BMP, TIFF, PDF, DICOM"
DEFAULT_MAX_INPUT_PIXELS = 8192 * 8192  # refuse decompression bombs before decoding them
DEFAULT_PDF_DPI = 144
DEFAULT_MAX_URL_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class ImageOptions:
    """How inputs are read. `max_input_pixels` is a safety limit, not the model's pixel budget."""

    allow_urls: bool = False
    max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS
    pdf_dpi: int = DEFAULT_PDF_DPI
    dicom_window: tuple[float, float] | None = None  # (centre, width); None: the file's own
    # http(s) URLs (allow_urls=True) are fetched by `glmlab.urls.fetch_url`: public addresses only
    # unless allow_private_urls, at most max_url_bytes, url_timeout_s for the whole fetch.
    allow_private_urls: bool = False
    max_url_bytes: int = DEFAULT_MAX_URL_BYTES
    url_timeout_s: float = 20.0


def to_pil(source: Any, **options: Any) -> list[Image.Image]:
    """Turn one input into RGB PIL images.

    `source` may be a path (str or Path), a `data:` URL, an http(s) URL (only with allow_urls=True),
    raw bytes, a PIL image, a numpy array (HWC uint8, HWC float 0-1, HW grayscale) or a torch
    tensor (CHW, HWC, or ComfyUI's [B,H,W,C] float 0-1). PDFs give one image per page and DICOM files
    one per frame. Bad input raises `InputError` naming the input and the problem.
    """
    opts = ImageOptions(**options)
    if isinstance(source, Image.Image):
        return [_checked_rgb(source, "PIL image", opts)]
    if isinstance(source, bytes | bytearray | memoryview):
        return _from_bytes(bytes(source), "bytes input", opts)
    if isinstance(source, Path):
        return _from_path(source, opts)
    if isinstance(source, str):
        return _from_string(source, opts)
    if isinstance(source, np.ndarray):
        return [_from_array(source, "numpy array", opts)]
    if _is_torch_tensor(source):
        return _from_tensor(source, opts)
    raise InputError(
        f"{type(source).__name__} object: not an image input. Supported: a path, bytes, a data URL, "
        f"PIL image, numpy array, torch tensor ({SUPPORTED})."
    )


def to_pil_list(sources: Any, **options: Any) -> list[Image.Image]:
    """`to_pil` over a single input or a list of inputs, flattened in order."""
    if sources is None:
        return []
    if isinstance(sources, list | tuple):
        return [image for source in sources for image in to_pil(source, **options)]
    return to_pil(sources, **options)


def load_image(source: Any, **options: Any) -> Image.Image:
    """Exactly one image (a one-page PDF or one-frame DICOM counts)."""
    images = to_pil(source, **options)
    if len(images) != 1:
        raise InputError(
            f"{describe(source)}: holds {len(images)} images where one was expected; "
            "pass one page or frame, or use to_pil() for all of them."
        )
    return images[0]


def describe(source: Any) -> str:
    """A short human name for an input, for error messages."""
    if isinstance(source, str | Path):
        text = str(source)
        return text[:60] + "..." if text.startswith("data:") and len(text) > 60 else text
    if isinstance(source, bytes | bytearray):
        return f"bytes input ({len(source)} bytes)"
    return type(source).__name__


def encode_image(image: Image.Image, fmt: str = "PNG") -> bytes:
    """The image's bytes in `fmt`. PNG (the default) is lossless, and byte-identical for identical pixels."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of an image: how glmlab stores, caches and shows images it did not read as bytes."""
    return encode_image(image, "PNG")


def image_to_data_url(image: Image.Image, fmt: str = "PNG") -> str:
    """Encode a PIL image as a base64 data URL (what OpenAI-style servers take)."""
    mime = "jpeg" if fmt.upper() in ("JPG", "JPEG") else fmt.lower()
    return f"data:image/{mime};base64," + base64.b64encode(encode_image(image, fmt)).decode("ascii")


# ---- strings and paths ---------------------------------------------------------------------------


def _from_string(text: str, opts: ImageOptions) -> list[Image.Image]:
    if text.startswith("data:"):
        return _from_bytes(_decode_data_url(text), describe(text), opts)
    if text.startswith(("http://", "https://")):
        from glmlab.urls import fetch_url

        if not opts.allow_urls:
            raise InputError(
                f"{text}: http(s) URLs are refused by default; pass allow_urls=True to fetch it, "
                "or download the file and pass its path."
            )
        data = fetch_url(
            text,
            max_bytes=opts.max_url_bytes,
            timeout_s=opts.url_timeout_s,
            allow_private=opts.allow_private_urls,
        )
        return _from_bytes(data, text, opts)
    return _from_path(Path(text), opts)


def _decode_data_url(url: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header:
        raise InputError(f"{describe(url)}: not a base64 data URL; expected 'data:image/png;base64,...'.")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InputError(f"{describe(url)}: invalid base64 in data URL ({error}).") from None


def _from_path(path: Path, opts: ImageOptions) -> list[Image.Image]:
    if not path.exists():
        raise InputError(f"{path}: no such file.")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image file.")
    return _from_bytes(path.read_bytes(), str(path), opts)


# ---- bytes: sniff the format ---------------------------------------------------------------------


def _from_bytes(data: bytes, name: str, opts: ImageOptions) -> list[Image.Image]:
    if not data:
        raise InputError(f"{name}: empty input (0 bytes).")
    if data[:5] == b"%PDF-":
        return _from_pdf(data, name, opts)
    if data[128:132] == b"DICM":
        return _from_dicom(data, name, opts)
    return [_from_raster(data, name, opts)]


def _from_raster(data: bytes, name: str, opts: ImageOptions) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InputError(
            f"{name}: not an image (PIL could not identify it). Supported: {SUPPORTED}."
        ) from None
    except Image.DecompressionBombError as error:
        raise InputError(f"{name}: refused as a decompression bomb ({error}); downscale it.") from None
    _check_pixels(image.size, name, opts)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as error:
        raise InputError(f"{name}: corrupt or truncated image ({error}).") from None
    return _checked_rgb(image, name, opts)


def _check_pixels(size: tuple[int, int], name: str, opts: ImageOptions) -> None:
    width, height = size
    if width * height > opts.max_input_pixels:
        raise InputError(
            f"{name}: {width}x{height} = {width * height:,} pixels is over the limit of "
            f"{opts.max_input_pixels:,} (a decompression bomb guard); downscale it or raise "
            "max_input_pixels."
        )
    if width == 0 or height == 0:
        raise InputError(f"{name}: image has no pixels ({width}x{height}).")


def _checked_rgb(image: Image.Image, name: str, opts: ImageOptions) -> Image.Image:
    _check_pixels(image.size, name, opts)
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, (255, 255, 255))
        rgba = image.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image, dtype=np.float64))).convert("RGB")
    return image.convert("RGB")


# ---- PDF and DICOM -------------------------------------------------------------------------------


def _from_pdf(data: bytes, name: str, opts: ImageOptions) -> list[Image.Image]:
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as error:
        # PDFium refuses page-less documents at load time; tell that case apart from corruption.
        if re.search(rb"/Count\s+0\b", data) and not re.search(rb"/Type\s*/Page\b", data):
            raise InputError(f"{name}: the PDF has no pages.") from None
        raise InputError(f"{name}: corrupt PDF ({error}).") from None
    try:
        if len(document) == 0:
            raise InputError(f"{name}: the PDF has no pages.")
        scale = opts.pdf_dpi / 72
        pages = []
        for index in range(len(document)):
            page = document[index]
            width, height = page.get_size()
            _check_pixels((int(width * scale), int(height * scale)), f"{name} page {index + 1}", opts)
            pages.append(page.render(scale=scale).to_pil().convert("RGB"))
        return pages
    finally:
        document.close()


def _from_dicom(data: bytes, name: str, opts: ImageOptions) -> list[Image.Image]:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        pixels = dataset.pixel_array
    except Exception as error:  # pydicom raises many types for broken files
        raise InputError(f"{name}: unreadable DICOM ({type(error).__name__}: {error}).") from None
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    samples = int(getattr(dataset, "SamplesPerPixel", 1) or 1)
    if samples == 3:
        stack = pixels if frames > 1 else pixels[None]
        return [_checked_rgb(Image.fromarray(_to_uint8(frame)), name, opts) for frame in stack]
    values = apply_modality_lut(pixels, dataset).astype(np.float64)
    stack = values if frames > 1 else values[None]
    window = opts.dicom_window or _dicom_window(dataset)
    invert = getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1"
    images = []
    for frame in stack:
        gray = _apply_window(frame, window)
        if invert:
            gray = 255 - gray
        images.append(_checked_rgb(Image.fromarray(gray).convert("RGB"), name, opts))
    return images


def _dicom_window(dataset: Any) -> tuple[float, float] | None:
    centre, width = getattr(dataset, "WindowCenter", None), getattr(dataset, "WindowWidth", None)
    if centre is None or width is None:
        return None
    return _first_value(centre), _first_value(width)


def _first_value(value: Any) -> float:
    """DICOM window fields may hold several values; the first is the default window."""
    return float(value[0]) if isinstance(value, Iterable) and not isinstance(value, str) else float(value)


def _apply_window(values: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Map values to 0-255 with a (centre, width) window, or min-max when there is none."""
    if window is None:
        return _to_uint8(values)
    centre, width = window
    low, high = centre - width / 2, centre + width / 2
    scaled = (np.clip(values, low, high) - low) / max(high - low, 1e-6)
    return np.round(scaled * 255).astype(np.uint8)


# ---- arrays and tensors --------------------------------------------------------------------------


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Min-max scale any numeric array to uint8 (used for 16-bit images and unwindowed DICOM)."""
    if values.dtype == np.uint8:
        return values
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) / (high - low) * 255).astype(np.uint8)


def _from_array(array: np.ndarray, name: str, opts: ImageOptions) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise InputError(f"{name}: shape {tuple(array.shape)} is not an image; expected HxW, HxWx3 or HxWx4.")
    if array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError(f"{name}: holds NaN or infinite values.")
        if array.min() < 0 or array.max() > 1:
            raise InputError(
                f"{name}: float images must be in 0-1 (got {array.min():.3g}..{array.max():.3g})."
            )
        pixels = np.round(array * 255).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        pixels = _to_uint8(array)
    else:
        raise InputError(f"{name}: unsupported dtype {array.dtype}.")
    return _checked_rgb(Image.fromarray(np.ascontiguousarray(pixels)), name, opts)


def _is_torch_tensor(source: Any) -> bool:
    return type(source).__module__.startswith("torch") and hasattr(source, "detach")


def _from_tensor(tensor: Any, opts: ImageOptions) -> list[Image.Image]:
    """CHW and HWC tensors give one image, [B,H,W,C] (ComfyUI's IMAGE) gives B images."""
    array = (
        tensor.detach().cpu().float().numpy() if tensor.is_floating_point() else tensor.detach().cpu().numpy()
    )
    if array.ndim == 4:
        return [_from_array(frame, f"tensor batch item {index}", opts) for index, frame in enumerate(array)]
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    return [_from_array(array, "torch tensor", opts)]
