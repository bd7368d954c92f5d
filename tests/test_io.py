"""data.io: every supported format written for real into tmp_path, calibration, the --pixel-size override, and
bad input of every kind turned into a one-line InputError (fuzzed with hypothesis)."""
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from data.io import FORMATS, MIN_SIZE, InputError, LoadedImage, check_pixel_size, load_image, parse_elements


def _image(shape=(80, 96), dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    if np.dtype(dtype).kind in "ui":
        a = a * min(np.iinfo(dtype).max, 60000)
    return a.astype(dtype)


def _signal(data, scales=(0.005, 0.005), units=("nm", "nm"), nav=0):
    """An rsciio signal dict, enough for its hspy and EMD (NCEM) writers."""
    axes = [dict(name=f"frame{i}", size=data.shape[i], scale=1.0, offset=0.0, units="", navigate=True)
            for i in range(nav)]
    axes += [dict(name=n, size=data.shape[nav + i], scale=s, offset=0.0, units=u, navigate=False)
             for i, (n, s, u) in enumerate(zip("yx", scales, units))]
    return dict(data=data, axes=axes, metadata={"General": {"title": "HAADF"}, "Signal": {"signal_type": ""},
                                                "_HyperSpy": {}},
                original_metadata={}, tmp_parameters={}, attributes={"_lazy": False},
                package_info={"name": "hyperspy", "version": "2.0"}, learning_results={}, models={})


def _write_hspy(path, data, **kw):
    from rsciio.hspy import file_writer

    file_writer(str(path), _signal(data, **kw), show_progressbar=False)
    return path


def _write_emd(path, data, **kw):
    from rsciio.emd import file_writer  # writes the Berkeley (NCEM) flavour only; Velox files have no writer

    file_writer(str(path), _signal(data, **kw))
    return path


def _write_dm(path, data, scale=0.05, units="nm", version=4):
    """A minimal DigitalMicrograph DM3/DM4 file (rsciio reads these but has no writer): the tag tree
    ImageList/0/ImageData with Calibrations, Data, DataType and Dimensions, little-endian data."""
    n = "Q" if version == 4 else "I"  # tag-structure integers: big-endian, 8 bytes in DM4
    dm_types = {np.dtype("float32"): (2, 6), np.dtype("uint16"): (10, 4), np.dtype("int32"): (7, 3)}
    image_type, element_type = dm_types[data.dtype]

    def simple(code, fmt, value):
        return ("data", struct.pack(">" + n, code), struct.pack("<" + fmt, value))

    def string(text):
        chars = [ord(c) for c in text]
        return ("data", struct.pack(">" + n * 3, 20, 4, len(chars)), struct.pack(f"<{len(chars)}H", *chars))

    def calibration(scale_, units_):
        return [("Origin", simple(6, "f", 0.0)), ("Scale", simple(6, "f", scale_)), ("Units", string(units_))]

    def encode(items):
        out = b""
        for name, value in items:
            if isinstance(value, list):
                body = struct.pack(">BB" + n, 0, 1, len(value)) + encode(value)
                kind = 20
            else:
                _, info, payload = value
                body = b"%%%%" + struct.pack(">" + n, len(info) // struct.calcsize(n)) + info + payload
                kind = 21
            out += struct.pack(">BH", kind, len(name)) + name.encode()
            if version == 4:
                out += struct.pack(">Q", len(body))
            out += body
        return out

    raw = np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<")).tobytes()
    image_data = [
        ("Calibrations", [("Brightness", calibration(1.0, "")),
                          ("Dimension", [("", calibration(scale, units)), ("", calibration(scale, units))])]),
        ("Data", ("data", struct.pack(">" + n * 3, 20, element_type, data.size), raw)),
        ("DataType", simple(3, "l", image_type)),
        ("Dimensions", [("", simple(5, "L", data.shape[1])), ("", simple(5, "L", data.shape[0]))]),
        ("PixelDepth", simple(5, "L", data.dtype.itemsize)),
    ]
    root = [("ImageList", [("", [("ImageData", image_data), ("ImageTags", []), ("Name", string("HAADF"))])])]
    tags = struct.pack(">BB" + n, 0, 1, len(root)) + encode(root)
    path.write_bytes(struct.pack(">I" + n + "I", version, len(tags) + 16, 1) + tags + b"\0" * 8)
    return path


def _write_ser(path, data, scale_m=5e-12):
    """A minimal FEI TIA .ser file holding one 2-D image (rsciio reads these but has no writer);
    TIA calibrates in metres and stores rows bottom-up."""
    ny, nx = data.shape
    dtype_id = {np.dtype("float32"): 7, np.dtype("uint16"): 2}[data.dtype]
    units = b"meters"
    dim = struct.pack("<IddII", 1, 0.0, 1.0, 0, 0) + struct.pack("<I", len(units)) + units
    head_len = 30 + len(dim)
    data_offset = head_len + 8  # after one data offset and one tag offset (4 bytes each)
    element = struct.pack("<ddIddIHII", 0.0, scale_m, 0, 0.0, scale_m, 0, dtype_id, nx, ny)
    element += np.ascontiguousarray(data[::-1]).tobytes()
    tag_offset = data_offset + len(element)
    header = struct.pack("<HHHIIIIII", 0x4949, 0x0197, 0x0210, 0x4122, 0x4152, 1, 1, head_len, 1)
    path.write_bytes(header + dim + struct.pack("<II", data_offset, tag_offset) + element
                     + struct.pack("<HHI", 0x4152, 0, 0))
    return path


def _assert_valid(img, shape=None):
    assert isinstance(img, LoadedImage)
    assert img.array.dtype == np.float32 and img.array.ndim == 2 and np.isfinite(img.array).all()
    assert min(img.array.shape) >= MIN_SIZE
    if shape is not None:
        assert img.array.shape == shape
    assert img.pixel_size_source in ("file", "flag", "unknown")
    assert (img.pixel_size is None) == (img.pixel_size_source == "unknown")
    json.dumps(img.to_dict())


def _input_error(path, **kw) -> str:
    with pytest.raises(InputError) as e:
        load_image(path, **kw)
    msg = str(e.value)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


# ---- formats


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_greyscale(tmp_path, dtype):
    from PIL import Image

    a = _image(dtype=dtype)
    Image.fromarray(a).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    _assert_valid(img, a.shape)
    np.testing.assert_array_equal(img.array, a.astype(np.float32))  # no normalisation
    assert (img.fmt, img.pixel_size, img.pixel_size_source) == ("png", None, "unknown")
    assert img.to_dict() == {"path": str(tmp_path / "a.png"), "shape": [80, 96], "pixel_size": None,
                             "pixel_size_source": "unknown", "format": "png"}


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_png_colour_to_luminance(tmp_path, mode):
    from PIL import Image

    rgb = (_image((80, 96, len(mode))) * 255).astype(np.uint8)
    Image.fromarray(rgb, mode).save(tmp_path / "c.PNG")  # extension case does not matter
    img = load_image(tmp_path / "c.PNG")
    _assert_valid(img, (80, 96))
    expected = rgb[..., :3].astype(np.float64) @ [0.299, 0.587, 0.114]
    np.testing.assert_allclose(img.array, expected, atol=1e-3)


@pytest.mark.parametrize("ext, fmt", [("jpg", "jpeg"), ("jpeg", "jpeg"), ("bmp", "bmp")])
def test_jpeg_bmp(tmp_path, ext, fmt):
    from PIL import Image

    a = (_image() * 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / f"a.{ext}")
    img = load_image(tmp_path / f"a.{ext}")
    _assert_valid(img, a.shape)
    assert img.fmt == fmt
    if ext == "bmp":
        np.testing.assert_array_equal(img.array, a)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64])
