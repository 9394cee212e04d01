import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from glmlab.errors import InputError
from glmlab.images import image_to_data_url, load_image, to_pil, to_pil_list


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pdf_bytes(pages: int) -> bytes:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument.new()
    for _ in range(pages):
        document.new_page(144, 72)  # 2 x 1 inch
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def write_dicom(
    path,
    pixels: np.ndarray,
    *,
    centre=None,
    width=None,
    slope=1.0,
    intercept=-1024.0,
    photometric="MONOCHROME2",
):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.Modality = "CT"
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    if centre is not None:
        dataset.WindowCenter, dataset.WindowWidth = centre, width
    dataset.PixelData = pixels.astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_path_and_str_give_the_same_rgb_image(tmp_path, red_image):
    path = tmp_path / "a.png"
    red_image.save(path)
    from_path, from_str = to_pil(path)[0], to_pil(str(path))[0]
    assert from_path.mode == "RGB" and from_path.size == (112, 112)
    assert np.array_equal(np.asarray(from_path), np.asarray(from_str))


def test_pil_rgba_is_flattened_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert to_pil(image)[0].getpixel((0, 0)) == (255, 255, 255)


def test_numpy_uint8_float_and_grayscale():
    rgb = np.zeros((5, 6, 3), dtype=np.uint8)
    rgb[..., 1] = 200
    assert to_pil(rgb)[0].getpixel((0, 0)) == (0, 200, 0)
    assert to_pil(np.full((5, 6, 3), 0.5))[0].getpixel((0, 0)) == (128, 128, 128)
    gray = to_pil(np.full((5, 6), 77, dtype=np.uint8))[0]
    assert gray.mode == "RGB" and gray.getpixel((1, 1)) == (77, 77, 77)


def test_torch_chw_hwc_and_comfyui_batch():
    chw = torch.zeros(3, 8, 10)
    chw[0] = 1.0
    assert to_pil(chw)[0].size == (10, 8) and to_pil(chw)[0].getpixel((0, 0)) == (255, 0, 0)
    hwc = torch.zeros(8, 10, 3)
    hwc[..., 2] = 1.0  # blue: a wrong axis order would give another colour or size
    assert to_pil(hwc)[0].size == (10, 8) and to_pil(hwc)[0].getpixel((0, 0)) == (0, 0, 255)
    batch = torch.rand(2, 16, 20, 3)
    images = to_pil(batch)
    assert len(images) == 2 and images[1].size == (20, 16)


def test_bytes_and_data_url(red_image):
    data = png_bytes(red_image)
    assert to_pil(data)[0].getpixel((56, 56)) == (255, 0, 0)
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    assert to_pil(url)[0].getpixel((56, 56)) == (255, 0, 0)
    assert to_pil(image_to_data_url(red_image))[0].getpixel((56, 56)) == (255, 0, 0)


def test_pdf_gives_one_image_per_page_at_the_chosen_dpi(tmp_path):
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf_bytes(3))
    pages = to_pil(path, pdf_dpi=72)
    assert len(pages) == 3 and pages[0].size == (144, 72)
    assert to_pil(path, pdf_dpi=144)[0].size == (288, 144)


def test_pdf_pages_keep_their_colours():
    buffer = io.BytesIO()
    Image.new("RGB", (100, 50), (255, 0, 0)).save(buffer, format="PDF")  # a red page (JPEG inside)
    page = load_image(buffer.getvalue(), pdf_dpi=72)
    red, green, blue = page.getpixel((50, 25))
    assert page.size == (100, 50) and red > 250 and green < 5 and blue < 5


def test_dicom_applies_modality_lut_and_file_window(tmp_path):
    stored = np.array([[0, 1024, 1064, 2048]], dtype=np.uint16).repeat(4, axis=0)  # HU -1024, 0, 40, 1024
    path = write_dicom(tmp_path / "ct.dcm", stored, centre=40, width=400)  # window -160..240 HU
    gray = np.asarray(load_image(path))[..., 0]
    assert gray[0].tolist() == [0, round(160 / 400 * 255), round(200 / 400 * 255), 255]


def test_dicom_given_window_overrides_the_file(tmp_path):
    stored = np.array([[1024, 1524]], dtype=np.uint16).repeat(2, axis=0)  # 0 and 500 HU
    path = write_dicom(tmp_path / "ct.dcm", stored, centre=40, width=400)
    gray = np.asarray(load_image(path, dicom_window=(250, 500)))[..., 0]
    assert gray[0].tolist() == [0, 255]


