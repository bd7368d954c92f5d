"""Read one user image (PNG/JPEG/BMP, TIFF, .npy, DM3/DM4, EMD, SER, .hspy) into a float32 array plus its
pixel size, turning every problem with the file or the options into an ``InputError`` with a one-line message."""
from __future__ import annotations

import contextlib
import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_SIZE = 64  # px per side; smaller images hold too few unit cells for a lattice fit
PIXEL_SIZE_RANGE = (0.01, 1.0)  # Å; outside it the image is not atomic resolution or the calibration is wrong

# extension -> format name; the format name picks the reader
FORMATS = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "bmp": "bmp", "tif": "tiff", "tiff": "tiff", "npy": "npy",
           "dm3": "dm3", "dm4": "dm4", "emd": "emd", "ser": "ser", "hspy": "hspy"}

# length units as microscope software writes them -> Å per unit; reciprocal and pixel units are absent on purpose
_UNITS = {"m": 1e10, "meter": 1e10, "mm": 1e7, "millimeter": 1e7,
          "µm": 1e4, "μm": 1e4, "um": 1e4, "micron": 1e4, "microns": 1e4, "micrometer": 1e4,
          "nm": 10.0, "nanometer": 10.0,
          "å": 1.0, "a": 1.0, "ang": 1.0, "angstrom": 1.0, "angstroms": 1.0,
          "pm": 0.01, "picometer": 0.01}

_RGB_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma, as Pillow's "L" conversion


class InputError(ValueError):
    """Bad input or option; str(e) is a clear one-line message for the user."""

    def __init__(self, message: str):
        super().__init__(_one_line(message))


@dataclass
class LoadedImage:
    array: np.ndarray  # 2-D float32 (rows, cols), finite
    pixel_size: float | None  # Å per pixel, None if unknown
    pixel_size_source: str  # "file", "flag" or "unknown"
    path: str
    fmt: str

    def to_dict(self) -> dict:
        return {"path": self.path, "shape": [int(n) for n in self.array.shape],
                "pixel_size": None if self.pixel_size is None else float(self.pixel_size),
                "pixel_size_source": self.pixel_size_source, "format": self.fmt}


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_pixel_size(value: float, source: str = "--pixel-size") -> float:
    """``value`` as a float in Å if it lies within 0.01–1 Å."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{source}: {value!r} is not a number (Å per pixel)") from None
    lo, hi = PIXEL_SIZE_RANGE
    if not (math.isfinite(v) and lo <= v <= hi):
        raise InputError(f"{source}: pixel size {v:g} Å is outside {lo:g}–{hi:g} Å; "
                         "atomic-resolution images have roughly 0.02–0.3 Å per pixel")
    return v


def parse_elements(text: str | None) -> list[str] | None:
    """``"Sr,Ti,O"`` (commas and/or spaces, any letter case) -> ``["Sr", "Ti", "O"]``; None or blank -> None."""
    if text is None:
        return None
    from ase.data import chemical_symbols

    known = set(chemical_symbols[1:])  # [0] is the dummy "X"
    out: list[str] = []
    for token in re.split(r"[,;\s]+", str(text).strip()):
        if not token:
            continue
        symbol = token[:1].upper() + token[1:].lower()
        if symbol not in known:
            raise InputError(f"--elements: unknown element symbol {token!r}")
        if symbol not in out:
            out.append(symbol)
    return out or None


def load_image(path, pixel_size: float | None = None) -> LoadedImage:
    """The image at ``path`` as 2-D float32; ``pixel_size`` (Å, the --pixel-size flag) overrides the file's."""
    p = Path(path)
    flag = None if pixel_size is None else check_pixel_size(pixel_size)
    if not p.exists():
        raise InputError(f"file not found: {p}")
    if not p.is_file():
        raise InputError(f"not a file: {p}")
    ext = p.suffix.lower().lstrip(".")
    fmt = FORMATS.get(ext)
    if fmt is None:
        raise InputError(f"{p.name}: unsupported file type {p.suffix or '(no extension)'!r}; "
                         f"supported: {', '.join('.' + e for e in FORMATS)}")
    try:
        with _quiet():
            data, file_px, frame_axis = _READERS[fmt](p)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{p.name}: image too large to load into memory") from None
    except Exception as e:  # readers raise anything on corrupt input; the user needs one line, not a traceback
        detail = _one_line(str(e), 160) or "no detail"
        raise InputError(f"cannot read {p.name} as {fmt.upper()} (corrupt, truncated or not that format): "
                         f"{type(e).__name__}: {detail}") from None
    array = _to_2d(np.asarray(data), p.name, frame_axis)
    _check_values(array, p.name)
    if flag is not None:
        px, source = flag, "flag"
    elif file_px is not None:
        px, source = check_pixel_size(file_px, f"{p.name}: calibration in the file (override with --pixel-size)"), "file"
    else:
        px, source = None, "unknown"
    return LoadedImage(array, px, source, str(p), fmt)


