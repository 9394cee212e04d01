"""Every image input glmlab accepts, turned into RGB PIL images.

One function, `to_pil`, is the only door: the model, the data loaders, the server and the widget all
call it, so a format supported (or refused) here is supported (or refused) everywhere. It returns a
list because one input can hold several images (a PDF's pages, a ComfyUI batch, a multi-frame DICOM).

Budgets before bytes: every decoder reads the size from the header (PIL's lazy open, the DICOM header
before its pixel data, each PDF page's size) and checks it before decoding, against the per-image pixel
limit, an `ImageBudget` (images and decoded pixels per request or call) and a process-wide
`DecodeMemory` that every decode is admitted against, so concurrent callers cannot multiply it.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import threading
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from glmlab.errors import BusyError, InputError

SUPPORTED = "PNG, JPEG, WebP, GIF, BMP, TIFF, PDF, DICOM"
# The only formats PIL may open (JPEG covers MPO): never EPS (Ghostscript) or rarely used parsers.
PIL_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
DEFAULT_MAX_INPUT_PIXELS = 8192 * 8192  # refuse decompression bombs before decoding them
DEFAULT_MAX_FRAMES = 64  # PDF pages or DICOM frames one input may hold
DEFAULT_PDF_DPI = 144
DEFAULT_MAX_URL_BYTES = 20 * 1024 * 1024
DEFAULT_DECODE_MEMORY = 1024 * 1024 * 1024  # the library's process-wide budget (the server sets its own)
LIBRARY_WAIT_S = 30.0  # how long a to_pil call waits for decode memory other threads hold
DICOM_HEADER_LIMIT = 4 * 1024 * 1024  # inflated bytes a deflated DICOM may use before its pixel data
DICOM_TRAILER_LIMIT = 64 * 1024  # and after the bytes its pixel data declares
MB = 1024 * 1024
# Bytes per pixel PIL stores for a mode (RGB is padded to 4); the output RGB image is what a caller keeps.
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
RGB_BYTES = 4
_HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class DecodeMemory:
    """Bytes of decoded images a whole process may hold at once, shared by every caller.

    Each decode is admitted with its peak estimate (from the header) before it starts; what it keeps
    (the RGB image) stays counted until its `ImageBudget` is released. A caller that alone needs
    more than the limit gets an InputError; one that finds the budget in use by others waits up to
    its `wait_s`, then gets a BusyError (the server answers 503 and Retry-After).
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.used = 0
        self._changed = threading.Condition()

    def acquire(self, nbytes: int, name: str, *, held: int = 0, wait_s: float = 0.0) -> None:
        if held + nbytes > self.limit:
            raise InputError(
                f"{name}: decoding it needs about {_mb(nbytes)} MB of memory"
                + (f" (with {_mb(held)} MB held by the other images of this request)" if held else "")
                + f", over the decode memory budget of {_mb(self.limit)} MB (max_decode_mb); "
                "downscale it or send fewer images."
            )
        with self._changed:
            if not self._changed.wait_for(lambda: self.used + nbytes <= self.limit, timeout=wait_s):
                raise BusyError(
                    f"{name}: the decode memory budget ({_mb(self.limit)} MB) is in use by other "
                    "requests' images; retry shortly."
                )
            self.used += nbytes

    def release(self, nbytes: int) -> None:
        with self._changed:
            self.used -= nbytes
            self._changed.notify_all()


DECODE_MEMORY = DecodeMemory(DEFAULT_DECODE_MEMORY)


