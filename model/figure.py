"""The inference summary figure (``overlay.png``): input, denoised image with columns, FFT with the fitted
lattice's reciprocal spots, and the result in words."""
from __future__ import annotations

import math
import os
import tempfile
import textwrap
from pathlib import Path

import numpy as np

DISPLAY_MAX = 1024  # px per side shown; larger images are block-averaged first
FFT_MAX = 1024  # px per side of the central crop whose FFT is shown


def save_overlay(path, image: np.ndarray, denoised: np.ndarray | None, pixel_size: float | None,
                 columns_xy_px: np.ndarray | None, model_xy_px: np.ndarray | None, lattice_px: np.ndarray | None,
                 lines: list[str]) -> None:
    """Write the 2×2 summary figure to ``path`` (PNG). Point sets are (N, 2) x, y in pixels of ``image``;
    ``lattice_px`` has the two real-space lattice vectors (x, y in pixels) as rows. None layers are left out."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    image = np.asarray(image, dtype=np.float32)
    known_px = pixel_size is not None and math.isfinite(pixel_size) and pixel_size > 0
    fig = Figure(figsize=(10, 10), dpi=100)
    (ax_in, ax_dn), (ax_fft, ax_txt) = fig.subplots(2, 2)

    _show(ax_in, image)
    size = f"{image.shape[1]}×{image.shape[0]} px"
    ax_in.set_title(f"input, {size}, {pixel_size:.4g} Å/px" if known_px else f"input, {size}, pixel size unknown",
                    fontsize=10)
    if known_px:
        _scale_bar(ax_in, image.shape[1], pixel_size)

    # the denoised image may be at another sampling; it is stretched over the input's pixel frame
    _show(ax_dn, image if denoised is None else np.asarray(denoised, dtype=np.float32), frame=image.shape)
    title = ["input" if denoised is None else "denoised"]
    cols, model = _points(columns_xy_px), _points(model_xy_px)
    ms = _marker_size(max(len(cols), len(model)), image.shape)
    if len(cols):
        ax_dn.plot(cols[:, 0], cols[:, 1], "o", mfc="none", mec="#00e5ff", mew=0.8, ms=ms,
                   label=f"detected columns ({len(cols)})")
        title.append("columns")
    if len(model):
        ax_dn.plot(model[:, 0], model[:, 1], "x", color="#ff3d7f", mew=0.9, ms=0.7 * ms,
                   label=f"model columns ({len(model)})")
        title.append("model")
    if len(cols) or len(model):
        ax_dn.legend(loc="upper right", fontsize=8, framealpha=0.7)
    ax_dn.set_xlim(-0.5, image.shape[1] - 0.5)
    ax_dn.set_ylim(image.shape[0] - 0.5, -0.5)
    ax_dn.set_title(" + ".join(title), fontsize=10)

    _fft_panel(ax_fft, image, lattice_px)

    ax_txt.axis("off")
    wrapped = [w for line in (lines or []) for w in (textwrap.wrap(str(line), 56) or [""])]
    ax_txt.text(0.02, 0.98, "\n".join(wrapped), va="top", ha="left", family="monospace", fontsize=10,
                transform=ax_txt.transAxes)

    fig.tight_layout()
    _save_atomic(fig, Path(path))


def _downsample(a: np.ndarray, max_side: int = DISPLAY_MAX) -> tuple[np.ndarray, int]:
    """Block mean by an integer factor so that no side exceeds ``max_side``; strips keep the temporary
    memory small for very large images."""
    f = max(1, math.ceil(max(a.shape) / max_side))
    if f == 1:
        return a, 1
    h, w = a.shape[0] // f, a.shape[1] // f
    out = np.empty((h, w), np.float32)
    step = max(1, 256 // f)  # output rows per strip
    for i in range(0, h, step):
        j = min(i + step, h)
        out[i:j] = a[i * f:j * f, :w * f].reshape(j - i, f, w, f).mean(axis=(1, 3), dtype=np.float32)
    return out, f


def _show(ax, a: np.ndarray, frame: tuple[int, int] | None = None) -> None:
    small, f = _downsample(a)
    finite = small[np.isfinite(small)]
    lo, hi = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0)
    # the extent is in pixels of the full image, so points are plotted in their own coordinates
    h, w = (small.shape[0] * f, small.shape[1] * f) if frame is None or tuple(frame) == a.shape else frame
    ax.imshow(small, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest",
              extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    ax.set_xticks([])
    ax.set_yticks([])


def _points(xy) -> np.ndarray:
    if xy is None:
        return np.zeros((0, 2))
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    return xy[np.isfinite(xy).all(axis=1)]


def _marker_size(n: int, shape) -> float:
    """Markers shrink with the number of columns on screen so that neighbours stay apart."""
    if n == 0:
        return 5.0
    spacing_pt = 500 / math.sqrt(n * max(shape) / max(min(shape), 1))  # ~500 pt panel width
    return float(np.clip(0.6 * spacing_pt, 1.5, 8.0))


def _nice_length(target: float) -> float:
    exp = 10 ** math.floor(math.log10(target))
    return max(m * exp for m in (1, 2, 5) if m * exp <= target)


def _scale_bar(ax, width_px: int, pixel_size: float) -> None:
    from matplotlib.patches import Rectangle

    length = _nice_length(0.2 * width_px * pixel_size)  # Å
    n_px = length / pixel_size
    x0 = y0 = 0.05  # axes fraction from the lower left
    h_px = ax.get_ylim()[0] - ax.get_ylim()[1]
    x = -0.5 + x0 * width_px
    y = ax.get_ylim()[0] - y0 * h_px
    ax.add_patch(Rectangle((x, y - 0.012 * h_px), n_px, 0.012 * h_px, color="white", ec="black", lw=0.5))
    label = f"{length:g} Å" if length < 10 else f"{length / 10:g} nm"
    ax.text(x + n_px / 2, y - 0.025 * h_px, label, color="white", ha="center", va="bottom", fontsize=9,
            fontweight="bold")


def reciprocal_vectors(lattice_px) -> np.ndarray | None:
    """Rows g1, g2 (cycles per pixel, x, y) with a_i · g_j = δ_ij, or None for a missing/degenerate lattice."""
    if lattice_px is None:
        return None
    a = np.asarray(lattice_px, dtype=float)
    if a.shape != (2, 2) or not np.isfinite(a).all() or abs(np.linalg.det(a)) < 1e-9:
        return None
    return np.linalg.inv(a).T


def fft_log_magnitude(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log(1 + |F|) of the windowed central crop (at most FFT_MAX² px, full resolution so no spot is lost),
    zero frequency centred, with its frequency axes fx, fy (cycles per pixel): row i, column j is (fx[j], fy[i])."""
    ny, nx = min(image.shape[0], FFT_MAX), min(image.shape[1], FFT_MAX)
    i0, j0 = (image.shape[0] - ny) // 2, (image.shape[1] - nx) // 2
    crop = np.asarray(image[i0:i0 + ny, j0:j0 + nx], dtype=np.float64)
    crop = (crop - crop.mean()) * np.outer(np.hanning(ny), np.hanning(nx))  # no edge streaks
    mag = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(crop))))
    return mag, np.fft.fftshift(np.fft.fftfreq(nx)), np.fft.fftshift(np.fft.fftfreq(ny))


