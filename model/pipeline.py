"""The whole path from one image to a relaxed crystal, as one predictor object over the stages.

    denoise (model.denoiser) → fit the image's lattice (model.lattice) → retrieve top-k by embedding
    plus the best-embedded templates whose lattice fits (model.retrieval) → for each candidate: align
    and reconstruct under its symmetry (model.lattice, model.reconstruct) and forward-simulate it
    against the image (model.verify) → keep the best by verification × lattice prior, or refuse →
    relax and compute properties (model.relax)

``Pipeline.load`` reads every model once; ``Pipeline.run`` then serves any number of images.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from data.io import LoadedImage
from model.pixel_size import COLUMN_SIGMA, COLUMN_SIGMA_SPREAD

CALIBRATION_FILE = Path(__file__).resolve().parent.parent / "checkpoints" / "calibration.json"
# px per side of the central window that lattice fit, alignment and verification read: a crystal
# repeats, and an 8k field would cost minutes per candidate for nothing
ANALYSIS_SIZE = 1024
# Other candidates within this much of the kept one's score are reported as indistinguishable: a 1T
# monolayer and its AA-stacked bulk (NiTe2 1L vs CdI2-type NiTe2 [001]) project onto the same columns,
# and only the absolute intensity, which a HAADF image does not calibrate, could part them.
TIE_TOLERANCE = 0.005
# The lattice prior exp(-½ (template strain / σ)²): how plausible the lattice the image needs is for
# a candidate. With a calibrated pixel, σ² = (how far the right template's strain scatters)² + (the pixel
# size's own relative error)². The scatter is the rms template strain of the correct template on
# validation-split images (bench/lattice_prior.py, bench/results/lattice_prior.json): 0.08 % where one
# length is in the plane (the scan drift is fitted apart from it, model.reconstruct), 0.10 % where two
# or more are (drift and c/a share what the image cannot tell apart, model.reconstruct.RATIO_SIGMA;
# 1.2 % while the cell took all of it). Isostructural look-alikes one HAADF projection cannot tell
# apart (rocksalt [100] MgO vs VC: 1.2 % apart) are decided here.
STRAIN_RMS = {1: 0.0008, 2: 0.001}  # by the number of in-plane lengths measured (2: two or more)
# With an estimated pixel size only the shape counts, and it carries the whole scan distortion (the
# data engine draws up to 0.004 Å per line: 3-7 % at 0.06-0.15 Å pixels)
SHAPE_SIGMA = 0.04


def lattice_prior_sigma(reconstruction, pixel_size_error: float) -> float:
    """σ of the lattice prior for ``reconstruction`` (see ``STRAIN_RMS``)."""
    if reconstruction.pixel_size_source != "given":
        return SHAPE_SIGMA
    return float(np.hypot(STRAIN_RMS[min(max(reconstruction.lengths_measured, 1), 2)], pixel_size_error))


@dataclass
class Options:
    top_k: int = 10  # candidates by embedding score
    # more: templates whose projected lattice fits the image's. 40, not 10: the truth's lattice often fits
    # but ranks beyond the first 10 (62 % against 57 % of 77 crystals, bench/results/bench-pipeline-lattice10.md),
    # and the refusal threshold calibrated at 40 stays where it was (bench/results/calibration_lattice40.json)
    lattice_k: int = 40
    # and then these many whose lattice is closest to one of the measured lattice's index-2 lattices
    # (``Retriever.query``'s ``coarser_k``; with a pixel size only)
    coarser_k: int = 4
    elements: list[str] | None = None
    # "bulk" | "monolayer" | None (either): what the user knows of the specimen. A monolayer and its bulk
    # crystal (AA-stacked 1T, 2H along [001]) project to the same columns and column-intensity ratios,
    # so only the absolute signal, which a detector's unknown gain hides, separates them: all 22 wrong
    # crystals the element hint still keeps are such pairs, and with this hint too none is kept
    # (README, Pipeline benchmark)
    specimen: str | None = None
    pixel_size_error: float = 0.01  # relative 1σ of a given pixel size (calibration, and the sample's own strain)
    # Without a pixel size, the columns' width in pixels gives one (``model.pixel_size``), reported always.
    # Set, this is the Gaussian σ (Å) of an atom column's image on the user's microscope, and the estimate it
    # gives also weighs each candidate by how plausible its implied pixel size is, and retrieval keeps to
    # those within 3 spreads (σ of ln). None, the default: only the lattice's shape counts, the estimate (at
    # ``COLUMN_SIGMA``) is information only. With the data engine's own probe the weight changed 8 of 77
    # benchmark crystals, 4 gained and 4 lost (README, Pipeline benchmark: ``no-pixel-width``), while a
    # microscope with another probe would be misled by the default width.
    column_sigma: float | None = None
    column_sigma_spread: float = COLUMN_SIGMA_SPREAD
    potential: str = "auto"  # auto | mattersim | chgnet | none
    potential_checkpoint: str | None = None
    device: str = "cpu"
    fmax: float = 0.02
    relax_steps: int = 300
    thickness: float = 80.0  # Å, for the verification simulation
    # Let the loop's HAADF signal level off with thickness as multislice's does (``model.verify.loop_simulator``,
    # ``data.simulate.SATURATION_FIT``). Against multislice it brings column intensities from 3.0 % to 1.3 %
    # of the brightest column (median of 14 training crystals at 20-160 Å, bench/channelling.py; held-out
    # WSe2, MoSe2 and KTaO3: 7.6 % to 1.9 %), but it overshoots SrTiO3 [100], whose Sr columns do not level
    # off (3.7 % to 9.8 %), and then takes the bundled SrTiO3 example for EuTiO3: off until a model of a
    # column's channelling serves both (README, Reconstruction, item 7).
    saturation: bool = False
    # Thicknesses (Å) each candidate is verified at, keeping its best (with saturation, the ratio of heavy to
    # light columns falls as the specimen thickens); empty: ``thickness`` alone.
    thicknesses: tuple[float, ...] = ()
    denoise: bool = True  # False: a Gaussian smoothing stands in for the learned denoiser (ablation)
    symmetry: bool = True  # False: the lattice is refined as triclinic, the space group left to chance (ablation)
    # Which of a candidate's columns the verification's intensity term compares, by Z^1.7 weight relative to
    # its brightest; None: ``model.verify.COLUMN_MIN_WEIGHT`` (those it deems visible; 0, every one, measured worse)
    column_min_weight: float | None = None
    # The verification's column-intensity tolerance, a fraction of the brightest column; None:
    # ``model.verify.COLUMN_SIGMA`` (7 %, chosen on multislice validation images). The refusal threshold
    # in checkpoints/calibration.json was calibrated at the default.
    intensity_tolerance: float | None = None
    # Render each candidate through the Gaussian source blur that fits the image best (model.verify.
    # fitted_source_sigma) rather than a point source: a microscope's source is not a point, and its blur
    # changes column ratios where columns differ in width. On the multislice validation set it
    # kept the right crystal in 33 of 47 against 31, losing none (bench/results/calibration_val_blur_rows.json
    # against calibration_val_cross_section_rows.json); checkpoints/calibration.json was calibrated with it.
    fit_blur: bool = True
    # Re-verify up to this many of the best accepted candidates by full multislice (0: off), those within
    # ``multislice_margin`` × the best score; the one multislice explains best is kept. The convolution
    # path misjudges column intensities by ~9 % of the brightest column (bench/column_sigma.py): enough to
    # prefer EuTe to LaBi.
    multislice_k: int = 0
    multislice_margin: float = 0.75
    # Thicknesses (Å) the re-check tries, each contender scored at its best (one multislice run to the
    # largest gives them all). Empty, the default: ``thickness`` alone. The fit lets a wrong contender
    # trade composition for thickness (TaC at 19 Å explains an MnO image better than MnO does); on the
    # benchmark's 10 deciding images it kept the truth in 6, as 80 Å alone does (README, Pipeline benchmark).
    multislice_thicknesses: tuple[float, ...] = ()
    # The detector's reading of the whole incident beam and of no beam, in the image's units (a detector
    # scan). Given, the image is read as fractions of the beam, and each candidate is weighed by the
    # specimen its signal implies: a monolayer as about one layer, a bulk crystal as 10-1000 Å thick
    # (``model.verify.specimen_fit``). None: the image's scale is arbitrary, as it is for most images.
    beam_counts: float | None = None
    dark_counts: float = 0.0

    def __post_init__(self):
        from model.retrieval import KINDS

        if self.specimen is not None and self.specimen not in KINDS:
            raise ValueError(f"specimen must be one of {KINDS} or None, got {self.specimen!r}")
        if self.column_sigma is not None and not (self.column_sigma > 0 and self.column_sigma_spread > 0):
            raise ValueError(f"column_sigma ({self.column_sigma}) and column_sigma_spread ({self.column_sigma_spread}) "
                             "must be positive")
        if self.intensity_tolerance is not None and not self.intensity_tolerance > 0:
            raise ValueError(f"intensity_tolerance must be positive, got {self.intensity_tolerance}")
        if self.beam_counts is not None and not (np.isfinite(self.beam_counts) and np.isfinite(self.dark_counts)
                                                 and self.beam_counts > self.dark_counts):
            raise ValueError(f"beam_counts ({self.beam_counts}) must be finite and above dark_counts ({self.dark_counts})")

    @property
    def tolerance(self) -> dict:
        """The verification's ``column_sigma`` keyword, where this sets one."""
        return {} if self.intensity_tolerance is None else {"column_sigma": self.intensity_tolerance}

    @property
    def absolute(self) -> bool:
        """Whether the image's intensities are on the incident beam's scale."""
        return self.beam_counts is not None

    def beam_fraction(self, array: np.ndarray) -> np.ndarray:
        """``array``, in the image's units, as fractions of the incident beam (unchanged on an arbitrary scale)."""
        return array if not self.absolute else (array - self.dark_counts) / (self.beam_counts - self.dark_counts)