def _mb(nbytes: int) -> int:
    return -(-nbytes // MB)  # rounded up


class ImageBudget:
    """What one request (or one `to_pil` call) may decode: a number of images, a total of decoded
    pixels (PDF pages, DICOM frames and sampled video frames count one each), and the memory it holds
    from `memory` until `release()`. Checked from headers, before any pixel is decoded. Used by one
    thread at a time."""

    def __init__(
        self,
        *,
        max_images: int | None = None,
        max_pixels: int | None = None,
        memory: DecodeMemory | None = None,
        wait_s: float = 0.0,
    ) -> None:
        self.max_images, self.max_pixels = max_images, max_pixels
        self.memory, self.wait_s = memory, wait_s
        self.images = self.pixels = self.held = 0
        self.released = False
        self._lock = threading.Lock()  # a decode thread may finish after the request released it

    def admit(self, name: str, sizes: list[tuple[int, int]]) -> None:
        """Count images of these sizes, or raise InputError when they would go over a limit."""
        images, pixels = self.images + len(sizes), self.pixels + sum(w * h for w, h in sizes)
        if self.max_images is not None and images > self.max_images:
            raise InputError(
                f"{name}: {len(sizes)} image(s) would bring this request to {images} images, over the "
                f"limit of {self.max_images} (max_images; PDF pages, DICOM frames and sampled video frames "
                "count one each); send fewer images or pages, or sample fewer video frames."
            )
        if self.max_pixels is not None and pixels > self.max_pixels:
            raise InputError(
                f"{name}: {sum(w * h for w, h in sizes):,} decoded pixels would bring this request to "
                f"{pixels:,}, over the limit of {self.max_pixels:,} (max_request_pixels); downscale "
                "the images or send fewer."
            )
        kept = sum(w * h for w, h in sizes) * RGB_BYTES
        if self.memory is not None and self.held + kept > self.memory.limit:
            # all of a PDF's pages or a DICOM's frames at once, before the first is decoded
            raise InputError(
                f"{name}: its {len(sizes)} decoded image(s) would hold about {_mb(self.held + kept)} MB "
                f"of memory, over the decode memory budget of {_mb(self.memory.limit)} MB "
                "(max_decode_mb); downscale them or send fewer."
            )
        self.images, self.pixels = images, pixels

    @contextmanager
    def decoding(self, name: str, peak_bytes: int, kept_bytes: int) -> Iterator[None]:
        """Hold `peak_bytes` of decode memory while decoding; keep `kept_bytes` once it succeeded."""
        if self.memory is None:
            yield
            return
        self.memory.acquire(peak_bytes, name, held=self.held, wait_s=self.wait_s)
        try:
            yield
        except BaseException:
            self.memory.release(peak_bytes)
            raise
        with self._lock:
            keep = 0 if self.released else kept_bytes
            self.memory.release(peak_bytes - keep)
            self.held += keep

    def release(self) -> None:
        """Give back the memory the decoded images hold (when they are no longer needed); decodes
        that finish later give theirs back at once."""
        with self._lock:
            self.released = True
            if self.memory is not None and self.held:
                self.memory.release(self.held)
            self.held = 0


@dataclass(frozen=True)
class ImageOptions:
    """How inputs are read. `max_input_pixels` is a safety limit, not the model's pixel budget.

    budget: the request's ImageBudget (the server passes one per request); None: a budget for this
    call alone, against the library's process-wide DECODE_MEMORY, released when the call returns.
    """

    allow_urls: bool = False
    max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS
    max_frames: int = DEFAULT_MAX_FRAMES
    pdf_dpi: int = DEFAULT_PDF_DPI
    dicom_window: tuple[float, float] | None = None  # (centre, width); None: the file's own
    # http(s) URLs (allow_urls=True) are fetched by `glmlab.urls.fetch_url`: public addresses only
    # unless allow_private_urls, at most max_url_bytes, url_timeout_s for the whole fetch.
    allow_private_urls: bool = False
    max_url_bytes: int = DEFAULT_MAX_URL_BYTES
    url_timeout_s: float = 20.0
    budget: ImageBudget | None = None


def to_pil(source: Any, **options: Any) -> list[Image.Image]:
    """Turn one input into RGB PIL images.

    `source` may be a path (str or Path), a `data:` URL, an http(s) URL (only with allow_urls=True),
    raw bytes, a PIL image, a numpy array (HWC uint8, HWC float 0-1, HW grayscale) or a torch
    tensor (CHW, HWC, or ComfyUI's [B,H,W,C] float 0-1). PDFs give one image per page and DICOM files
    one per frame (at most `max_frames`). Bad input raises `InputError` naming the input and the
    problem; sizes are checked from headers before decoding (see `ImageBudget`).
    """
    opts = ImageOptions(**options)
    if opts.budget is not None:
        return _to_pil(source, opts)
    budget = ImageBudget(memory=DECODE_MEMORY, wait_s=LIBRARY_WAIT_S)
    try:
        return _to_pil(source, replace(opts, budget=budget))
    finally:
        budget.release()  # the caller owns the images now


def _to_pil(source: Any, opts: ImageOptions) -> list[Image.Image]:
    if isinstance(source, Image.Image):
        _admit(source.size, "PIL image", opts)
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
    return decode_data_url(url, describe(url), "data:image/png;base64,...")


def decode_data_url(url: str, name: str, example: str) -> bytes:
    """The bytes of a base64 `data:` URL (images' and videos'); InputError naming `name` otherwise."""
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header:
        raise InputError(f"{name}: not a base64 data URL; expected '{example}'.")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InputError(f"{name}: invalid base64 in data URL ({error}).") from None


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
        image = Image.open(io.BytesIO(data), formats=PIL_FORMATS)  # reads the header only
    except UnidentifiedImageError:
        raise InputError(
            f"{name}: not an image (PIL could not identify it). Supported: {SUPPORTED}."
        ) from None
    except Image.DecompressionBombError as error:
        raise InputError(f"{name}: refused as a decompression bomb ({error}); downscale it.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InputError(f"{name}: corrupt image header ({error}).") from None
    _admit(image.size, name, opts)
    peak, kept = _raster_cost(image)
    with opts.budget.decoding(name, peak, kept):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as error:
            raise InputError(f"{name}: corrupt or truncated image ({error}).") from None
        return _checked_rgb(image, name, opts)


def _admit(size: tuple[int, int], name: str, opts: ImageOptions, count: int = 1) -> None:
    """Check one input's image size (and `count` images of it) before anything is decoded."""
    _check_pixels(size, name, opts)
    opts.budget.admit(name, [size] * count)


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


def _raster_cost(image: Image.Image) -> tuple[int, int]:
    """(peak, kept) bytes of decoding `image` (opened, not loaded) into RGB as `_checked_rgb` does.

    Per pixel, measured with a reset peak RSS: 1-bit 4.8 (5 here), RGBA 8.6 (9), 16-bit 7.5 (8).
    """
    mode, pixels = image.mode, image.size[0] * image.size[1]
    source = _MODE_BYTES.get(mode, 4)
    if mode == "RGB":
        peak = RGB_BYTES  # decoded straight into the image that is kept
    elif mode in _HIGH_DEPTH:  # the image with its bytes for numpy and then float32; uint8 gray and RGB
        peak = max(2 * source + 4, source + 2 + RGB_BYTES)
    elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        peak = source + (0 if mode == "RGBA" else 4) + 1 + RGB_BYTES  # an RGBA copy, its alpha mask
    else:
        peak = source + RGB_BYTES
    return pixels * peak, pixels * RGB_BYTES


def _checked_rgb(image: Image.Image, name: str, opts: ImageOptions) -> Image.Image:
    _check_pixels(image.size, name, opts)
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, (255, 255, 255))
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in _HIGH_DEPTH:
        return Image.fromarray(_to_uint8(np.asarray(image, dtype=np.float32), in_place=True)).convert("RGB")
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
        count = len(document)
        if count == 0:
            raise InputError(f"{name}: the PDF has no pages.")
        if count > opts.max_frames:
            raise InputError(
                f"{name}: the PDF has {count} pages, over the limit of {opts.max_frames} "
                "(max_frames); send the pages you need."
            )
        scale = opts.pdf_dpi / 72
        sizes = []
        for index in range(count):  # every page's size x dpi is checked before any page is rendered
            width, height = document[index].get_size()
            size = (round(width * scale), round(height * scale))
            _check_pixels(size, f"{name} page {index + 1}", opts)
            sizes.append(size)
        opts.budget.admit(name, sizes)
        pages = []
        for index, size in enumerate(sizes):
            page_name = f"{name} page {index + 1}"
            pixels = size[0] * size[1]
            # PDFium's RGB bitmap (3 B/px, padded rows) and the PIL image made from it
            with opts.budget.decoding(page_name, pixels * (4 + RGB_BYTES), pixels * RGB_BYTES):
                bitmap = document[index].render(scale=scale, rev_byteorder=True)
                image = bitmap.to_pil()
                bitmap.close()
                pages.append(image if image.mode == "RGB" else image.convert("RGB"))
        return pages
    finally:
        document.close()


_DEFLATED = "1.2.840.10008.1.2.1.99"
_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)  # float, double float and plain pixel data