def test_tiff_dtypes(tmp_path, dtype):
    import tifffile

    a = _image(dtype=dtype)
    tifffile.imwrite(tmp_path / "a.tif", a)
    img = load_image(tmp_path / "a.tif")
    _assert_valid(img, a.shape)
    np.testing.assert_array_equal(img.array, a.astype(np.float32))
    assert (img.fmt, img.pixel_size_source) == ("tiff", "unknown")


def test_tiff_rgb_and_planar_rgb(tmp_path):
    import tifffile

    rgb = (_image((80, 96, 3)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "c.tiff", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "p.tiff", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    expected = rgb.astype(np.float64) @ [0.299, 0.587, 0.114]
    for name in ("c.tiff", "p.tiff"):
        img = load_image(tmp_path / name)
        _assert_valid(img, (80, 96))
        np.testing.assert_allclose(img.array, expected, atol=1e-3)


def test_tiff_calibration_imagej_only(tmp_path):
    import tifffile

    a = _image()
    tifffile.imwrite(tmp_path / "ij.tif", a, imagej=True, resolution=(1 / 0.0042, 1 / 0.0042),
                     metadata={"unit": "nm"})
    img = load_image(tmp_path / "ij.tif")
    assert img.pixel_size_source == "file" and img.pixel_size == pytest.approx(0.042, rel=1e-4)
    # print resolution (dpi) says nothing about the sample
    tifffile.imwrite(tmp_path / "dpi.tif", a, resolution=(300, 300), resolutionunit="CENTIMETER")
    assert load_image(tmp_path / "dpi.tif").pixel_size_source == "unknown"


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64, bool])
def test_npy(tmp_path, dtype):
    a = _image(dtype=np.float64) > 0.5 if dtype is bool else _image(dtype=dtype)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "f.npy", np.asfortranarray(a))
    for name in ("a.npy", "f.npy"):
        img = load_image(tmp_path / name)
        _assert_valid(img, a.shape)
        np.testing.assert_array_equal(img.array, a.astype(np.float32))
        assert img.fmt == "npy" and img.array.flags.c_contiguous


