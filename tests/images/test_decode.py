"""extractor.images.decode: content sniffing, EXIF orientation, every mode to RGB, draft, resize policies, bad files."""

from __future__ import annotations

import pickle
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from extractor.errors import AlexfeatError
from extractor.images.decode import DEFAULT_MAX_PIXELS, DecodeError, ResizeSpec, decode_image
from tests import imagefiles as files

CAFFE = ResizeSpec.parse("squash256-center227")
TORCHVISION = ResizeSpec.parse("shorter256-center224")


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def _reference(path: Path, size: tuple[int, int], box: tuple[int, int, int, int] | None) -> np.ndarray:
    """The plain reference pipeline: full decode, PIL bilinear resize of the whole image, then crop."""
    with Image.open(path) as img:
        out = img.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(out.crop(box) if box else out)


# ---- ResizeSpec


@pytest.mark.parametrize(
    ("text", "mode", "size", "crop", "out"),
    [
        ("squash256-center227", "squash", 256, 227, 227),
        ("shorter256-center224", "shorter", 256, 224, 224),
        ("squash227", "squash", 227, None, 227),
    ],
)
def test_resize_spec_parses_and_prints_back(text: str, mode: str, size: int, crop: int | None, out: int) -> None:
    spec = ResizeSpec.parse(text)
    assert (spec.mode, spec.size, spec.crop, spec.output_size) == (mode, size, crop, out)
    assert str(spec) == text


@pytest.mark.parametrize(
    "text", ["bicubic256", "squash", "shorter256", "squash200-center227", "squash0", "squash256-centre227", ""]
)
def test_invalid_resize_spec_names_the_valid_forms(text: str) -> None:
    with pytest.raises(AlexfeatError, match="squash256-center227"):
        ResizeSpec.parse(text)


# ---- resize policies against the reference pipelines


def test_squash_center_crop_matches_plain_pil_bilinear(tmp_path: Path) -> None:
    path = files.make_photo(tmp_path / "photo.png", (500, 375))
    got = decode_image(path, CAFFE)
    assert got.pixels.dtype == np.uint8 and got.pixels.shape == (227, 227, 3)
    assert got.pixels.flags.c_contiguous
    assert (got.width, got.height) == (500, 375)
    diff = _diff(got.pixels, _reference(path, (256, 256), (14, 14, 241, 241)))
    assert diff.max() <= 1 and diff.mean() < 0.01


@pytest.mark.parametrize(
    ("size", "resized", "box"),
    [((500, 375), (341, 256), (58, 16, 282, 240)), ((375, 500), (256, 341), (16, 58, 240, 282))],
)
def test_shorter_side_then_center_crop_matches_torchvision_rule(
    tmp_path: Path, size: tuple[int, int], resized: tuple[int, int], box: tuple[int, int, int, int]
) -> None:
    # torchvision: Resize(256) truncates the long side (341.33 -> 341), CenterCrop(224) rounds (58.5 -> 58).
    path = files.make_photo(tmp_path / "photo.png", size)
    got = decode_image(path, TORCHVISION)
    assert got.pixels.shape == (224, 224, 3) and (got.width, got.height) == size
    diff = _diff(got.pixels, _reference(path, resized, box))
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_squash_without_crop_resizes_straight_to_the_size(tmp_path: Path) -> None:
    path = files.make_photo(tmp_path / "photo.png", (300, 200))
    got = decode_image(path, ResizeSpec.parse("squash227"))
    assert np.array_equal(got.pixels, _reference(path, (227, 227), None))


def test_bytes_and_path_give_the_same_pixels(tmp_path: Path) -> None:
    path = files.make_photo(tmp_path / "photo.jpg", (200, 150))
    from_path, from_bytes = decode_image(path, CAFFE), decode_image(path.read_bytes(), CAFFE)
    assert np.array_equal(from_path.pixels, from_bytes.pixels)
    assert (from_bytes.width, from_bytes.height) == (200, 150)


def test_jpeg_named_png_decodes_by_content(tmp_path: Path) -> None:
    misnamed = files.make_photo(tmp_path / "photo.png", (200, 150), format="JPEG")
    proper = tmp_path / "photo.jpg"
    proper.write_bytes(misnamed.read_bytes())
    assert np.array_equal(decode_image(misnamed, CAFFE).pixels, decode_image(proper, CAFFE).pixels)


# ---- draft: large JPEGs decode in the DCT domain


@pytest.fixture(scope="module")
def large_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return files.make_large_photo(tmp_path_factory.mktemp("large") / "large.jpg", (2800, 2100))


def test_large_jpeg_reports_original_size_and_stays_close_to_full_decode(large_jpeg: Path) -> None:
    got = decode_image(large_jpeg, CAFFE)
    assert (got.width, got.height) == (2800, 2100)
    # draft decodes at 1/8 scale (350x263) before the bilinear resize: nearly the full-resolution result.
    assert _diff(got.pixels, _reference(large_jpeg, (256, 256), (14, 14, 241, 241))).mean() < 2.0


