"""Hostile images: every decoder checks the size from the header before it decodes.

Each input is built here: a 1-bit PNG of 8192x8192 (11 KB), a deflated DICOM of 9000x9000 whose
zeros are streamed through zlib (80 KB), a PDF of 16 pages of 4000 pt (2 KB), DICOM headers whose
numbers are not numbers. The library refuses them with an InputError naming the input and the field;
the server answers 400 (503 while other requests' images fill the decode memory), and the peak memory
of decoding any of them stays under 400 MB (measured in a fresh process).
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

from glmlab.errors import BusyError, InputError
from glmlab.images import MB, DecodeMemory, ImageBudget, load_image, to_pil
from glmlab.serve import ServerSettings, create_app

SERVER_DEFAULTS = ServerSettings(model="tiny")
MAX_RSS_GROWTH_MB = 400


# ---- building hostile inputs ---------------------------------------------------------------------


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def one_bit_png(width: int, height: int | None = None) -> bytes:
    return png_bytes(Image.new("1", (width, height or width)))


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _file_bytes(dataset: FileDataset) -> tuple[bytes, bytes]:
    """(file meta with preamble, data set) as written by pydicom, split where the data set starts."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    meta_end = 132 + 12 + struct.unpack("<I", data[140:144])[0]  # after (0002,0000) and its group
    return data[:meta_end], data[meta_end:]