@dataclass(frozen=True)
class _DicomShape:
    """What a DICOM header says its pixel data holds, read before the pixels are."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits: int

    @property
    def array_bytes(self) -> int:
        """Bytes of the decoded pixel array (1-bit pixels are unpacked to a byte each)."""
        return self.frames * self.rows * self.columns * self.samples * max(self.bits // 8, 1)

    @property
    def stored_bytes(self) -> int:
        """Bytes the pixel data declares (at most the array's)."""
        return self.array_bytes if self.bits >= 8 else -(-self.array_bytes // 8)


def _from_dicom(data: bytes, name: str, opts: ImageOptions) -> list[Image.Image]:
    """Header first (size, frames, bits), checked against the limits; then the pixels, frame by frame."""
    try:
        header, read_pixels = _dicom_reader(data, name)
    except InputError:
        raise
    except Exception as error:  # pydicom raises many types for broken files
        raise InputError(f"{name}: unreadable DICOM ({type(error).__name__}: {error}).") from None
    shape = _dicom_shape(header, name, opts)
    _admit((shape.columns, shape.rows), name, opts, count=shape.frames)
    window = opts.dicom_window or _dicom_window(header, name)
    slope = _dicom_float(header, "RescaleSlope", name, default=1.0)
    intercept = _dicom_float(header, "RescaleIntercept", name, default=0.0)
    pixels = shape.rows * shape.columns
    kept = shape.frames * pixels * RGB_BYTES
    # reading: the stored (or inflated) bytes, pydicom's copy and its array; converting: the array,
    # the RGB frames and one frame's uint8 gray (measured: 16-bit 5792x5792, 200 MB of 268 here)
    peak = max(3 * shape.stored_bytes, shape.array_bytes + kept + 2 * pixels)
    with opts.budget.decoding(name, peak, kept):
        try:
            dataset = read_pixels(shape)
            array = dataset.pixel_array
        except InputError:
            raise
        except Exception as error:  # pydicom raises many types for broken pixel data
            raise InputError(f"{name}: unreadable DICOM ({type(error).__name__}: {error}).") from None
        del dataset.PixelData  # the decoded array is all that is needed from here on
        stack = array if shape.frames > 1 else array[None]
        if shape.samples == 3:
            return [_checked_rgb(Image.fromarray(_to_uint8(frame)), name, opts) for frame in stack]
        invert = header.get("PhotometricInterpretation", "") == "MONOCHROME1"
        images = []
        for frame in stack:
            gray = _apply_window(_modality_values(frame, dataset, slope, intercept), window)
            if invert:
                np.subtract(255, gray, out=gray)
            images.append(_checked_rgb(Image.fromarray(gray), name, opts))
        return images


def _dicom_shape(header: Any, name: str, opts: ImageOptions) -> _DicomShape:
    shape = _DicomShape(
        rows=_dicom_int(header, "Rows", name),
        columns=_dicom_int(header, "Columns", name),
        frames=_dicom_int(header, "NumberOfFrames", name, default=1),
        samples=_dicom_int(header, "SamplesPerPixel", name, default=1),
        bits=_dicom_int(header, "BitsAllocated", name),
    )
    if shape.samples not in (1, 3):
        raise InputError(f"{name}: DICOM field SamplesPerPixel is {shape.samples}; expected 1 or 3.")
    if shape.bits not in (1, 8, 16, 32, 64):
        raise InputError(f"{name}: DICOM field BitsAllocated is {shape.bits}; expected 1, 8, 16, 32 or 64.")
    if shape.frames > opts.max_frames:
        raise InputError(
            f"{name}: DICOM field NumberOfFrames is {shape.frames}, over the limit of {opts.max_frames} "
            "(max_frames)."
        )
    return shape


def _dicom_reader(data: bytes, name: str) -> tuple[Any, Callable[[_DicomShape], Any]]:
    """The data set without its pixel data, and a function that reads all of it once checked.

    pydicom inflates a deflated data set in one unbounded `zlib.decompress`; here it is inflated by
    hand: the header within DICOM_HEADER_LIMIT, the rest within what the header declares.
    """
    import pydicom
    from pydicom.filereader import read_dataset, read_preamble

    stream = io.BytesIO(data)
    read_preamble(stream, False)
    meta = read_dataset(stream, False, True, stop_when=lambda tag, vr, length: tag.group != 2)
    if str(meta.get("TransferSyntaxUID", "")) != _DEFLATED:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        return header, lambda shape: pydicom.dcmread(io.BytesIO(data))
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    head = inflater.decompress(data[stream.tell() :], DICOM_HEADER_LIMIT)
    header_stream = io.BytesIO(head)
    header = read_dataset(header_stream, False, True, stop_when=lambda tag, vr, length: tag in _PIXEL_TAGS)
    if header_stream.tell() >= len(head) and not inflater.eof:
        raise InputError(
            f"{name}: the deflated DICOM header inflates past {DICOM_HEADER_LIMIT:,} bytes before "
            "its pixel data; refused."
        )

    def read_all(shape: _DicomShape) -> Any:
        rest = inflater.decompress(inflater.unconsumed_tail, shape.stored_bytes + DICOM_TRAILER_LIMIT)
        if inflater.unconsumed_tail or inflater.decompress(b"", 1):
            raise InputError(
                f"{name}: the deflated DICOM data inflates past the size its header declares "
                f"({shape.rows}x{shape.columns}, {shape.frames} frame(s), {shape.bits} bits); refused."
            )
        dataset = read_dataset(io.BytesIO(head + rest), False, True)
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian  # what is left once inflated
        return pydicom.dataset.FileDataset(
            name, dataset, preamble=data[:128], file_meta=pydicom.dataset.FileMetaDataset(meta)
        )

    return header, read_all


def _dicom_value(dataset: Any, keyword: str, name: str) -> Any:
    """A header field's value (the first of several), or InputError naming the field it cannot parse."""
    try:
        value = dataset.get(keyword)
    except Exception:  # pydicom converts values lazily and raises many types for malformed ones
        value = _raw_dicom_value(dataset, keyword)
        raise InputError(f"{name}: DICOM field {keyword} {value!r} is not a number.") from None
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        value = list(value)
        value = value[0] if value else None
    return value


def _raw_dicom_value(dataset: Any, keyword: str) -> Any:
    from pydicom.datadict import tag_for_keyword

    try:
        return dataset.get_item(tag_for_keyword(keyword)).value
    except Exception:
        return "?"


def _dicom_int(dataset: Any, keyword: str, name: str, *, default: int | None = None) -> int:
    value = _dicom_value(dataset, keyword, name)
    if value is None or value == "":
        if default is None:
            raise InputError(f"{name}: unreadable DICOM: the field {keyword} is missing.")
        return default
    try:
        number = float(value)
        if number != int(number):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise InputError(
            f"{name}: DICOM field {keyword} {str(value)[:40]!r} is not a whole number."
        ) from None
    if number < 1:
        raise InputError(f"{name}: DICOM field {keyword} is {int(number)}; it must be at least 1.")
    return int(number)


def _dicom_float(dataset: Any, keyword: str, name: str, *, default: float | None = None) -> float | None:
    value = _dicom_value(dataset, keyword, name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name}: DICOM field {keyword} {str(value)[:40]!r} is not a number.") from None
    if not np.isfinite(number):
        raise InputError(f"{name}: DICOM field {keyword} is {number}; it must be a finite number.")
    return number


def _dicom_window(dataset: Any, name: str) -> tuple[float, float] | None:
    """The file's default window (the first of several), or None when it has none."""
    centre = _dicom_float(dataset, "WindowCenter", name)
    width = _dicom_float(dataset, "WindowWidth", name)
    if centre is None or width is None:
        return None
    return centre, width


def _modality_values(frame: np.ndarray, dataset: Any, slope: float, intercept: float) -> np.ndarray:
    """One frame in modality units (e.g. Hounsfield) as float32: the linear rescale done in place."""
    if "ModalityLUTSequence" in dataset:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(frame, dataset), dtype=np.float32)
    values = frame.astype(np.float32)
    values *= slope
    values += intercept
    return values


def _apply_window(values: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Map float values to 0-255 with a (centre, width) window, or min-max when there is none (in place)."""
    if window is None:
        return _to_uint8(values, in_place=True)
    centre, width = window
    low, high = centre - width / 2, centre + width / 2
    np.clip(values, low, high, out=values)
    values -= low
    values /= max(high - low, 1e-6)
    values *= 255
    return np.round(values, out=values).astype(np.uint8)


# ---- arrays and tensors --------------------------------------------------------------------------


def _to_uint8(values: np.ndarray, *, in_place: bool = False) -> np.ndarray:
    """Min-max scale any numeric array to uint8 (16-bit images, unwindowed DICOM).

    Scaled in float32, in place when `in_place` and the array is float32 already: a float64 copy
    of a large image would cost 8 bytes a pixel.
    """
    if values.dtype == np.uint8:
        return values
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    if not (in_place and values.dtype == np.float32 and values.flags.writeable):
        values = values.astype(np.float32)
    values -= low
    values /= high - low
    values *= 255
    return np.round(values, out=values).astype(np.uint8)


def _from_array(array: np.ndarray, name: str, opts: ImageOptions) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise InputError(f"{name}: shape {tuple(array.shape)} is not an image; expected HxW, HxWx3 or HxWx4.")
    _admit((array.shape[1], array.shape[0]), name, opts)
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