def _fft_panel(ax, image: np.ndarray, lattice_px) -> None:
    mag, fx, fy = fft_log_magnitude(image)
    dy, dx = 1 / len(fy), 1 / len(fx)
    lo, hi = np.percentile(mag, [50, 99.95])
    ax.imshow(mag, cmap="inferno", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest",
              extent=(fx[0] - dx / 2, fx[-1] + dx / 2, fy[-1] + dy / 2, fy[0] - dy / 2))
    g = reciprocal_vectors(lattice_px)
    half = 0.25  # cycles/px: the central half, where lattice spots of a sensibly sampled image lie
    title = "FFT (log |F|)"
    if g is not None:
        spots = np.array([g[0], g[1], g[0] + g[1]])
        spots = np.concatenate([spots, -spots])
        ax.plot(spots[:, 0], spots[:, 1], "o", mfc="none", mec="#00e5ff", mew=1.0, ms=10)
        for k, (gx, gy) in enumerate(g):
            ax.annotate(f"g{k + 1}", (gx, gy), xytext=(6, 6), textcoords="offset points", color="#00e5ff",
                        fontsize=9)
        half = float(np.clip(1.6 * np.abs(spots).max(), 0.02, 0.5))
        title += " + lattice spots"
    ax.set_xlim(-half, half)
    ax.set_ylim(half, -half)
    ax.set_xlabel("cycles / px", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=10)


def _save_atomic(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