def test_large_jpeg_is_decoded_in_the_dct_domain(large_jpeg: Path) -> None:
    # draft() makes libjpeg decode at 1/8 scale (the smallest that keeps both sides >= 256): measured 2.0x less
    # CPU than a full decode for 12 MP photos; the result is exactly that of the drafted image.
    with Image.open(large_jpeg) as img:
        img.draft("RGB", (256, 256))
        assert img.size == (350, 263)
        expected = np.asarray(CAFFE.resize(img.convert("RGB")))
    np.testing.assert_array_equal(decode_image(large_jpeg, CAFFE).pixels, expected)


# ---- EXIF orientation


@pytest.mark.parametrize("orientation", [6, 8])
@pytest.mark.parametrize("size", [(500, 375), (800, 600)])  # the second one also goes through draft (1/2)
def test_sideways_photo_with_orientation_tag_decodes_like_the_upright_one(
    tmp_path: Path, orientation: int, size: tuple[int, int]
) -> None:
    upright = files.make_photo(tmp_path / "upright.jpg", size)
    sideways = files.make_sideways_photo(tmp_path / "sideways.jpg", orientation, size)
    with Image.open(sideways) as img:
        assert img.size == size[::-1]  # the stored pixels really are sideways
    got, want = decode_image(sideways, CAFFE), decode_image(upright, CAFFE)
    assert (got.width, got.height) == size
    assert _diff(got.pixels, want.pixels).mean() < 3.0


# ---- every mode ends as RGB


def test_grayscale_becomes_equal_rgb_channels(tmp_path: Path) -> None:
    path = files.make_grayscale(tmp_path / "gray.png", (200, 150))
    pixels = decode_image(path, CAFFE).pixels
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2])
    assert _diff(pixels, _reference(path, (256, 256), (14, 14, 241, 241))).max() <= 1


def test_bilevel_becomes_black_and_white(tmp_path: Path) -> None:
    pixels = decode_image(files.make_bilevel_png(tmp_path / "bw.png"), ResizeSpec.parse("squash64")).pixels
    assert (pixels[:, :28] == 0).all() and (pixels[:, 36:] == 255).all()


def test_la_is_composited_over_white(tmp_path: Path) -> None:
    pixels = decode_image(files.make_la_png(tmp_path / "la.png"), ResizeSpec.parse("squash64")).pixels
    assert (pixels[:, :28] == 255).all()
    assert (pixels[:, 36:] == files.GRAY_LEVEL).all()


@pytest.mark.parametrize("alpha", [0, 128, 255])
def test_rgba_is_composited_over_white(tmp_path: Path, alpha: int) -> None:
    pixels = decode_image(files.make_rgba_png(tmp_path / "rgba.png", alpha), CAFFE).pixels
    colour = np.array(files.RGBA_COLOR, dtype=np.float64)
    expected = colour * alpha / 255 + 255 * (1 - alpha / 255)
    assert np.abs(pixels.reshape(-1, 3) - expected).max() <= 1


def test_palette_without_transparency_keeps_its_colours(tmp_path: Path) -> None:
    pixels = decode_image(files.make_palette_png(tmp_path / "p.png"), ResizeSpec.parse("squash60")).pixels
    for stripe, colour in enumerate(files.PALETTE_COLORS):
        assert (pixels[stripe * 20 + 10] == colour).all()


def test_palette_with_transparency_is_composited_over_white(tmp_path: Path) -> None:
    path = files.make_palette_png(tmp_path / "pt.png", transparent=True)
    pixels = decode_image(path, ResizeSpec.parse("squash60")).pixels
    assert (pixels[10] == 255).all()  # the transparent top stripe
    for stripe in (1, 2):
        assert (pixels[stripe * 20 + 10] == files.PALETTE_COLORS[stripe]).all()


def test_palette_with_alpha_is_composited_over_white(tmp_path: Path) -> None:
    path = files.make_pa_tiff(tmp_path / "pa.tif")
    with Image.open(path) as img:
        assert img.mode == "PA"
    pixels = decode_image(path, ResizeSpec.parse("squash64")).pixels
    assert (pixels[:, :28] == 255).all() and (pixels[:, 36:] == files.PALETTE_COLORS[0]).all()


def test_cmyk_jpeg_decodes_like_its_rgb_original(tmp_path: Path) -> None:
    cmyk = files.make_cmyk_jpeg(tmp_path / "cmyk.jpg", (200, 150))
    rgb = files.make_photo(tmp_path / "rgb.png", (200, 150))
    with Image.open(cmyk) as img:
        assert img.mode == "CMYK"
    assert _diff(decode_image(cmyk, CAFFE).pixels, decode_image(rgb, CAFFE).pixels).mean() < 4.0


def _ramp_row(path: Path) -> np.ndarray:
    """Row 0, red channel, decoded at the file's own width (64): the horizontal ramp, unresized."""
    return decode_image(path, ResizeSpec.parse("squash64")).pixels[0, :, 0].astype(np.int64)