def dicom_bytes(
    rows: int,
    columns: int,
    *,
    bits: int = 16,
    frames: int | None = None,
    deflated: bool = False,
    pixels: np.ndarray | None = None,
    extra_bytes: int = 0,
    patch: tuple[bytes, bytes] | None = None,
    **fields: object,
) -> bytes:
    """A CT DICOM whose pixel data (zeros unless given) is streamed straight into the file, through
    deflate when `deflated`, so a 9000x9000 image costs neither memory nor time to build. `patch`
    replaces bytes of the header (a number field turned into text); `extra_bytes` of zeros after
    the pixel data make a deflated stream inflate past what its header declares."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset("hostile.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.Modality = "CT"
    dataset.Rows, dataset.Columns = rows, columns
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = bits
    dataset.HighBit = bits - 1
    dataset.PixelRepresentation = 0
    if frames is not None:
        dataset.NumberOfFrames = frames
    for keyword, value in fields.items():
        setattr(dataset, keyword, value)
    plain_meta, body = _file_bytes(dataset)
    if patch is not None:
        assert body.count(patch[0]) == 1, patch
        body = body.replace(*patch)
    size = rows * columns * (frames or 1) * bits // 8
    body += struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB" if bits == 8 else b"OW", 0, size)
    chunks = [pixels.tobytes()] if pixels is not None else _zeros(size)
    if not deflated:
        return plain_meta + body + b"".join(chunks)
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    dataset.clear()
    deflated_meta, _ = _file_bytes(dataset)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [deflated_meta, compressor.compress(body)]
    parts += [compressor.compress(chunk) for chunk in [*chunks, *_zeros(extra_bytes)]]
    return b"".join([*parts, compressor.flush()])


def _zeros(size: int, chunk: int = 4 * MB) -> list[bytes]:
    block = bytes(chunk)
    return [block] * (size // chunk) + [bytes(size % chunk)]


def pdf_bytes(pages: int, width_pt: float, height_pt: float) -> bytes:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument.new()
    for _ in range(pages):
        document.new_page(width_pt, height_pt)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def server_budget(settings: ServerSettings = SERVER_DEFAULTS) -> ImageBudget:
    """What `glmlab serve` gives one request with these settings."""
    return ImageBudget(
        max_images=settings.max_images,
        max_pixels=settings.max_request_pixels,
        memory=DecodeMemory(settings.decode_memory_bytes),
    )


@pytest.fixture(scope="module")
def big_one_bit_png() -> bytes:
    data = one_bit_png(8192)
    assert len(data) < 12_000  # 11 KB for 67 M pixels
    return data


@pytest.fixture(scope="module")
def deflated_dicom_9000() -> bytes:
    data = dicom_bytes(9000, 9000, bits=8, deflated=True)
    assert len(data) < 90_000  # 80 KB for 81 M pixels
    return data


@pytest.fixture(scope="module")
def huge_pdf() -> bytes:
    data = pdf_bytes(16, 4000, 4000)
    assert len(data) < 3_000
    return data


# ---- the library: sizes from headers, before decoding ---------------------------------------------


def test_sixteen_one_bit_pngs_are_refused_by_the_request_pixel_budget(big_one_bit_png):
    budget = server_budget()
    with pytest.raises(InputError) as caught:
        to_pil(data_url(big_one_bit_png), budget=budget)
    assert str(caught.value) == (
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAIAAAACAAAQAAAA...: 67,108,864 decoded pixels "
        "would bring this request to 67,108,864, over the limit of 16,777,216 (max_request_pixels); "
        "downscale the images or send fewer."
    )
    assert budget.images == 0 and budget.memory.used == 0


def test_the_request_pixel_budget_counts_every_image_and_stops_at_the_first_over_it():
    budget = server_budget()
    small = data_url(one_bit_png(2048))  # 4 M pixels each: 4 fit in 16 M
    images = [image for _ in range(4) for image in to_pil(small, budget=budget)]
    assert len(images) == 4 and images[0].size == (2048, 2048) and images[0].mode == "RGB"
    assert budget.memory.used == 4 * 2048 * 2048 * 4  # the kept RGB images, held until release
    with pytest.raises(
        InputError, match=r"4,194,304 decoded pixels would bring this request to 20,971,520, over"
    ):
        to_pil(small, budget=budget)
    budget.release()
    assert budget.memory.used == 0


def test_the_image_count_budget_counts_pdf_pages():
    budget = ImageBudget(max_images=3)
    to_pil(one_bit_png(8), budget=budget)
    with pytest.raises(
        InputError,
        match=r"bytes input: 3 image\(s\) would bring this request to 4 images, over the limit of 3 \(max_images",
    ):
        to_pil(pdf_bytes(3, 72, 72), budget=budget)


def test_a_pdf_of_sixteen_huge_pages_is_refused_before_any_page_is_rendered(huge_pdf):
    # Each page alone is under the per-image limit (8000x8000 at 144 dpi); together they are not.
    with pytest.raises(
        InputError,
        match=r"16 decoded image\(s\) would hold about 3907 MB of memory, over the decode memory budget of 1024 MB",
    ):
        to_pil(huge_pdf)
    with pytest.raises(
        InputError,
        match=r"1,024,000,000 decoded pixels would bring this request to 1,024,000,000, over the limit of 16,777,216",
    ):
        to_pil(huge_pdf, budget=server_budget())
    with pytest.raises(InputError, match=r"the PDF has 16 pages, over the limit of 8 \(max_frames\)"):
        to_pil(huge_pdf, max_frames=8)


def test_a_pdf_page_over_the_pixel_limit_is_named():
    data = pdf_bytes(1, 9000, 9000)
    with pytest.raises(InputError, match=r"page 1: 18000x18000 = 324,000,000 pixels is over the limit"):
        to_pil(data)


def test_a_deflated_dicom_of_9000_squared_is_refused_from_its_header(deflated_dicom_9000):
    with pytest.raises(InputError) as caught:
        to_pil(deflated_dicom_9000)
    assert str(caught.value) == (
        "bytes input: 9000x9000 = 81,000,000 pixels is over the limit "
        "of 67,108,864 (a decompression bomb guard); downscale it or raise max_input_pixels."
    )


def test_a_deflated_dicom_that_inflates_past_its_header_is_refused(tmp_path):
    path = tmp_path / "liar.dcm"
    path.write_bytes(dicom_bytes(16, 16, bits=8, deflated=True, extra_bytes=8 * MB))
    with pytest.raises(InputError) as caught:
        to_pil(path)
    assert str(caught.value) == (
        f"{path}: the deflated DICOM data inflates past the size its header declares (16x16, 1 frame(s), "
        "8 bits); refused."
    )


def test_a_deflated_dicom_decodes_like_the_plain_one(tmp_path):
    stored = np.array([[0, 1024, 1064, 2048]], dtype=np.uint16).repeat(4, axis=0)  # HU -1024, 0, 40, 1024
    fields = {"RescaleSlope": 1, "RescaleIntercept": -1024, "WindowCenter": 40, "WindowWidth": 400}
    plain = load_image(dicom_bytes(4, 4, pixels=stored, **fields))
    deflated = load_image(dicom_bytes(4, 4, pixels=stored, deflated=True, **fields))
    expected = [0, round(160 / 400 * 255), round(200 / 400 * 255), 255]
    assert np.asarray(plain)[0, :, 0].tolist() == np.asarray(deflated)[0, :, 0].tolist() == expected


def test_dicom_frames_are_capped():
    with pytest.raises(
        InputError,
        match=r"bytes input: DICOM field NumberOfFrames is 65, over the limit of 64 \(max_frames\)\.",
    ):
        to_pil(dicom_bytes(2, 2, frames=65))


@pytest.mark.parametrize(
    ("fields", "patch", "message"),
    [
        (
            {"WindowCenter": "1234", "WindowWidth": "400"},
            (b"1234", b"abcd"),
            "DICOM field WindowCenter 'abcd' is not a number.",
        ),
        (
            {"WindowCenter": "40", "WindowWidth": "123456"},
            (b"123456", b"1e9999"),
            "DICOM field WindowWidth is inf; it must be a finite number.",
        ),
        ({"RescaleSlope": "1234"}, (b"1234", b"x.5 "), "DICOM field RescaleSlope 'x.5' is not a number."),
        (
            {"RescaleIntercept": "1234"},
            (b"1234", b"nan "),
            "DICOM field RescaleIntercept is nan; it must be a finite number.",
        ),
        ({"frames": 77}, (b"77", b"xx"), "DICOM field NumberOfFrames 'xx' is not a whole number."),
        ({"frames": 1}, None, None),
    ],
    ids=[
        "window-centre",
        "window-width-overflow",
        "rescale-slope",
        "rescale-intercept-nan",
        "frames",
        "valid",
    ],
)
def test_dicom_header_fields_that_are_not_numbers_name_the_field(tmp_path, fields, patch, message):
    fields = dict(fields)
    frames = fields.pop("frames", None)
    path = tmp_path / "ct.dcm"
    path.write_bytes(dicom_bytes(2, 2, frames=frames, patch=patch, **fields))
    if message is None:
        assert load_image(path).size == (2, 2)
        return
    with pytest.raises(InputError) as caught:
        to_pil(path)
    assert str(caught.value) == f"{path}: {message}"


def test_dicom_rows_of_zero_is_refused():
    with pytest.raises(InputError, match=r"DICOM field Rows is 0; it must be at least 1\."):
        to_pil(dicom_bytes(0, 4))


def test_pil_opens_only_the_formats_glmlab_supports():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
    assert Image.open(io.BytesIO(eps)).format == "EPS"  # PIL alone would hand it to Ghostscript
    with pytest.raises(InputError, match=r"bytes input: not an image \(PIL could not identify it\)"):
        to_pil(eps)


# ---- the process-wide decode memory ----------------------------------------------------------------


def test_a_request_that_alone_needs_more_than_the_memory_budget_is_an_input_error():
    rgba = png_bytes(Image.new("RGBA", (1024, 1024)))  # keeps 4 MB as RGB, needs 9 MB to decode
    budget = ImageBudget(memory=DecodeMemory(6 * MB), wait_s=60)
    started = time.monotonic()
    with pytest.raises(
        InputError,
        match=r"^bytes input: decoding it needs about 9 MB of memory, over the decode memory budget of 6 MB "
        r"\(max_decode_mb\)",
    ):
        to_pil(rgba, budget=budget)
    assert time.monotonic() - started < 5  # refused at once, not after waiting
    budget = ImageBudget(memory=DecodeMemory(6 * MB))
    to_pil(png_bytes(Image.new("RGB", (1024, 512))), budget=budget)  # keeps 2 MB
    with pytest.raises(
        InputError, match=r"its 1 decoded image\(s\) would hold about 7 MB of memory, over the decode memory"
    ):
        to_pil(png_bytes(Image.new("RGB", (1024, 1025))), budget=budget)


def test_concurrent_budgets_share_the_memory_wait_then_get_busy():
    memory = DecodeMemory(10 * MB)
    other = ImageBudget(memory=memory)
    to_pil(png_bytes(Image.new("RGB", (1024, 2048))), budget=other)  # keeps 8 MB
    assert memory.used == 8 * MB
    mine = ImageBudget(memory=memory, wait_s=0.05)
    image = png_bytes(Image.new("RGB", (1024, 1024)))  # needs 4 MB
    with pytest.raises(
        BusyError, match=r"the decode memory budget \(10 MB\) is in use by other requests' images"
    ):
        to_pil(image, budget=mine)
    assert memory.used == 8 * MB
    patient = ImageBudget(memory=memory, wait_s=30)
    threading.Timer(0.2, other.release).start()
    started = time.monotonic()
    assert to_pil(image, budget=patient)[0].size == (1024, 1024)
    assert 0.15 < time.monotonic() - started < 10
    assert memory.used == 4 * MB
    patient.release()
    assert memory.used == 0


def test_a_budget_released_before_its_decode_ends_gives_the_memory_back():
    memory = DecodeMemory(10 * MB)
    budget = ImageBudget(memory=memory)
    with budget.decoding("late", 6 * MB, 4 * MB):
        budget.release()  # the request ended (client gone) while a worker thread was decoding
    assert memory.used == 0 and budget.held == 0


# ---- the server: 400 for each hostile request, 503 while memory is in use ---------------------------


@pytest.fixture(scope="module")
def server(served_vlm):
    app = create_app(served_vlm, ServerSettings(model="tiny"))  # the default limits
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as client:
        yield client, app.state.host


def image_request(*urls: str) -> dict:
    content = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return {
        "messages": [{"role": "user", "content": [*content, {"type": "text", "text": "?"}]}],
        "max_tokens": 2,
    }


def error_message(response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["message"]


def test_server_refuses_each_hostile_request_with_400(server, big_one_bit_png, deflated_dicom_9000, huge_pdf):
    client, host = server
    cases = [
        ([data_url(big_one_bit_png)] * 16, "over the limit of 16,777,216 (max_request_pixels)"),
        ([data_url(one_bit_png(2048))] * 5, "would bring this request to 20,971,520, over the limit"),
        ([data_url(one_bit_png(8))] * 33, "would bring this request to 33 images, over the limit of 32"),
        (
            [data_url(deflated_dicom_9000, "application/dicom")],
            "9000x9000 = 81,000,000 pixels is over the limit",
        ),
        ([data_url(huge_pdf, "application/pdf")], "1,024,000,000 decoded pixels would bring this request"),
        (
            [data_url(dicom_bytes(2, 2, WindowCenter="1234", WindowWidth="400", patch=(b"1234", b"abcd")))],
            "DICOM field WindowCenter 'abcd' is not a number.",
        ),
    ]
    for urls, expected in cases:
        message = error_message(client.post("/v1/chat/completions", json=image_request(*urls)), 400)
        assert message.startswith("InputError: data:") and expected in message, message
        assert host.decode_memory.used == 0  # nothing is held once the request ended
    assert client.get("/health").status_code == 200


def test_server_answers_503_while_other_requests_fill_the_decode_memory(server, monkeypatch):
    client, host = server
    monkeypatch.setattr("glmlab.serve.host.DECODE_WAIT_S", 0.05)
    small = data_url(png_bytes(Image.new("RGB", (64, 64), "red")))
    host.decode_memory.acquire(host.decode_memory.limit, "other requests")
    try:
        response = client.post("/v1/chat/completions", json=image_request(small))
        assert "is in use by other requests' images; retry shortly" in error_message(response, 503)
        assert response.headers["retry-after"] == "1" and response.json()["error"]["code"] == "server_busy"
    finally:
        host.decode_memory.release(host.decode_memory.limit)
    assert client.post("/v1/chat/completions", json=image_request(small)).status_code == 200
    assert host.decode_memory.used == 0


# ---- peak memory of each hostile request, in a fresh process -----------------------------------------

# Run before a measured step: the peak RSS (ru_maxrss, VmHWM) is reset, or it would still hold the
# imports' peak (and a forking parent's) and hide the step's growth.
_PEAK_RSS = """
import json, re, sys