def test_dicom_without_window_is_min_max_scaled_and_monochrome1_inverted(tmp_path):
    stored = np.array([[0, 100, 200]], dtype=np.uint16).repeat(2, axis=0)
    plain = np.asarray(load_image(write_dicom(tmp_path / "a.dcm", stored)))[..., 0]
    assert plain[0].tolist() == [0, 128, 255]
    inverted = np.asarray(load_image(write_dicom(tmp_path / "b.dcm", stored, photometric="MONOCHROME1")))[
        ..., 0
    ]
    assert inverted[0].tolist() == [255, 127, 0]


def test_to_pil_list_flattens_in_order(tmp_path, red_image):
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf_bytes(2))
    images = to_pil_list([red_image, path])
    assert [image.size for image in images] == [(112, 112), (288, 144), (288, 144)]


# ---- bad input -------------------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(InputError, match=r"nope\.png: no such file"):
        to_pil(tmp_path / "nope.png")


def test_corrupt_bytes_are_not_an_image(tmp_path):
    path = tmp_path / "invoice_03.png"
    path.write_bytes(b"this is not an image at all")
    with pytest.raises(
        InputError, match=r"invoice_03\.png: not an image \(PIL could not identify it\)\. Supported"
    ):
        to_pil(path)


def test_truncated_png_is_reported_as_corrupt(tmp_path, red_image):
    path = tmp_path / "cut.png"
    path.write_bytes(png_bytes(Image.effect_noise((300, 300), 50).convert("RGB"))[:400])
    with pytest.raises(InputError, match=r"cut\.png: corrupt or truncated image"):
        to_pil(path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (10000, 10000)).save(path)  # 100 M pixels in a few kilobytes
    assert path.stat().st_size < 200_000
    with pytest.raises(InputError, match=r"bomb\.png: 10000x10000 = 100,000,000 pixels is over the limit"):
        to_pil(path)


def test_giant_bomb_over_pil_hard_limit_is_refused(tmp_path):
    path = tmp_path / "giant.png"
    Image.new("1", (20000, 20000)).save(path)
    with pytest.raises(InputError, match=r"giant\.png: refused as a decompression bomb"):
        to_pil(path)


def test_pixel_limit_is_configurable(red_image):
    with pytest.raises(InputError, match="over the limit of 100"):
        to_pil(red_image, max_input_pixels=100)


def test_empty_pdf_is_refused(tmp_path):
    path = tmp_path / "empty.pdf"
    path.write_bytes(pdf_bytes(0))
    with pytest.raises(InputError, match=r"empty\.pdf: the PDF has no pages"):
        to_pil(path)


def test_corrupt_pdf_is_refused(tmp_path):
    path = tmp_path / "bad.pdf"
    path.write_bytes(b"%PDF-1.7\n garbage")
    with pytest.raises(InputError, match=r"bad\.pdf: corrupt PDF"):
        to_pil(path)


def test_unknown_object_type_is_refused():
    with pytest.raises(InputError, match="dict object: not an image input"):
        to_pil({"not": "an image"})


def test_bad_base64_in_data_url():
    with pytest.raises(InputError, match="invalid base64"):
        to_pil("data:image/png;base64,@@@not-base64@@@")


def test_http_urls_need_allow_urls():
    with pytest.raises(InputError, match="allow_urls=True"):
        to_pil("https://example.com/cat.png")


def test_empty_bytes_and_folders_are_refused(tmp_path):
    with pytest.raises(InputError, match="empty input"):
        to_pil(b"")
    with pytest.raises(InputError, match="is a folder"):
        to_pil(tmp_path)


def test_float_array_outside_unit_range_is_refused():
    with pytest.raises(InputError, match="float images must be in 0-1"):
        to_pil(np.full((4, 4, 3), 2.0))


def test_array_of_wrong_shape_is_refused():
    with pytest.raises(InputError, match=r"shape \(4, 4, 7\) is not an image"):
        to_pil(np.zeros((4, 4, 7), dtype=np.uint8))


def test_unreadable_dicom_is_refused(tmp_path):
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    with pytest.raises(InputError, match=r"broken\.dcm: unreadable DICOM"):
        to_pil(path)


def test_load_image_refuses_several(tmp_path):
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf_bytes(2))
    with pytest.raises(InputError, match="holds 2 images where one was expected"):
        load_image(path)
