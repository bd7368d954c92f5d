"""Does the reconstruction explain the image? Forward-simulate it and compare.

The reconstructed structure goes through the project's own simulation path (``data.simulate``,
noise-free, the convolution path with the per-atom object: ``loop_simulator``) and
``data.scan.render`` with the geometry the alignment fitted. Two scores: the normalised
cross-correlation of the images (positions and column shapes), and how well the simulated column
intensities predict the detected ones (which column is heavy: what positions cannot tell).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from data.scan import ScanGeometry, column_labels, render
from data.simulate import SATURATION_FIT, RepeatImage, SimulationConfig, Simulator
from model.lattice import MIN_VISIBLE_WEIGHT
from model.reconstruct import Reconstruction

NCC_WEIGHT = 0.6  # the rest goes to the column-intensity score
# What a column's intensity error is a fraction of: the fitted brightest column (``column_residuals``).
# Until 2026-11-26 it was the mean observed column, which inflates the residuals of a candidate that makes
# faint columns visible (MnO's O) against a look-alike whose light columns stay invisible (TaC's C). On the
# 46 benchmark images whose truth was verified, the brightest-column scale ranks the truth first in 35
# against 33, losing none (bench/column_norm.py).
COLUMN_SCALE = "brightest"
# How closely a correct candidate can be asked to predict column intensities. The loop simulates with
# the convolution path, and the images it judges are multislice (or a microscope's). On validation pairs
# at 40 Å against converged multislice (bench/column_sigma.py), the correct structure's column
# intensities are off by a median 8.7 % of the brightest column (12.4 % of the mean one), while
# swapping the two heaviest species costs a median 49 %. 0.07 is the earlier tolerance against the
# mean (0.10) scaled by that ratio: as strict as before on a typical correct candidate, and the value
# bench/column_norm.py measured. Those references placed atoms on abTEM's grid (data.projection); against
# exactly placed multislice the correct structure is off by a median 2.1 % (column_sigma_exact.json). 3 %
# ranked the truth first more often on the test images, but on multislice validation images 7 % does
# (28 of 41 against 25; bench/intensity_tolerance.py, bench/results/intensity_tolerance_val.json), so it stays.
COLUMN_SIGMA = 0.07
# Which of a candidate's columns the intensity term compares, by Z^1.7 weight relative to its brightest:
# those it deems visible. Asking about every column (0, ``Options.column_min_weight``) parts look-alikes
# with lighter partners (RbF's F columns, at 9 % of Rb, go unscored on a NaCl image whose Na is at 48 %
# of Cl), but against multislice the loop's faint columns are off by factors of 0.84-1.6 (16 validation
# pairs, bench/column_sigma.py --min-weight 0: bench/results/column_sigma_all_columns.json), so the right
# candidate's faint columns cost about as much: on the pipeline benchmark's 280 crystals it kept 174
# against 177 (8 gained, 11 lost; the ``all-columns`` variant).
COLUMN_MIN_WEIGHT = MIN_VISIBLE_WEIGHT


# An image in fractions of the incident beam (``model.pipeline.Options.beam_counts``: the detector's reading
# of the whole beam, from a detector scan) gives the gain of image against simulation a meaning: the loop
# simulates a monolayer as its one layer and a bulk crystal at ``Options.thickness``, both in beam fractions,
# so the right candidate's gain is about one for a monolayer and (specimen thickness / simulated thickness)
# for a bulk crystal. That separates what no relative image can: a monolayer from its bulk (one layer
# against several), and look-alikes of other weight whose thickness would have to be absurd.
# The gain is fitted with the image's source blur (``blurred_scale``): an unmodelled blur of 0.7 Å FWHM
# halves a fitted contrast. The constants come from validation-split multislice images
# (bench/absolute_scale.py, bench/results/absolute_scale.json).
THICKNESS_RANGE = (10.0, 1000.0)  # Å a bulk specimen imaged at atomic resolution can plausibly have
# median scale of the right monolayer (multislice image against the loop's one layer): 0.505 (σ of ln 0.24)
# while a monolayer's atoms were bulk atoms; with their isolated cross-sections (SimulationConfig.slab_object)
# 0.908 (σ 0.09; bench/absolute_scale.py --bulk 0, bench/results/absolute_scale_monolayers.json)
SLAB_SCALE = 0.908
BULK_SCALE = 0.944  # median (thickness the scale implies) / (true thickness) of the right bulk crystal
ABSOLUTE_SIGMA = 0.389  # σ of ln(scale) about those, in the prior exp(-½ (ln ratio / σ)²)
SOURCE_SIGMAS = np.arange(0.0, 0.45, 0.05)  # Å, Gaussian σ of the source blurs tried (data engine: ≤ 0.34)
BLUR_FIT_SIZE = 256  # px per side of the central crop the relative verification fits its source blur on


def affine_fit(observed: np.ndarray, simulated: np.ndarray) -> tuple[float, float, float]:
    """(gain, background, residual sum of squares) of ``observed ≈ gain · simulated + background`` over the field."""
    y = np.asarray(observed, float).ravel()
    X = np.stack([np.asarray(simulated, float).ravel(), np.ones(y.size)], 1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return float(coef[0]), float(coef[1]), float(np.sum((X @ coef - y) ** 2))


def blurred_scale(observed: np.ndarray, simulated: np.ndarray, pixel_size: float) -> tuple[float, float]:
    """(scale, σ): ``observed ≈ scale · (simulated ⊗ Gaussian σ) + background`` at the source blur σ (Å,
    among ``SOURCE_SIGMAS``) that fits best. The loop simulates a point source; a microscope's is not."""
    fits = [(affine_fit(observed, ndimage.gaussian_filter(simulated, sig / pixel_size) if sig > 0 else simulated), sig)
            for sig in SOURCE_SIGMAS]
    (gain, _, _), sig = min(fits, key=lambda f: f[0][2])
    return gain, float(sig)