@dataclass
class Calibration:
    """Refusal threshold and score → confidence map, fitted on the validation split (bench/calibrate.py)."""
    threshold: float = 0.5
    slope: float = 10.0  # logistic P(correct | score)
    intercept: float = -5.0
    meta: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path = CALIBRATION_FILE) -> "Calibration":
        path = Path(path)
        if not path.is_file():
            warnings.warn(f"no calibration at {path}; using uncalibrated defaults", stacklevel=2)
            return cls(meta={"source": "default (uncalibrated)"})
        d = json.loads(path.read_text())
        return cls(d["threshold"], d["slope"], d["intercept"], d | {"source": str(path)})

    def confidence(self, score: float) -> float:
        return float(1.0 / (1.0 + np.exp(-(self.slope * score + self.intercept))))

    @staticmethod
    def refusal_threshold(negative_scores, max_false_accept: float) -> float:
        """The lowest threshold that accepts at most ``max_false_accept`` of the negatives' best scores."""
        neg = np.sort(np.asarray(negative_scores, float))[::-1]
        allowed = int(np.floor(max_false_accept * len(neg)))
        return float(neg[allowed] + 1e-4) if len(neg) > allowed else 0.0


@dataclass
class CandidateResult:
    candidate: dict  # retrieval's view: id, zone axis, score
    reconstruction: object | None = None
    verification: object | None = None
    error: str | None = None
    prior_sigma: float = SHAPE_SIGMA  # ``lattice_prior_sigma``
    multislice: object | None = None  # the multislice re-verification (Options.multislice_k), at its best thickness
    multislice_series: list = field(default_factory=list)  # (thickness Å, verification score) of every one tried
    pixel_size: float | None = None  # Å/px the verification used (given, or this candidate's estimate)
    pixel_prior: float = 1.0  # without a pixel size: how plausible ``pixel_size`` is by the columns' width
    specimen: object | None = None  # model.verify.SpecimenFit, on an absolute-scale image (Options.beam_counts)
    multislice_specimen: object | None = None  # the same for the multislice re-verification

    @property
    def prior(self) -> float:
        """How plausible the lattice the image needs is for this material (1: its own lattice)."""
        if self.reconstruction is None:
            return 0.0
        return float(np.exp(-0.5 * (self.reconstruction.template_strain / self.prior_sigma) ** 2))

    @property
    def score(self) -> float:
        """What candidates are ranked, accepted and calibrated by: verification × lattice prior (× the
        specimen prior on an absolute-scale image, × the pixel-size prior on an image without a pixel size)."""
        if self.verification is None:
            return -1.0
        return (self.verification.score * self.prior * self.pixel_prior
                * (self.specimen.prior if self.specimen is not None else 1.0))

    @property
    def multislice_score(self) -> float | None:
        """The same product with the multislice re-verification, where it ran."""
        if self.multislice is None:
            return None
        s = self.multislice_specimen
        return self.multislice.score * self.prior * self.pixel_prior * (s.prior if s is not None else 1.0)

    def to_dict(self) -> dict:
        d = dict(self.candidate)
        d["retrieval_score"] = d.pop("score")
        if self.pixel_size is not None:
            d |= {"pixel_size": round(float(self.pixel_size), 6), "pixel_size_prior": round(self.pixel_prior, 5)}
        if self.verification is not None:
            v = self.verification
            d |= {"score": round(self.score, 5), "verification_score": v.score, "ncc": v.ncc,
                  "intensity_score": v.intensity_score, "source_sigma": round(v.source_sigma, 3)}
        if self.multislice is not None:
            m = self.multislice
            d |= {"multislice_score": round(self.multislice_score, 5), "multislice_verification_score": m.score,
                  "multislice_ncc": m.ncc, "multislice_intensity_score": m.intensity_score,
                  "multislice_thickness": None if m.thickness is None else round(m.thickness, 2),
                  "multislice_by_thickness": [[round(t, 2), round(v, 5)] for t, v in self.multislice_series]}
        if self.specimen is not None:
            d["specimen"] = self.specimen.to_dict()
        if self.multislice_specimen is not None:
            d["multislice_specimen"] = self.multislice_specimen.to_dict()
        if self.reconstruction is not None:
            r = self.reconstruction
            d |= {"spacegroup": r.spacegroup["symbol"], "lattice": {k: round(float(x), 4) for k, x in r.lattice.items()},
                  "template_strain": round(r.template_strain, 5), "lattice_prior": round(self.prior, 5),
                  "lattice_prior_sigma": round(self.prior_sigma, 5), "scan_distortion": r.to_dict()["scan_distortion"],
                  "alignment_rms": r.alignment.rms, "inlier_fraction": r.alignment.inlier_fraction}
        if self.error:
            d["error"] = self.error
        return d