def test_16_bit_png_is_scaled_to_8_bits(tmp_path: Path) -> None:
    path = files.make_png16(tmp_path / "deep.png")
    with Image.open(path) as img:
        assert img.mode == "I;16"
    ramp = np.linspace(0, 65535, 64).round()
    assert np.array_equal(_ramp_row(path), np.rint(ramp * 255 / 65535))


@pytest.mark.parametrize(("peak", "scale"), [(4000, 255 / 4000), (200, 1.0)])
def test_32_bit_integer_tiff_is_scaled_by_its_maximum_when_over_255(tmp_path: Path, peak: int, scale: float) -> None:
    path = files.make_tiff_i(tmp_path / "int.tif", peak)
    with Image.open(path) as img:
        assert img.mode == "I"
    ramp = np.linspace(0, peak, 64).round()
    assert np.abs(_ramp_row(path) - ramp * scale).max() <= 0.5 + 1e-9


@pytest.mark.parametrize(("peak", "expected"), [(1.0, lambda r: r * 255), (300.0, lambda r: np.minimum(r, 255))])
def test_float_tiff_is_taken_as_0_1_or_clipped_0_255(
    tmp_path: Path, peak: float, expected: Callable[[np.ndarray], np.ndarray]
) -> None:
    path = files.make_tiff_f(tmp_path / "float.tif", peak)
    with Image.open(path) as img:
        assert img.mode == "F"
    ramp = np.linspace(0, peak, 64, dtype=np.float32).astype(np.float64)
    assert np.abs(_ramp_row(path) - expected(ramp)).max() <= 0.5 + 1e-4


@pytest.mark.parametrize(("name", "tolerance"), [("anim.gif", 0), ("anim.png", 0), ("anim.webp", 8)])
def test_animated_images_use_their_first_frame(tmp_path: Path, name: str, tolerance: int) -> None:
    path = files.make_animated(tmp_path / name)
    with Image.open(path) as img:
        assert img.n_frames == len(files.GIF_FRAME_COLORS)
    pixels = decode_image(path, CAFFE).pixels
    assert _diff(pixels, np.array(files.GIF_FRAME_COLORS[0], dtype=np.uint8)).max() <= tolerance


# ---- bad files: each becomes a DecodeError of its kind


def _kind(source: Path | bytes, **kwargs: int) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode_image(source, CAFFE, **kwargs)
    message = str(info.value)
    assert message and (isinstance(source, bytes) or str(source) not in message)  # the caller records the path
    return info.value


def test_truncated_jpeg_fails_instead_of_decoding_partially(tmp_path: Path) -> None:
    assert _kind(files.make_truncated_jpeg(tmp_path / "cut.jpg")).kind == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_corrupt_pixel_data_is_corrupt(tmp_path: Path) -> None:
    assert _kind(files.make_corrupt_png(tmp_path / "bad.png")).kind == "corrupt"


def test_damaged_header_with_an_image_signature_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    assert _kind(path).kind == "corrupt"


def test_empty_file_is_empty(tmp_path: Path) -> None:
    assert _kind(files.make_empty_file(tmp_path / "empty.jpg")).kind == "empty"
    assert _kind(b"").kind == "empty"


def test_text_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    error = _kind(files.make_text_file(tmp_path / "notes.jpg"))
    assert error.kind == "not_an_image" and "JPEG" in str(error)


def test_missing_file_or_folder_is_unreadable(tmp_path: Path) -> None:
    assert _kind(tmp_path / "gone.jpg").kind == "unreadable"
    (tmp_path / "folder.jpg").mkdir()
    assert _kind(tmp_path / "folder.jpg").kind == "unreadable"


@pytest.mark.parametrize("side", [10_000, 100_000])  # 1e8 pixels: between Pillow's warning and error; 1e10: over both
def test_bomb_is_refused_from_its_header(tmp_path: Path, side: int) -> None:
    path = files.make_png_header(tmp_path / "bomb.png", side, side)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        error = _kind(path)
    assert error.kind == "too_large" and f"{side * side:,}" in str(error) and f"{DEFAULT_MAX_PIXELS:,}" in str(error)
    assert time.perf_counter() - start < 0.5  # refused from the header: allocating 0.3-30 GB would not be
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_max_pixels_is_checked_against_the_real_size(tmp_path: Path) -> None:
    path = files.make_photo(tmp_path / "photo.jpg", (500, 375))
    error = _kind(path, max_pixels=500 * 375 - 1)
    assert error.kind == "too_large" and "500x375" in str(error)
    assert decode_image(path, CAFFE, max_pixels=500 * 375).pixels.shape == (227, 227, 3)


def test_max_pixels_above_pillows_limit_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    # 180 M pixels is over twice Pillow's default limit; allowed here, the (tiny) file then fails for what it is.
    path = files.make_png_header(tmp_path / "big.png", 15_000, 12_000)
    assert _kind(path, max_pixels=200_000_000).kind == "truncated"


def test_decode_error_keeps_its_kind_across_processes(tmp_path: Path) -> None:
    error = _kind(files.make_truncated_jpeg(tmp_path / "cut.jpg"))
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, DecodeError) and copy.kind == "truncated" and str(copy) == str(error)