def test_npy_squeezes_singleton_axes(tmp_path):
    np.save(tmp_path / "a.npy", _image((1, 80, 96, 1)))
    _assert_valid(load_image(tmp_path / "a.npy"), (80, 96))


def test_hspy_calibration_nm_to_angstrom(tmp_path):
    a = _image()
    img = load_image(_write_hspy(tmp_path / "a.hspy", a, scales=(0.0045, 0.0045), units=("nm", "nm")))
    _assert_valid(img, a.shape)
    np.testing.assert_array_equal(img.array, a)
    assert img.fmt == "hspy" and img.pixel_size_source == "file"
    assert img.pixel_size == pytest.approx(0.045)


@pytest.mark.parametrize("scale, units, expected", [
    (0.05, "Å", 0.05), (0.05, "\u212b", 0.05), (0.05, "A", 0.05), (0.05, "angstrom", 0.05),
    (5.0, "pm", 0.05), (5e-6, "µm", 0.05), (5e-6, "\u03bcm", 0.05), (5e-6, "um", 0.05), (5e-12, "m", 0.05),
    (-0.005, "nm", 0.05),  # a flipped axis has a negative scale
])
def test_hspy_units(tmp_path, scale, units, expected):
    img = load_image(_write_hspy(tmp_path / "u.hspy", _image(), scales=(scale, scale), units=(units, units)))
    assert img.pixel_size_source == "file" and img.pixel_size == pytest.approx(expected)


@pytest.mark.parametrize("scales, units", [
    ((0.2, 0.2), ("1/nm", "1/nm")),  # reciprocal space: a diffraction pattern or FFT
    ((1.0, 1.0), ("px", "px")),
    ((1.0, 1.0), ("", "")),
    ((0.005, 0.005), ("nm", "")),  # only one axis calibrated
    ((0.0, 0.0), ("nm", "nm")),
])
def test_hspy_uncalibrated(tmp_path, scales, units):
    img = load_image(_write_hspy(tmp_path / "u.hspy", _image(), scales=scales, units=units))
    assert (img.pixel_size, img.pixel_size_source) == (None, "unknown")