def fitted_source_sigma(observed: np.ndarray, simulated: np.ndarray, pixel_size: float) -> float:
    """The source blur (Å) ``blurred_scale`` fits, on the central ``BLUR_FIT_SIZE`` crop: a blur is the same
    everywhere, and an 8k field's window would cost seconds per candidate."""
    ny, nx = observed.shape
    i, j = max(0, (ny - BLUR_FIT_SIZE) // 2), max(0, (nx - BLUR_FIT_SIZE) // 2)
    crop = (slice(i, i + BLUR_FIT_SIZE), slice(j, j + BLUR_FIT_SIZE))
    return blurred_scale(observed[crop], simulated[crop], pixel_size)[1]


@dataclass
class SpecimenFit:
    """What an absolute-scale image implies about the specimen, were this candidate right."""
    scale: float  # image ≈ scale · simulation, with the source blur fitted (``blurred_scale``)
    source_sigma: float  # Å, the source blur that fitted best
    thickness: float | None  # Å of this bulk crystal the signal implies (None for a monolayer)
    layers: float | None  # layers of this monolayer the signal implies (None for a bulk crystal)
    prior: float  # exp(-½ (ln(ratio) / ABSOLUTE_SIGMA)²): layers against 1, thickness against THICKNESS_RANGE

    def to_dict(self) -> dict:
        return {k: None if v is None else round(float(v), 4) for k, v in
                (("scale", self.scale), ("source_sigma", self.source_sigma), ("thickness", self.thickness),
                 ("layers", self.layers), ("prior", self.prior))}


def specimen_fit(verification: "Verification", kind: str, observed: np.ndarray, pixel_size: float) -> SpecimenFit:
    """``verification`` of a candidate of ``kind`` ("bulk" | "monolayer") on ``observed``, an image in beam
    fractions at ``pixel_size`` Å/px (the denoised one the verification read)."""
    g, sig = blurred_scale(observed, verification.simulated, pixel_size)
    if g <= 0:  # the simulation anti-correlates with the image: no specimen of this crystal explains it
        return SpecimenFit(g, sig, None, None, 0.0)
    if kind == "monolayer":
        layers = g / SLAB_SCALE
        return SpecimenFit(g, sig, None, layers, float(np.exp(-0.5 * (np.log(layers) / ABSOLUTE_SIGMA) ** 2)))
    t = g * float(verification.thickness) / BULK_SCALE
    lo, hi = THICKNESS_RANGE
    r = np.log(t / lo) if t < lo else np.log(t / hi) if t > hi else 0.0
    return SpecimenFit(g, sig, t, None, float(np.exp(-0.5 * (r / ABSOLUTE_SIGMA) ** 2)))


def loop_simulator(cache_dir: str | None = ".cache/repeats", saturation: bool = False) -> Simulator:
    """What the loop simulates candidates with: the convolution path with the per-atom object, whose
    column intensities follow multislice where the summed one cannot (monolayers' two-atom columns,
    bench/validate_convolution.py), and whose HAADF signal may level off with thickness as multislice's does
    (``data.simulate.SATURATION_FIT``, bench/channelling.py) when ``saturation`` (``Options.saturation``);
    linear in thickness otherwise."""
    level = SATURATION_FIT["saturation"] if saturation else None
    return Simulator(config=SimulationConfig(convolution_object="atoms", convolution_saturation=level),
                     cache_dir=cache_dir)


def multislice_simulator(cache_dir: str | None = ".cache/repeats") -> Simulator:
    """What the loop re-verifies its close contenders with (``Options.multislice_k``): abTEM multislice,
    whose channelling the convolution path cannot follow. At 80 Å on 2 cores: 10-30 s for a cell of a few Å,
    minutes for the largest (bench/pipeline.py's ``multislice`` variant)."""
    return Simulator(config=SimulationConfig(method="multislice"), cache_dir=cache_dir)


@dataclass
class Verification:
    ncc: float  # normalised cross-correlation of the standardised images, [-1, 1]
    intensity_score: float  # [0, 1]: exp(-χ²/2n) of detected vs simulated column intensities (σ: COLUMN_SIGMA)
    score: float  # [0, 1]: NCC_WEIGHT·max(ncc, 0) + (1 - NCC_WEIGHT)·intensity_score
    n_columns: int  # simulated columns inside the field that were compared (COLUMN_MIN_WEIGHT)
    gain: float  # denoised ≈ gain · simulated + background, over the whole field
    background: float
    geometry: dict = field(default_factory=dict)  # the ScanGeometry the simulation was rendered with
    simulated: np.ndarray | None = field(default=None, repr=False)  # the rendered image (not in to_dict)
    thickness: float | None = None  # Å, the specimen thickness the simulation had
    source_sigma: float = 0.0  # Å, the Gaussian source blur the simulation was rendered with

    def to_dict(self) -> dict:
        return {"ncc": round(self.ncc, 5), "intensity_score": round(self.intensity_score, 5),
                "score": round(self.score, 5), "n_columns": self.n_columns, "gain": float(self.gain),
                "background": float(self.background), "geometry": self.geometry,
                "thickness": None if self.thickness is None else round(self.thickness, 2),
                "source_sigma": round(self.source_sigma, 3)}


def scan_geometry(reconstruction: Reconstruction, shape: tuple[int, int], pixel_size: float,
                  rigid: bool = False) -> ScanGeometry:
    """The scan that images the reconstruction's repeat unit as the alignment placed the template.

    Pixel (j, i) sits at image-frame Å p·(j, i) = A u + s (template frame u), and the
    reconstruction's frame is u' = F u + f, so pixel → crystal is M = p F A⁻¹ with offset
    f - F A⁻¹ s. ``ScanGeometry`` writes its affine as R(-θ)·[[p', v_x], [0, p' + v_y]], which is a
    QR decomposition, so any M is representable (residual shear as "drift"; a mirrored view as a
    negative p' + v_y). ``rigid`` keeps only the rotation of A F⁻¹ (no residual strain).
    """
    al = reconstruction.alignment
    F, f = reconstruction.frame_affine, reconstruction.frame_shift
    G = al.affine @ np.linalg.inv(F)  # reconstruction frame -> image frame: x = G u' + s - G f
    H_exact = np.linalg.inv(G)
    H = H_exact
    if rigid:
        from scipy.linalg import polar

        D = np.diag([1.0, -1.0]) if np.linalg.det(G) < 0 else np.eye(2)
        H = np.linalg.inv(polar(G @ D)[0] @ D)
    # u' = H x + offset, exact at the field's centre x_c (everywhere unless rigid)
    x_c = pixel_size * (np.array(shape[::-1], float) - 1) / 2
    offset = f - H_exact @ al.shift + (H_exact - H) @ x_c
    M = pixel_size * H
    Q, U = np.linalg.qr(M)
    if np.linalg.det(Q) < 0:  # a proper rotation: move the reflection into U's second row
        Q[:, 1] *= -1
        U[1] *= -1
    if U[0, 0] < 0:  # positive pixel size: rotate by 180°
        Q, U = -Q, -U
    theta = float(np.degrees(np.arctan2(-Q[1, 0], Q[0, 0])))  # Q = R(-θ)
    return ScanGeometry(shape=tuple(int(v) for v in shape), pixel_size=float(U[0, 0]), rotation=theta,
                        offset=(float(offset[0]), float(offset[1])),
                        drift=(float(U[0, 1]), float(U[1, 1] - U[0, 0])))


def _standardise(img: np.ndarray) -> np.ndarray:
    s = img.std()
    return (img - img.mean()) / s if s > 0 else np.zeros_like(img)


def column_values(image: np.ndarray, labels) -> np.ndarray:
    """``image`` at the visible columns of ``labels``, through a light blur (0.15 Å) so a column's value is
    not one noisy pixel: what the intensity term compares."""
    at = [labels.y_px[labels.visible], labels.x_px[labels.visible]]
    return ndimage.map_coordinates(ndimage.gaussian_filter(image, 0.15 / labels.pixel_size), at, order=1)


def column_residuals(observed: np.ndarray, simulated: np.ndarray, labels, background: float = 0.0,
                     scale: str = "mean") -> np.ndarray | None:
    """(d - k·m) / c at the visible columns: d the observed column intensities above ``background``, m
    the simulated ones, k their best common scale. c is the mean of d (``scale="mean"``) or the fitted
    brightest column k·max(m) (``"brightest"``, what the loop uses: blind to how many faint columns a
    candidate makes visible, which the mean is not; bench/column_norm.py compares the two). None when
    nothing is comparable."""
    d = column_values(observed, labels) - background
    m = column_values(simulated, labels)
    k = float(d @ m / (m @ m)) if m @ m > 0 else 0.0
    if not labels.visible.any() or k <= 0 or d.mean() <= 0:
        return None
    c = {"mean": d.mean(), "brightest": k * m.max()}[scale]
    return (d - k * m) / c


def column_error(observed: np.ndarray, simulated: np.ndarray, labels, scale: str = "mean") -> float:
    """rms of ``column_residuals``: how far a simulation's column intensities are from an image's."""
    return float(np.sqrt(np.mean(column_residuals(observed, simulated, labels, scale=scale) ** 2)))


def verify(reconstruction: Reconstruction, denoised: np.ndarray, pixel_size: float, simulator: Simulator,
           thickness: float | tuple[float, ...] | None = None, signal: str = "haadf", rigid: bool = False,
           min_visible_weight: float | None = None, border: float = 2.0,
           column_sigma: float = COLUMN_SIGMA, fit_blur: bool = False) -> Verification:
    """Score ``reconstruction`` against ``denoised`` (pixel size in Å/px: the one the alignment's
    Å coordinates were made with, i.e. ``reconstruction.pixel_size`` when it was estimated).
    ``thickness`` (Å) may be several: the candidate is scored at each and keeps its best, which tells
    something only where the simulation's contrast changes with thickness (``loop_simulator``'s saturation).

    Standardising both images makes the NCC blind to the detector's gain and offset; the column
    score fits those two once over the whole field and then asks whether the simulated column
    intensities predict the detected ones. ``border`` (px) leaves the field's edge out of the
    column comparison; ``min_visible_weight`` which columns it compares (None: ``COLUMN_MIN_WEIGHT``);
    ``column_sigma`` the intensity term's tolerance; ``fit_blur`` renders the simulation through the
    Gaussian source blur that fits the image best (``fitted_source_sigma``) instead of a point source.
    """
    tried, seen = [], set()
    for t in (thickness if isinstance(thickness, (tuple, list)) else (thickness,)):
        repeat = simulator.simulate(reconstruction.structure, reconstruction.uvw, t)
        if repeat.thickness in seen:  # a monolayer is one layer at every thickness asked
            continue
        seen.add(repeat.thickness)
        tried.append(verify_repeat(repeat, reconstruction, denoised, pixel_size, signal, rigid, min_visible_weight,
                                   border, column_sigma=column_sigma, source_sigma="fit" if fit_blur else 0.0))
    return max(tried, key=lambda v: v.score)


def verify_repeat(repeat: RepeatImage, reconstruction: Reconstruction, denoised: np.ndarray, pixel_size: float,
                  signal: str = "haadf", rigid: bool = False, min_visible_weight: float | None = None,
                  border: float = 2.0, column_scale: str = COLUMN_SCALE, column_sigma: float = COLUMN_SIGMA,
                  source_sigma: float | str = 0.0) -> Verification:
    """``verify`` with the reconstruction's repeat image already simulated (e.g. one of a thickness series).
    ``column_scale`` and ``column_sigma``: the intensity term's normalisation (``column_residuals``) and
    tolerance; bench/column_norm.py compares others with the loop's. ``source_sigma`` (Å): a Gaussian source
    blur applied to the simulation first (bench/recheck_blur.py); ``"fit"``: the one that fits ``denoised``
    best (``fitted_source_sigma``)."""
    denoised = np.asarray(denoised, float)
    geometry = scan_geometry(reconstruction, denoised.shape, pixel_size, rigid)
    sim = render(repeat, geometry, signal)
    if source_sigma == "fit":
        source_sigma = fitted_source_sigma(denoised, sim, pixel_size)
    if source_sigma > 0:
        sim = ndimage.gaussian_filter(sim, source_sigma / pixel_size)
    ncc = float(np.mean(_standardise(denoised) * _standardise(sim)))
    gain, background, _ = affine_fit(denoised, sim)

    labels = column_labels(repeat, geometry, margin=-border,
                           min_visible_weight=COLUMN_MIN_WEIGHT if min_visible_weight is None else min_visible_weight)
    n = int(labels.visible.sum())
    score_i = 0.0
    if n >= 3 and gain > 0:
        r = column_residuals(denoised, sim, labels, background, column_scale)
        if r is not None:
            score_i = float(np.exp(-0.5 * np.mean((r / column_sigma) ** 2)))
    score = float(np.clip(NCC_WEIGHT * max(ncc, 0.0) + (1 - NCC_WEIGHT) * score_i, 0.0, 1.0))
    g = {"shape": list(geometry.shape), "pixel_size": geometry.pixel_size, "rotation": geometry.rotation,
         "offset": list(geometry.offset), "drift": list(geometry.drift)}
    return Verification(ncc, score_i, score, n, float(gain), float(background), g, sim, float(repeat.thickness),
                        float(source_sigma))