def status_kb(field):
    return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))


def reset_peak():
    open("/proc/self/clear_refs", "w").write("5")
    return status_kb("VmRSS")


def growth_mb(before):
    return round((status_kb("VmHWM") - before) / 1024, 1)
"""

_DECODE_REQUEST = """
from PIL import Image
import pydicom, pypdfium2  # imported before the baseline: their code is not the request's cost
from glmlab.images import DecodeMemory, ImageBudget, to_pil

Image.init()
to_pil(Image.new("RGB", (8, 8)))
request = json.load(open(sys.argv[1]))
limits = request["limits"]
before = reset_peak()
budget = ImageBudget(
    max_images=limits["max_images"],
    max_pixels=limits["max_request_pixels"],
    memory=DecodeMemory(limits["decode_memory_bytes"]),
)
options = {"max_input_pixels": limits["max_input_pixels"], "max_frames": limits["max_images"]}
images, error = [], None
try:
    for url in request["urls"]:  # what the server does with each image part of a request
        images += to_pil(url, budget=budget, **options)
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"
print(json.dumps({"growth_mb": growth_mb(before), "images": len(images), "error": error}))
"""

_SERVE_REQUEST = """
import warnings
from fastapi.testclient import TestClient
import glmlab
from glmlab.serve import ServerSettings, create_app