def test_anisotropic_calibration_uses_mean(tmp_path):
    img = load_image(_write_hspy(tmp_path / "a.hspy", _image(), scales=(0.005, 0.006), units=("nm", "nm")))
    assert img.pixel_size == pytest.approx(0.055)


def test_emd_ncem(tmp_path):
    a = _image(dtype=np.uint16)
    img = load_image(_write_emd(tmp_path / "a.emd", a, scales=(0.0062, 0.0062)))
    _assert_valid(img, a.shape)
    np.testing.assert_array_equal(img.array, a)
    assert (img.fmt, img.pixel_size_source) == ("emd", "file") and img.pixel_size == pytest.approx(0.062)


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_dm(tmp_path, version, dtype):
    a = _image(dtype=dtype)
    img = load_image(_write_dm(tmp_path / f"a.dm{version}", a, scale=0.0071, units="nm", version=version))
    _assert_valid(img, a.shape)
    np.testing.assert_array_equal(img.array, a.astype(np.float32))
    assert img.fmt == f"dm{version}" and img.pixel_size_source == "file"
    assert img.pixel_size == pytest.approx(0.071, rel=1e-5)


def test_dm_reciprocal_units_are_unknown(tmp_path):
    img = load_image(_write_dm(tmp_path / "fft.dm4", _image(), scale=0.05, units="1/nm"))
    assert img.pixel_size_source == "unknown"


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_ser(tmp_path, dtype):
    a = _image(dtype=dtype)
    img = load_image(_write_ser(tmp_path / "a.ser", a, scale_m=6.5e-12))
    _assert_valid(img, a.shape)
    np.testing.assert_array_equal(img.array, a.astype(np.float32))
    assert img.fmt == "ser" and img.pixel_size == pytest.approx(0.065)


# Velox EMD files (the other EMD flavour) have no writer anywhere we can use in a test; they go through the
# same rsciio.emd reader and the same signal selection as the NCEM file above.


# ---- pixel size: flag and checks


def test_flag_overrides_file(tmp_path):
    p = _write_hspy(tmp_path / "a.hspy", _image())
    img = load_image(p, pixel_size=0.08)
    assert (img.pixel_size, img.pixel_size_source) == (0.08, "flag")
    assert load_image(p).pixel_size == pytest.approx(0.05)
    np.save(tmp_path / "a.npy", _image())
    assert load_image(tmp_path / "a.npy", pixel_size=0.1).to_dict()["pixel_size_source"] == "flag"


def test_file_calibration_out_of_range(tmp_path):
    p = _write_hspy(tmp_path / "lowmag.hspy", _image(), scales=(0.01, 0.01), units=("µm", "µm"))  # 100 Å/px
    msg = _input_error(p)
    assert "100" in msg and "--pixel-size" in msg
    assert load_image(p, pixel_size=0.1).pixel_size == 0.1  # the flag wins over a bad calibration


@pytest.mark.parametrize("value", [0.01, 0.05, "0.2", 1])
def test_check_pixel_size_ok(value):
    assert check_pixel_size(value) == float(value)


@pytest.mark.parametrize("value", [0, -0.1, 0.009, 1.01, 5, float("nan"), float("inf"), "abc", None])
def test_check_pixel_size_bad(tmp_path, value):
    with pytest.raises(InputError) as e:
        check_pixel_size(value)
    assert "\n" not in str(e.value)
    if value is not None:  # None is "no flag"
        np.save(tmp_path / "a.npy", _image())
        with pytest.raises(InputError):
            load_image(tmp_path / "a.npy", pixel_size=value)


def test_parse_elements():
    assert parse_elements("Sr,Ti,O") == ["Sr", "Ti", "O"]
    assert parse_elements(" sr, TI  o ,") == ["Sr", "Ti", "O"]
    assert parse_elements("Mo S S") == ["Mo", "S"]
    assert parse_elements(None) is None and parse_elements("") is None and parse_elements(" , ") is None
    for bad in ("Sr,Xx,O", "Sr,Ti,Q", "Sr,X"):
        with pytest.raises(InputError, match="Xx|Q|X") as e:
            parse_elements(bad)
        assert "\n" not in str(e.value)