# ---- readers: path -> (array, pixel size in Å or None, stack axis hint or None)


@contextlib.contextmanager
def _quiet():
    """Readers warn and log about metadata they skip or damage they find; the user gets our one line instead."""
    loggers = [logging.getLogger(name) for name in ("tifffile", "rsciio", "PIL", "h5py")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _read_pillow(p: Path):
    from PIL import Image

    with Image.open(p) as im:
        im.load()  # decoding happens here, so truncated files fail inside the caller's try
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif im.mode == "LA":
            im = im.getchannel("L")
        elif im.mode == "PA":
            im = im.convert("RGB")
        return np.array(im), None, None


def _read_tiff(p: Path):
    import tifffile

    with tifffile.TiffFile(p) as tif:
        series = tif.series[0]
        data = series.asarray()
        axes = series.axes
        if "S" in axes and data.ndim == len(axes):  # planar RGB: samples first -> channels last
            data = np.moveaxis(data, axes.index("S"), -1)
        return data, _tiff_pixel_size(tif), None


def _tiff_pixel_size(tif) -> float | None:
    """ImageJ/Fiji calibration (unit in the description, pixels per unit in XResolution). Plain resolution
    tags are print dpi, not a sample calibration, so they are ignored."""
    meta = tif.imagej_metadata or {}
    factor = _unit_factor(meta.get("unit"))
    if factor is None:
        return None
    try:
        num, den = tif.pages.first.tags["XResolution"].value
        per_unit = num / den
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return factor / per_unit if per_unit > 0 else None


def _read_npy(p: Path):
    # memory-mapping first checks the header against the file size, so a corrupt header cannot
    # trigger a huge allocation, and object arrays are refused (no pickle)
    mm = np.load(p, mmap_mode="r", allow_pickle=False)
    if not isinstance(mm, np.ndarray):
        raise ValueError("not a single array")
    return np.array(mm), None, None


def _read_rsciio(module: str, **kwargs):
    def read(p: Path):
        import importlib

        reader = importlib.import_module(f"rsciio.{module}").file_reader
        signals = reader(str(p), lazy=False, **kwargs)
        return _pick_signal(signals, p.name)

    return read


def _pick_signal(signals: list[dict], name: str):
    """The image among the file's signals: 2-D ones first (HAADF preferred, as Velox files also carry
    BF/DF and spectra), else a 2-D stack so the user is told to pick a frame."""
    if not signals:
        raise InputError(f"{name}: the file holds no data")
    images, stacks = [], []
    for s in signals:
        data = s.get("data")
        if data is None or len(s.get("axes", [])) != np.ndim(data):
            continue
        shape = [n for n in np.shape(data) if n > 1]
        if len(shape) == 2:
            images.append(s)
        elif len(shape) == 3:
            stacks.append(s)
    if not images and not stacks:
        shapes = ", ".join(str(tuple(np.shape(s.get("data")))) for s in signals)
        raise InputError(f"{name}: no 2-D image in the file (data of shape {shapes})")
    if images:
        titles = [str(s.get("metadata", {}).get("General", {}).get("title", "")).upper() for s in images]
        s = next((s for s, t in zip(images, titles) if "HAADF" in t), images[0])
    else:
        s = stacks[0]
    data = np.array(s["data"])  # a copy: some readers hand back a memory map of the file
    axes = [a for a, n in zip(s["axes"], data.shape) if n > 1]
    data = data.reshape([n for n in data.shape if n > 1])
    frame_axis = None
    if data.ndim == 3:
        nav = [i for i, a in enumerate(axes) if a.get("navigate")]
        frame_axis = nav[0] if len(nav) == 1 else None
        image_axes = [a for i, a in enumerate(axes) if i != (frame_axis if frame_axis is not None else 0)]
    else:
        image_axes = axes
    return data, _axes_pixel_size(image_axes), frame_axis


def _unit_factor(units) -> float | None:
    if not isinstance(units, str):
        return None  # traits' Undefined or missing: pixel units
    return _UNITS.get(units.strip().replace("\u212b", "å").lower())


def _axes_pixel_size(axes: list[dict]) -> float | None:
    """Mean scale of the image axes in Å; None unless both are calibrated in length units."""
    sizes = []
    for a in axes:
        factor = _unit_factor(a.get("units"))
        try:
            scale = abs(float(a.get("scale")))
        except (TypeError, ValueError):
            return None
        if factor is None or not math.isfinite(scale) or scale == 0:
            return None
        sizes.append(scale * factor)
    return float(np.mean(sizes)) if len(sizes) == 2 else None


_READERS = {"png": _read_pillow, "jpeg": _read_pillow, "bmp": _read_pillow, "tiff": _read_tiff, "npy": _read_npy,
            "dm3": _read_rsciio("digitalmicrograph"), "dm4": _read_rsciio("digitalmicrograph"),
            "emd": _read_rsciio("emd"), "ser": _read_rsciio("tia"), "hspy": _read_rsciio("hspy")}


# ---- array checks


def _to_2d(data: np.ndarray, name: str, frame_axis: int | None) -> np.ndarray:
    if data.dtype.names:  # DM stores RGB(A) as a record per pixel
        channels = [c for c in ("R", "G", "B") if c in data.dtype.names]
        if len(channels) != 3:
            raise InputError(f"{name}: unsupported pixel type with fields {data.dtype.names}")
        data = np.stack([data[c] for c in channels], axis=-1)
    if np.iscomplexobj(data):
        raise InputError(f"{name}: complex-valued data (an FFT or exit wave?), expected a real STEM image")
    if data.dtype.kind not in "biuf":
        raise InputError(f"{name}: unsupported data type {data.dtype}")
    data = data.reshape([n for n in data.shape if n > 1]) if data.ndim > 2 else data
    if data.ndim == 3 and data.shape[-1] in (3, 4) and min(data.shape[:2]) > 4:
        rgb = data[..., :3].astype(np.float64)  # alpha dropped
        data = rgb @ _RGB_WEIGHTS
    if data.ndim == 3:
        k = frame_axis if frame_axis is not None else int(np.argmin(data.shape))
        raise InputError(f"{name}: image stack of shape {tuple(data.shape)}: pick one frame (axis {k}) "
                         "and save it as a 2-D image")
    if data.ndim != 2:
        raise InputError(f"{name}: data of shape {tuple(data.shape)} is not a 2-D image")
    if min(data.shape) < MIN_SIZE:
        raise InputError(f"{name}: image is {data.shape[1]}×{data.shape[0]} px (width×height); "
                         f"at least {MIN_SIZE}×{MIN_SIZE} px are needed")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is reported by _check_values
        return np.ascontiguousarray(data, dtype=np.float32)


def _check_values(a: np.ndarray, name: str) -> None:
    finite = np.isfinite(a)
    if not finite.all():
        bad = int(a.size - np.count_nonzero(finite))
        raise InputError(f"{name}: {bad} pixel(s) are NaN or infinite (after conversion to float32)")
    lo, hi = float(a.min()), float(a.max())
    if lo == hi:
        raise InputError(f"{name}: the image is constant (every pixel is {lo:g}); nothing to analyse")