warnings.simplefilter("ignore")
client = TestClient(create_app(glmlab.load("tiny"), ServerSettings(model="tiny")), base_url="http://localhost")
request = json.load(open(sys.argv[1]))
warm = {**request, "messages": [{"role": "user", "content": "hi"}]}
assert client.post("/v1/chat/completions", json=warm).status_code == 200
before = reset_peak()
response = client.post("/v1/chat/completions", json=request)
print(json.dumps({"status": response.status_code, "growth_mb": growth_mb(before)}))
"""

needs_peak_reset = pytest.mark.skipif(
    not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's peak-RSS reset"
)


def measure(script: str, payload: dict, tmp_path) -> dict:
    """Run `script` in a fresh Python on `payload` (a JSON file) and return the JSON it prints."""
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(payload))
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS + script, str(path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@needs_peak_reset
def test_peak_memory_of_each_hostile_request_stays_under_400_mb(
    tmp_path, big_one_bit_png, deflated_dicom_9000, huge_pdf
):
    largest = 4096  # 4096x4096 is exactly the default 16 M pixels a request may decode
    cases = {
        "16 one-bit PNGs of 8192x8192": [data_url(big_one_bit_png)] * 16,
        "deflated DICOM of 9000x9000": [data_url(deflated_dicom_9000, "application/dicom")],
        "PDF of 16 pages of 4000 pt": [data_url(huge_pdf, "application/pdf")],
        "DICOM whose WindowCenter is text": [
            data_url(dicom_bytes(2, 2, WindowCenter="1234", WindowWidth="400", patch=(b"1234", b"abcd")))
        ],
        "accepted: one-bit PNG of 4096x4096": [data_url(one_bit_png(largest))],
        "accepted: RGBA PNG of 4096x4096": [
            data_url(png_bytes(Image.new("RGBA", (largest, largest), (9, 9, 9, 90))))
        ],
        "accepted: deflated 16-bit DICOM of 4096x4096": [
            data_url(dicom_bytes(largest, largest, deflated=True), "application/dicom")
        ],
        "accepted: PDF page of 4096x4096 at 144 dpi": [data_url(pdf_bytes(1, largest / 2, largest / 2))],
    }
    settings = SERVER_DEFAULTS
    limits = {
        "max_images": settings.max_images,
        "max_request_pixels": settings.max_request_pixels,
        "decode_memory_bytes": settings.decode_memory_bytes,
        "max_input_pixels": settings.max_input_pixels,
    }
    figures = {
        name: measure(_DECODE_REQUEST, {"urls": urls, "limits": limits}, tmp_path)
        for name, urls in cases.items()
    }
    print(json.dumps(figures, indent=1))
    for name, figure in figures.items():
        assert figure["growth_mb"] < MAX_RSS_GROWTH_MB, (name, figure)
        if name.startswith("accepted"):
            assert figure["error"] is None and figure["images"] == 1, (name, figure)
        else:
            assert figure["error"].startswith("InputError: "), (name, figure)


@pytest.mark.slow
@needs_peak_reset
def test_the_largest_request_the_defaults_accept_stays_under_400_mb_end_to_end(tmp_path, tiny_path):
    """Decoding, the processor and generation together, on the tiny model, with the default limits."""
    width, height = 4096, 4096  # exactly the default 16 M pixels, RGBA: the costliest to decode
    assert width * height == SERVER_DEFAULTS.max_request_pixels
    image = png_bytes(Image.new("RGBA", (width, height), (9, 9, 9, 90)))
    figure = measure(_SERVE_REQUEST, image_request(data_url(image)), tmp_path)
    print(figure)
    assert figure["status"] == 200 and figure["growth_mb"] < MAX_RSS_GROWTH_MB, figure