# ---- bad input


def test_missing_directory_and_unknown_extension(tmp_path):
    assert "not found" in _input_error(tmp_path / "nope.png")
    assert "not a file" in _input_error(tmp_path)
    for name in ("a.gif", "a.txt", "noext"):
        (tmp_path / name).write_bytes(b"x" * 100)
        msg = _input_error(tmp_path / name)
        assert ".png" in msg and ".dm4" in msg and ".hspy" in msg and ".tif" in msg


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_not_an_image(tmp_path, ext):
    p = tmp_path / f"notes.{ext}"
    p.write_text("this is a text file, not an image\n" * 20)
    assert p.name in _input_error(p)
    (tmp_path / f"empty.{ext}").write_bytes(b"")
    _input_error(tmp_path / f"empty.{ext}")


def _truncate(p, keep=0.5):
    b = p.read_bytes()
    p.write_bytes(b[:int(len(b) * keep)])
    return p


def test_truncated_files(tmp_path):
    import tifffile
    from PIL import Image

    a = _image(shape=(256, 256))
    Image.fromarray((a * 255).astype(np.uint8)).save(tmp_path / "t.png")
    Image.fromarray((a * 255).astype(np.uint8)).save(tmp_path / "t.jpg")
    tifffile.imwrite(tmp_path / "t.tif", a)
    np.save(tmp_path / "t.npy", a)
    _write_hspy(tmp_path / "t.hspy", a)
    _write_emd(tmp_path / "t.emd", a)
    _write_dm(tmp_path / "t.dm4", a)
    _write_ser(tmp_path / "t.ser", a)
    for name in ("t.png", "t.jpg", "t.tif", "t.npy", "t.hspy", "t.emd", "t.dm4", "t.ser"):
        _input_error(_truncate(tmp_path / name))


def test_stack_asks_for_one_frame(tmp_path):
    import tifffile

    stack = _image((10, 80, 96))
    np.save(tmp_path / "s.npy", stack)
    msg = _input_error(tmp_path / "s.npy")
    assert "(10, 80, 96)" in msg and "pick one frame (axis 0)" in msg
    tifffile.imwrite(tmp_path / "s.tif", stack)
    assert "(10, 80, 96)" in _input_error(tmp_path / "s.tif")
    msg = _input_error(_write_hspy(tmp_path / "s.hspy", stack, nav=1))
    assert "(10, 80, 96)" in msg and "axis 0" in msg
    assert "(10, 80, 96)" in _input_error(_write_emd(tmp_path / "s.emd", stack, nav=1))
    np.save(tmp_path / "c.npy", _image((80, 96, 2)))  # two channels are not RGB
    assert "axis 2" in _input_error(tmp_path / "c.npy")
    np.save(tmp_path / "4d.npy", _image((2, 3, 80, 96)))
    assert "(2, 3, 80, 96)" in _input_error(tmp_path / "4d.npy")


@pytest.mark.parametrize("shape", [(32, 32), (63, 200), (200, 10), (100,), ()])
def test_too_small_or_not_2d(tmp_path, shape):
    np.save(tmp_path / "a.npy", _image(shape))
    _input_error(tmp_path / "a.npy")


def test_min_size_is_accepted(tmp_path):
    np.save(tmp_path / "a.npy", _image((MIN_SIZE, MIN_SIZE)))
    _assert_valid(load_image(tmp_path / "a.npy"))


def test_bad_values(tmp_path):
    a = _image(dtype=np.float64)
    np.save(tmp_path / "const.npy", np.full((80, 96), 7.0))
    assert "constant" in _input_error(tmp_path / "const.npy")
    for value in (np.nan, np.inf, -np.inf, 1e300):  # 1e300 overflows float32
        b = a.copy()
        b[5, 7] = value
        np.save(tmp_path / "bad.npy", b)
        assert "NaN or infinite" in _input_error(tmp_path / "bad.npy")
    np.save(tmp_path / "complex.npy", a.astype(np.complex64))
    assert "complex" in _input_error(tmp_path / "complex.npy")
    np.save(tmp_path / "obj.npy", a.astype(object), allow_pickle=True)  # never unpickled
    _input_error(tmp_path / "obj.npy")
    np.save(tmp_path / "str.npy", a.astype(str))
    _input_error(tmp_path / "str.npy")
    _write_hspy(tmp_path / "nan.hspy", np.where(a > 0.5, np.nan, a).astype(np.float32))
    _input_error(tmp_path / "nan.hspy")