@dataclass
class Result:
    accepted: bool
    reason: str
    report: dict
    reconstructed: object | None = None  # pymatgen Structure before relaxation
    relaxed: object | None = None
    denoised: np.ndarray | None = None
    columns_xy_px: np.ndarray | None = None
    model_xy_px: np.ndarray | None = None
    lattice_px: np.ndarray | None = None


def analysis_window(shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(row, col, height, width) of the central ``ANALYSIS_SIZE`` window of an image of ``shape``."""
    ny, nx = shape
    h, w = min(ny, ANALYSIS_SIZE), min(nx, ANALYSIS_SIZE)
    return (ny - h) // 2, (nx - w) // 2, h, w


def look_alikes(candidates: list[CandidateResult], kept: CandidateResult) -> list[dict]:
    """The other templates that explain the image as well as ``kept`` (within ``TIE_TOLERANCE``) by the
    score that decided: the multislice one where the re-check chose ``kept``, the calibrated one otherwise."""
    if kept.multislice is not None:
        pool, key = [r for r in candidates if r.multislice is not None], lambda r: r.multislice_score
    else:
        pool, key = candidates, lambda r: r.score
    return [{"template_id": r.candidate["template_id"], "zone_axis": list(r.candidate["zone_axis"]),
             "kind": r.candidate["kind"], "score": round(key(r), 5)}
            for r in pool if r.candidate["template_id"] != kept.candidate["template_id"]
            and abs(key(r) - key(kept)) <= TIE_TOLERANCE]


class Pipeline:
    def __init__(self, denoiser, retriever, simulator, calibration: Calibration, options: Options,
                 calculator=None, potential_info=None, multislice=None):
        self.denoiser, self.retriever, self.simulator = denoiser, retriever, simulator
        self.multislice = multislice
        self.calibration, self.options = calibration, options
        self.calculator, self.potential_info = calculator, potential_info

    @classmethod
    def load(cls, options: Options | None = None, denoiser: str | None = None, retrieval: str | None = None,
             index: str | None = None, calibration: str | None = None) -> "Pipeline":
        """Every model, once. Missing/corrupt checkpoints raise CheckpointError/RetrievalError/PotentialError."""
        from model.denoiser import DEFAULT_CHECKPOINT, Denoiser
        from model.relax import load_potential
        from model.retrieval import DEFAULT_CHECKPOINT as RCKPT, DEFAULT_INDEX, Retriever
        from model.verify import loop_simulator, multislice_simulator

        options = options or Options()
        den = Denoiser.from_checkpoint(denoiser or DEFAULT_CHECKPOINT, device=options.device)
        ret = Retriever.from_checkpoint(retrieval or RCKPT, index or DEFAULT_INDEX, device=options.device)
        calc = info = None
        if options.potential != "none":
            calc, info = load_potential(options.potential, options.potential_checkpoint, options.device)
        return cls(den, ret, loop_simulator(saturation=options.saturation), Calibration.load(calibration or CALIBRATION_FILE),
                   options, calc, info, multislice_simulator() if options.multislice_k > 0 else None)

    # ------------------------------------------------------------------ stages
    def candidates(self, denoised: np.ndarray, columns, pixel_size: float | None,
                   exclude: list[str] | None = None, pixel_prior=None, raw: np.ndarray | None = None
                   ) -> list[CandidateResult]:
        """Fit the lattice, retrieve candidates, then align, reconstruct and verify each (the closed loop).
        ``pixel_prior``: without ``pixel_size``, a ``model.pixel_size.PixelSizeEstimate`` each candidate's
        implied pixel size is weighed by. ``raw``: the image before denoising, whose own periodicity is a
        second lattice when the columns give none."""
        from data.library import get_entry
        from model.lattice import align_template, image_lattices
        from model.reconstruct import reconstruct
        from model.verify import specimen_fit, verify

        o = self.options
        xy_px = np.stack([columns.x_px, columns.y_px], 1)
        known = pixel_size is not None
        xy = xy_px * pixel_size if known else xy_px
        lattices = image_lattices(xy, denoised, pixel_size if known else 1.0, raw)
        cands = self.retriever.query(denoised, pixel_size, o.top_k, o.elements, exclude, lattice=lattices or None,
                                     lattice_k=o.lattice_k, kind=o.specimen, coarser_k=o.coarser_k,
                                     pixel_prior=None if known else pixel_prior)
        out = []
        for c in cands:
            res = CandidateResult(c.to_dict())
            try:
                entry = get_entry(c.template_id)
                # the lattice that brought it first, then the others: an embedding pick may fit another
                tries = ([lattices[c.lattice_index]] + [lat for n, lat in enumerate(lattices) if n != c.lattice_index]
                         if lattices else [None])
                for n, lat in enumerate(tries):
                    try:
                        al = align_template(xy, entry, c.zone_axis, known, pixel_size=pixel_size,
                                            intensity=columns.intensity, lattice=lat)
                        break
                    except ValueError:
                        if n == len(tries) - 1:
                            raise
                rec = reconstruct(entry, c.zone_axis, al, symmetry=o.symmetry)
                px = res.pixel_size = pixel_size if known else rec.pixel_size
                if not known and pixel_prior is not None:
                    res.pixel_prior = pixel_prior.prior(px)
                res.reconstruction = rec
                res.prior_sigma = lattice_prior_sigma(rec, o.pixel_size_error)
                res.verification = verify(rec, denoised, px, self.simulator, thickness=o.thicknesses or o.thickness,
                                          min_visible_weight=o.column_min_weight, fit_blur=o.fit_blur, **o.tolerance)
                if o.absolute:
                    res.specimen = specimen_fit(res.verification, c.kind, denoised, px)
            except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:
                res.error = f"{type(e).__name__}: {e}"[:200]
            out.append(res)
        return out

    def multislice_recheck(self, ok: list[CandidateResult], denoised: np.ndarray,
                           say: Callable[[str], None]) -> CandidateResult | None:
        """Re-verify the close contenders by multislice and return the one it explains best (None: fewer
        than two contenders, nothing to decide).

        Contenders: the best ``multislice_k`` candidates that pass the calibrated threshold and score at
        least ``multislice_margin`` × the best. Acceptance and confidence stay with the calibrated
        convolution score, which every contender passes; multislice only decides between them.
        """
        from model.verify import specimen_fit, verify_repeat

        o = self.options
        ranked = sorted(ok, key=lambda r: -r.score)
        top = ranked[0].score
        close = [r for r in ranked[:o.multislice_k]
                 if r.score >= max(self.calibration.threshold, o.multislice_margin * top)]
        if len(close) < 2:
            return None
        thicknesses = o.multislice_thicknesses or (o.thickness,)
        say(f"re-verifying {len(close)} close candidates by multislice at {len(thicknesses)} thickness(es)")
        for r in close:
            series = self.multislice.thickness_series(r.reconstruction.structure, r.reconstruction.uvw, thicknesses)
            # a point source, whatever ``fit_blur``: a fitted blur trades against thickness (on the bundled
            # 80 Å example, 20 Å and a blur fit better), which the thickness series is there to measure
            tried = [verify_repeat(rep, r.reconstruction, denoised, r.pixel_size, min_visible_weight=o.column_min_weight,
                                   **o.tolerance) for rep in series]
            fits = [specimen_fit(v, r.candidate["kind"], denoised, r.pixel_size) if o.absolute else None for v in tried]
            r.multislice_series = [(v.thickness, v.score) for v in tried]
            # the best thickness by the whole product: on an absolute image, the specimen prior weighs in
            r.multislice, r.multislice_specimen = max(zip(tried, fits),
                                                      key=lambda vf: vf[0].score * (vf[1].prior if vf[1] else 1.0))
        return max(close, key=lambda r: r.multislice_score)

    def run(self, image: LoadedImage, progress: Callable[[str], None] | None = None,
            exclude: list[str] | None = None) -> Result:
        from model.denoiser import SmoothingDenoiser
        from model.relax import formation_energy_per_atom, load_references, relax

        say = progress or (lambda s: None)
        t, timings = time.perf_counter(), {}

        def lap(name):
            nonlocal t
            now = time.perf_counter()
            timings[name] = round(now - t, 3)
            t = now

        px = image.pixel_size
        say("denoising")
        # unknown pixel size: run the denoiser at the image's own sampling (no resampling)
        denoiser = self.denoiser if self.options.denoise else SmoothingDenoiser()
        o = self.options
        # an absolute-scale image in fractions of the beam, as the loop simulates it
        array = o.beam_fraction(image.array)
        den = denoiser(array, px if px is not None else denoiser.working_pixel_size(0.1))
        cols = den.columns
        lap("denoise")
        say(f"{len(cols)} columns; retrieving and verifying up to {o.top_k} + {o.lattice_k} + {o.coarser_k} candidates")
        i0, j0, h, w = analysis_window(den.denoised.shape)
        window = den.denoised[i0:i0 + h, j0:j0 + w]
        wcols = cols.window(i0, j0, h, w)
        estimate = None
        if px is None:
            from model.pixel_size import estimate_pixel_size

            estimate = estimate_pixel_size(window, wcols, o.column_sigma or COLUMN_SIGMA, o.column_sigma_spread)
            say("pixel size from the columns' width: " + (f"{estimate.value:.4f} Å" if estimate else "too few columns"))
        results = self.candidates(window, wcols, px, exclude, estimate if o.column_sigma is not None else None,
                                  array[i0:i0 + h, j0:j0 + w])
        lap("retrieve_reconstruct_verify")
        ok = [r for r in results if r.verification is not None]
        best = max(ok, key=lambda r: r.score) if ok else None
        if best is not None and self.options.multislice_k > 0 and self.multislice is not None:
            best = self.multislice_recheck(ok, window, say) or best
            lap("multislice_verify")
        score = best.score if best else 0.0
        conf = self.calibration.confidence(score) if best else 0.0
        from model.verify import COLUMN_SIGMA as default_tolerance
        report = {
            "input": image.to_dict() | {"intensity": {"unit": "fraction of the incident beam", "beam_counts": o.beam_counts,
                                                      "dark_counts": o.dark_counts} if o.absolute else
                                        {"unit": "arbitrary"}},
            "candidates": [r.to_dict() for r in results],
            "confidence": round(conf, 4), "score": round(score, 4),
            "verification_score": round(best.verification.score, 4) if best else 0.0,
            "lattice_prior": round(best.prior, 4) if best else 0.0,
            "multislice_score": round(best.multislice_score, 4) if best and best.multislice else None,
            "threshold": self.calibration.threshold, "calibration": self.calibration.meta.get("source"),
            "columns": {"detected": len(cols)},
            "pixel_size_estimate": (estimate.to_dict() | {"weighs_candidates": o.column_sigma is not None}
                                    if estimate is not None else None),
            "analysis_window": {"row": i0, "col": j0, "height": h, "width": w},
            "options": {"top_k": self.options.top_k, "lattice_k": self.options.lattice_k,
                        "coarser_k": self.options.coarser_k,
                        "elements": self.options.elements, "specimen": self.options.specimen,
                        "pixel_size_error": self.options.pixel_size_error,
                        "column_sigma": self.options.column_sigma, "column_sigma_spread": self.options.column_sigma_spread,
                        # the one the verification used (the default's too): offline rescoring starts from it
                        "intensity_tolerance": self.options.intensity_tolerance or default_tolerance,
                        "fit_blur": self.options.fit_blur, "saturation": self.options.saturation,
                        "thicknesses": list(self.options.thicknesses or (self.options.thickness,)),
                        "potential": self.options.potential, "device": self.options.device,
                        "multislice_k": self.options.multislice_k, "multislice_margin": self.options.multislice_margin,
                        "multislice_thicknesses": list(self.options.multislice_thicknesses or (self.options.thickness,))},
            "timings": timings,
        }
        xy_px = np.stack([cols.x_px, cols.y_px], 1)
        if best is None or score < self.calibration.threshold:
            why = ("no candidate could be aligned to the detected columns" if best is None else
                   f"no candidate explains the image (best score {score:.3f} < threshold "
                   f"{self.calibration.threshold:.3f})")
            report |= {"status": "no_structure", "reason": why}
            report["timings"] = timings | {"total": round(sum(timings.values()), 3)}
            return Result(False, why, report, denoised=den.denoised, columns_xy_px=xy_px)

        rec, ver = best.reconstruction, best.verification
        entry_c = best.candidate
        px_used = px if px is not None else rec.pixel_size
        report["input"] |= {"pixel_size_used": px_used,
                            "pixel_size_sigma": rec.pixel_size_sigma if px is None else 0.0,
                            "pixel_size_source": image.pixel_size_source if px is not None else "estimate"}
        report |= {
            "status": "ok", "reason": "",
            "template": {"id": entry_c["template_id"], "formula": entry_c["formula"],
                         "prototype": entry_c["prototype"], "spacegroup": entry_c["spacegroup"], "kind": entry_c["kind"]},
            "zone_axis": {"uvw": list(entry_c["zone_axis"]), "label": entry_c["zone_label"]},
            "reconstruction": {k: v for k, v in rec.to_dict().items() if k not in ("structure", "alignment")},
            "alignment": rec.alignment.to_dict(),
            "verification": ver.to_dict(),
            "specimen_fit": best.specimen.to_dict() if best.specimen is not None else None,
            "multislice_verification": best.multislice.to_dict() if best.multislice else None,
            "indistinguishable": look_alikes(ok, best),
        }
        lattice = {"reconstructed": rec.lattice, "measured": rec.measured, "carried": rec.carried,
                   "fixed": rec.fixed, "sigma": rec.sigma}
        spacegroup = {"template": rec.spacegroup_template, "reconstructed": rec.spacegroup}
        relaxed = None
        if self.calculator is not None:
            say(f"relaxing {rec.structure.composition.reduced_formula} with {self.potential_info.name}")
            rr = relax(rec.structure, self.calculator, fmax=self.options.fmax, steps=self.options.relax_steps,
                       monolayer=entry_c["kind"] == "monolayer")
            relaxed = rr.structure
            lattice["relaxed"] = rr.lattice
            spacegroup["relaxed"] = rr.spacegroup_after
            try:
                ef = formation_energy_per_atom(relaxed, rr.energy_per_atom, load_references(self.potential_info.name))
            except Exception as e:  # a missing table must not cost the user the structure
                ef, report["formation_energy_note"] = None, str(e)
            report |= {
                "potential": {"name": self.potential_info.name, "version": self.potential_info.version,
                              "checkpoint": self.potential_info.checkpoint, "note": self.potential_info.note},
                "energy_per_atom": rr.energy_per_atom, "formation_energy_per_atom": ef,
                "relaxation": {"converged": rr.converged, "steps": rr.steps, "max_force": rr.max_force,
                               "fmax": self.options.fmax},
                "properties": {k: v for k, v in rr.to_dict().items()
                               if k in ("energy", "stress_gpa", "pressure_gpa", "volume", "density")},
            }
            lap("relax")
        else:
            report |= {"potential": {"name": "none"}, "energy_per_atom": None, "formation_energy_per_atom": None,
                       "relaxation": None}
        report |= {"lattice": lattice, "spacegroup": spacegroup}
        report["timings"] = timings | {"total": round(sum(timings.values()), 3)}
        model_xy = self._model_columns(rec, (h, w), px_used)
        return Result(True, "", report, rec.structure, relaxed, den.denoised, xy_px,
                      None if model_xy is None else model_xy + [j0, i0], self._lattice_px(rec, px_used))

    def _model_columns(self, rec, shape, px) -> np.ndarray | None:
        from data.scan import column_labels
        from model.lattice import MIN_VISIBLE_WEIGHT
        from model.verify import scan_geometry

        try:
            repeat = self.simulator.simulate(rec.structure, rec.uvw, self.options.thickness)
            lab = column_labels(repeat, scan_geometry(rec, shape, px), min_visible_weight=MIN_VISIBLE_WEIGHT)
            return np.stack([lab.x_px[lab.visible], lab.y_px[lab.visible]], 1)
        except (ValueError, RuntimeError):
            return None

    @staticmethod
    def _lattice_px(rec, px) -> np.ndarray | None:
        lat = rec.alignment.lattice
        if lat is None:
            return None
        v = np.asarray(lat.vectors, float)
        # the lattice was fitted in Å when the pixel size was known, in pixels otherwise
        return v / px if rec.pixel_size_source == "given" else v