def test_png_decompression_bomb_is_refused(tmp_path, monkeypatch):
    from PIL import Image

    Image.fromarray((_image((256, 256)) * 255).astype(np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the real limit is ~89 Mpx
    _input_error(tmp_path / "big.png")


# ---- fuzzing: load_image returns a valid image or raises InputError, nothing else

_MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff", "bmp": b"BM", "tiff": b"II*\x00",
          "npy": b"\x93NUMPY\x01\x00", "dm3": b"\x00\x00\x00\x03", "dm4": b"\x00\x00\x00\x04",
          "emd": b"\x89HDF\r\n\x1a\n", "hspy": b"\x89HDF\r\n\x1a\n", "ser": b"II\x97\x01"}
_FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _load_or_input_error(path):
    try:
        img = load_image(path)
    except InputError as e:
        assert str(e) and "\n" not in str(e)
        return None
    _assert_valid(img)
    return img


@_FUZZ
@given(ext=st.sampled_from(sorted(FORMATS)), magic=st.booleans(), body=st.binary(max_size=2048))
def test_fuzz_random_bytes(tmp_path, ext, magic, body):
    p = tmp_path / f"fuzz.{ext}"
    p.write_bytes((_MAGIC[FORMATS[ext]] if magic else b"") + body)
    _load_or_input_error(p)


@_FUZZ
@given(ext=st.sampled_from(["png", "tif", "npy", "hspy", "dm4", "ser"]), cut=st.floats(0.0, 0.999),
       flips=st.lists(st.tuples(st.floats(0, 0.999), st.integers(0, 255)), max_size=8))
def test_fuzz_damaged_files(tmp_path, ext, cut, flips):
    """Real files, truncated and with bytes overwritten: closer to a broken download than random bytes."""
    import tifffile
    from PIL import Image

    a = _image((64, 72), dtype=np.uint16)
    p = tmp_path / f"d.{ext}"
    if ext == "png":
        Image.fromarray(a).save(p)
    elif ext == "tif":
        tifffile.imwrite(p, a)
    elif ext == "npy":
        np.save(p, a)
    elif ext == "hspy":
        _write_hspy(p, a)
    elif ext == "dm4":
        _write_dm(p, a)
    else:
        _write_ser(p, a)
    b = bytearray(p.read_bytes())
    for where, value in flips:
        b[int(where * len(b))] = value
    p.write_bytes(bytes(b[:max(1, int(len(b) * (1 - cut * 0.5)))] if cut > 0.5 else b))
    _load_or_input_error(p)


_SHAPES = [(), (7,), (64, 64), (63, 64), (64, 130), (0, 64), (1, 64, 64), (3, 64, 64), (64, 64, 3), (64, 64, 4),
           (64, 64, 2), (64, 64, 1, 1), (2, 64, 64, 1)]
_DTYPES = ["u1", "i1", "u2", ">i2", "u4", "i8", "f2", "f4", ">f8", "f8", "b1", "c8", "M8[s]", "U2"]


@_FUZZ
@given(data=st.data())
def test_fuzz_npy_arrays(tmp_path, data):
    shape = data.draw(st.sampled_from(_SHAPES))
    dtype = data.draw(st.sampled_from(_DTYPES))
    a = data.draw(hnp.arrays(np.dtype(dtype), shape))
    np.save(tmp_path / "a.npy", a)
    img = _load_or_input_error(tmp_path / "a.npy")
    if img is not None:
        assert img.array.size == a.size // (3 if a.shape[-1:] == (3,) else 4 if a.shape[-1:] == (4,) else 1)
