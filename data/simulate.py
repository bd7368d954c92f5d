"""abTEM simulation of one periodic repeat unit of a crystal seen along a zone axis.

A perfect crystal image is periodic, so we simulate only the orthogonal repeat unit (scan
positions at Nyquist sampling over one cell of a potential tiled wide enough for the probe)
and let ``data.scan`` tile, rotate, shift and resample it to any field of view.

Two paths from the same abTEM objects:
- ``multislice``: full multislice with annular (HAADF, ABF) and segmented (iDPC) detectors.
- ``convolution``: an incoherent object convolved with abTEM's probe intensity (the incoherent-
  imaging approximation). ~100x cheaper; used for bulk training data and the closed loop, and
  validated against multislice by ``bench/validate_convolution.py``. The object is either
  ``atoms`` (the default: training data and the closed loop): every atom's own abTEM projected
  potential raised to a power and summed, so a column's brightness grows with its number of atoms
  as in multislice; or ``summed`` (the first version, which checkpoints before the atoms-object
  retraining were trained on): the whole cell's projected potential raised to the power, so two
  stacked atoms count 2^power times one.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from data.zone_axes import Column, describe

SIGNALS = ("haadf", "abf", "idpc")
# Constants of the convolution object, fitted against multislice by bench/validate_convolution.py.
# "atoms": 7 bulk crystals and 2 monolayers at 40 Å (bench/results/convolution_validation.json).
# "summed": the first fit, on the 7 bulk crystals; with the monolayers added its best exponent drops
# to 1.6 and SrTiO3's columns are then off by 52 % (convolution_validation_summed.json): one power of
# the summed potential cannot serve both, the per-atom object can.
CONVOLUTION_FIT = {"summed": {"exponent": 2.6, "blur": 0.0, "scale": 7.4e-9},
                   "atoms": {"exponent": 2.8, "blur": 0.05, "scale": 2.96e-10}}
# The convolution image is linear in thickness; multislice HAADF is not: the signal of a heavy column
# levels off as the specimen thickens (the fitted level is 0.33 of the beam), while light and medium
# columns stay nearly linear. ``SimulationConfig.convolution_saturation`` reads each probe position's linear detector
# fraction I through ``saturate`` (level s, sharpness q), with the object's scale times ``scale_factor``
# (the per-atom object's scale was fitted linear, at 40 Å). Fitted against multislice thickness series
# (20-160 Å) of training-split crystals by bench/channelling.py (bench/results/channelling.json).
SATURATION_FIT = {"saturation": 0.3344, "sharpness": 1.5, "scale_factor": 1.1391}


def saturate(fraction: np.ndarray, level: float, sharpness: float = 1.0) -> np.ndarray:
    """I / (1 + (I/level)^q)^(1/q), q = ``sharpness``: linear while I is well below ``level``, never above
    it, and the larger q the more abruptly it levels off."""
    f = np.clip(np.asarray(fraction, dtype=np.float64), 0, None)
    return f / (1 + (f / level) ** sharpness) ** (1 / sharpness)


def wavelength(energy: float) -> float:
    """Relativistic electron wavelength in Å for an energy in eV."""
    from abtem.core.energy import energy2wavelength

    return float(energy2wavelength(energy))


@dataclass
class Microscope:
    energy: float = 200e3  # eV
    semiangle: float = 21.0  # probe convergence semi-angle, mrad
    defocus: float = 0.0  # Å (abTEM sign convention: positive is underfocus)
    Cs: float = 0.0  # Å
    aberrations: dict = field(default_factory=dict)  # any further abTEM aberration coefficients
    haadf: tuple[float, float] = (70.0, 200.0)  # mrad
    abf: tuple[float, float] | None = None  # default: (semiangle/2, semiangle)
    dpc: tuple[float, float] | None = None  # segmented-detector radii; default (0.25, 1) x semiangle

    def __post_init__(self):
        if self.energy <= 0 or self.semiangle <= 0:
            raise ValueError("microscope energy and convergence semi-angle must be positive")
        lo, hi = self.haadf
        if not 0 <= lo < hi:
            raise ValueError(f"HAADF detector angles must satisfy 0 <= inner < outer, got {self.haadf}")
        self.haadf = (float(lo), float(hi))
        self.abf = tuple(self.abf) if self.abf else (self.semiangle / 2, self.semiangle)
        self.dpc = tuple(self.dpc) if self.dpc else (0.25 * self.semiangle, self.semiangle)

    def probe(self, **grid):
        import abtem

        return abtem.Probe(energy=self.energy, semiangle_cutoff=self.semiangle, defocus=self.defocus,
                           Cs=self.Cs, **self.aberrations, **grid)


@dataclass
class SimulationConfig:
    method: str = "convolution"  # "multislice" | "convolution"
    thickness: float = 100.0  # Å; rounded to whole repeats along the beam
    sampling: float | None = None  # potential sampling, Å; None: finest needed by the HAADF outer angle
    slice_thickness: float = 2.0  # Å
    min_lateral_extent: float = 10.0  # Å; potential tiled at least this wide so the probe fits
    scan_sampling: float | None = None  # Å; None: Nyquist of the probe
    output_sampling: float = 0.05  # Å; the repeat image is Fourier-interpolated to this
    frozen_phonons: int = 0  # configurations; 0 = static lattice
    phonon_sigma: float = 0.08  # Å, rms thermal displacement
    signals: tuple[str, ...] = ("haadf",)
    # "atoms" | "summed", see the module docstring. The default is the object whose column
    # intensities follow multislice (bench/validate_convolution.py); "summed" reproduces old datasets.
    convolution_object: str = "atoms"
    # object = (V blurred)^exponent x scale; None: the values bench/validate_convolution.py fitted for
    # the object against multislice at 200 kV, 21 mrad, 70-200 mrad (CONVOLUTION_FIT)
    convolution_exponent: float | None = None
    convolution_blur: float | None = None  # Å
    convolution_scale: float | None = None  # detector fraction per unit object per Å of thickness
    # A slab's (monolayer's) per-atom object: "cross_section", each atom scaled to integrate to its isolated
    # multislice HAADF cross-section (data.cross_sections), or "potential", as in bulk (before 2026-11-27:
    # 20 monolayers' columns were off multislice by a median 8.4 %, against 3.0 %; bench/validate_convolution.py
    # --slab-object, bench/results/convolution_validation_monolayers*.json)
    slab_object: str = "cross_section"
    # The detector fraction at which a probe position's convolution HAADF signal saturates (``saturate``,
    # SATURATION_FIT); None: linear in thickness, as the data engine and the shipped checkpoints have it.
    # Applied after the cached repeat is scaled to its thickness, so it is not part of the cache key.
    convolution_saturation: float | None = None
    seed: int = 0
    # How multislice places atoms in its potential: "exact" (``data.projection``: exact sub-pixel
    # positions) or "abtem" (abTEM's bilinear placement, which made a column's HAADF intensity depend
    # on its sub-pixel position by up to 59 %, bench/projection.py; the caches made before 2026-11-27 hold it). The
    # convolution path places atoms by exact structure factors already, with abTEM's kernel of one
    # atom on a grid point, where the two projections agree.
    projection: str = "exact"
    # where abTEM runs multislice: "gpu" needs CuPy. Not part of the cache key: a run on either device
    # gives the same images to float32 rounding, so their caches serve each other.
    device: str = "cpu"

    def __post_init__(self):
        if self.method not in ("multislice", "convolution"):
            raise ValueError(f"simulation method must be 'multislice' or 'convolution', got {self.method!r}")
        bad = set(self.signals) - set(SIGNALS)
        if bad:
            raise ValueError(f"unknown signals {sorted(bad)}; choose from {SIGNALS}")
        if self.device not in ("cpu", "gpu"):
            raise ValueError(f"simulation device must be 'cpu' or 'gpu', got {self.device!r}")
        if self.method == "convolution" and set(self.signals) != {"haadf"}:
            raise ValueError("the convolution path models incoherent HAADF only; ABF/iDPC need method: multislice")
        if self.thickness <= 0 or self.slice_thickness <= 0:
            raise ValueError("thickness and slice_thickness must be positive")
        if self.projection not in ("exact", "abtem"):
            raise ValueError(f"projection must be 'exact' or 'abtem', got {self.projection!r}")
        if self.slab_object not in ("cross_section", "potential"):
            raise ValueError(f"slab_object must be 'cross_section' or 'potential', got {self.slab_object!r}")
        if self.convolution_object not in CONVOLUTION_FIT:
            raise ValueError(f"convolution_object must be one of {sorted(CONVOLUTION_FIT)}, got {self.convolution_object!r}")
        if self.convolution_saturation is not None and not self.convolution_saturation > 0:
            raise ValueError(f"convolution_saturation must be positive or None, got {self.convolution_saturation}")
        fit = CONVOLUTION_FIT[self.convolution_object]
        for name in ("exponent", "blur", "scale"):
            if getattr(self, f"convolution_{name}") is None:
                setattr(self, f"convolution_{name}", fit[name])
                if name == "scale" and self.convolution_saturation is not None:
                    self.convolution_scale *= SATURATION_FIT["scale_factor"]
        self.signals = tuple(self.signals)

    def cache_fields(self) -> dict:
        """What keys a cached simulation. Multislice ignores the convolution settings, so it keys them at
        their first values, and the ``summed`` object keeps the key it had before ``convolution_object``
        existed: caches made before it stay valid. The same for ``projection``: "abtem" keys as before it
        existed, and the convolution path, which it does not change, leaves it out."""
        d = asdict(self)
        del d["device"], d["convolution_saturation"]
        if self.method == "convolution" or self.projection == "abtem":
            del d["projection"]
        if self.method == "multislice":
            d.update({f"convolution_{k}": v for k, v in CONVOLUTION_FIT["summed"].items()})
            d["slicing"] = "per-repeat"  # ``Simulator.slices_per_repeat``; caches from before it sliced evenly
        if self.method == "multislice" or self.convolution_object == "summed":
            del d["convolution_object"]
        if self.method == "multislice" or self.convolution_object == "summed" or self.slab_object == "potential":
            del d["slab_object"]  # "potential" keys as before it existed
        return d


@dataclass
class RepeatImage:
    """Noise-free images of one orthogonal repeat unit, rows along y, columns along x."""
    signals: dict[str, np.ndarray]
    cell: tuple[float, float]  # Å
    thickness: float  # Å actually simulated
    columns: list[Column]  # positions in the same frame as the images (pixel (0,0) at x=y=0)
    method: str
    meta: dict = field(default_factory=dict)

    @property
    def sampling(self) -> tuple[float, float]:
        ny, nx = next(iter(self.signals.values())).shape
        return self.cell[0] / nx, self.cell[1] / ny

    def save(self, path: Path):
        np.savez_compressed(path, cell=np.array(self.cell), thickness=self.thickness, method=self.method,
                            meta=json.dumps(self.meta), columns=json.dumps([asdict(c) for c in self.columns]),
                            **{f"signal_{k}": v for k, v in self.signals.items()})

    @classmethod
    def load(cls, path: Path) -> "RepeatImage":
        z = np.load(path, allow_pickle=False)
        signals = {k[7:]: z[k] for k in z.files if k.startswith("signal_")}
        return cls(signals, tuple(z["cell"]), float(z["thickness"]),
                   [Column(**c) for c in json.loads(str(z["columns"]))], str(z["method"]), json.loads(str(z["meta"])))


def max_detector_angle(sampling: float, energy: float) -> float:
    """Largest scattering angle (mrad) a potential sampled at ``sampling`` represents after
    abTEM's 2/3 anti-aliasing aperture."""
    return 2 / 3 * wavelength(energy) / (2 * sampling) * 1e3


def required_sampling(outer: float, energy: float) -> float:
    return wavelength(energy) / (3 * outer * 1e-3)


def _fft_friendly(n: int) -> int:
    """Smallest 2^a 3^b 5^c 7^d >= n: such sizes avoid FFTW's slow paths (measured 4x here)."""
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _fourier_resample(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Band-limited resampling of a periodic image (exact for a Nyquist-sampled scan)."""
    ny, nx = img.shape
    my, mx = shape
    F = np.fft.fftshift(np.fft.fft2(img))
    out = np.zeros((my, mx), dtype=complex)
    cy, cx = min(ny, my), min(nx, mx)
    sy0, sx0 = ny // 2 - cy // 2, nx // 2 - cx // 2
    dy0, dx0 = my // 2 - cy // 2, mx // 2 - cx // 2
    out[dy0:dy0 + cy, dx0:dx0 + cx] = F[sy0:sy0 + cy, sx0:sx0 + cx]
    return np.fft.ifft2(np.fft.ifftshift(out)).real * (my * mx) / (ny * nx)


class Simulator:
    """Simulates repeat units; results are cached on disk by a hash of everything that shapes them."""

    def __init__(self, microscope: Microscope | None = None, config: SimulationConfig | None = None,
                 cache_dir: Path | str | None = None):
        self.microscope = microscope or Microscope()
        self.config = config or SimulationConfig()
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.sampling = self.config.sampling or 0.98 * required_sampling(self.microscope.haadf[1], self.microscope.energy)
        limit = max_detector_angle(self.sampling, self.microscope.energy)
        if self.microscope.haadf[1] > limit + 1e-6:
            raise ValueError(
                f"HAADF outer angle {self.microscope.haadf[1]:g} mrad exceeds the {limit:.0f} mrad that a potential "
                f"sampling of {self.sampling:g} Å can represent (abTEM would silently clip it); use sampling <= "
                f"{required_sampling(self.microscope.haadf[1], self.microscope.energy):.4f} Å or a smaller outer angle")

    def key(self, atoms: Atoms) -> str:
        payload = json.dumps({"m": asdict(self.microscope), "c": self.config.cache_fields(), "s": self.sampling,
                              "cell": np.round(atoms.cell.array, 4).tolist(),
                              "pos": np.round(atoms.positions, 4).tolist(), "z": atoms.numbers.tolist()},
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:20]

    def simulate(self, structure, zone_axis, thickness: float | None = None) -> RepeatImage:
        """``structure``: a pymatgen Structure (e.g. ``Entry.structure``); ``zone_axis``: [u, v, w]."""
        atoms, columns, meta = _described(structure, zone_axis)
        return self.simulate_atoms(atoms, columns, thickness, meta)

    def simulate_atoms(self, atoms: Atoms, columns: list[Column], thickness: float | None = None,
                       meta: dict | None = None) -> RepeatImage:
        cfg = self.config
        Lz = atoms.cell[2, 2]
        nz = _repeats(atoms, thickness or cfg.thickness)
        # the convolution image is linear in thickness: one cached repeat serves every thickness
        n_sim = nz if cfg.method == "multislice" else 1
        out = self._cached(atoms, columns, n_sim, meta)
        level = cfg.convolution_saturation if cfg.method == "convolution" else None
        if n_sim != nz or level is not None:
            scaled = {k: v * (nz / n_sim) for k, v in out.signals.items()}
            if level is not None:
                scaled = {k: saturate(v, level, SATURATION_FIT["sharpness"]) for k, v in scaled.items()}
            out = RepeatImage(scaled, out.cell, nz * Lz, out.columns, out.method,
                              out.meta | {"repeats_along_beam": nz} | ({"saturation": level} if level else {}))
        return out

    def thickness_series(self, structure, zone_axis, thicknesses) -> list[RepeatImage]:
        """One image per thickness (Å, any order), for fitting a specimen's thickness. Multislice runs once,
        to the largest, and reads the others off exit planes on the way, so a series costs about what its
        thickest member does. Thicknesses are rounded to whole repeats, as in ``simulate``."""
        atoms, columns, meta = _described(structure, zone_axis)
        if self.config.method != "multislice":
            return [self.simulate_atoms(atoms, columns, float(t), meta) for t in thicknesses]
        Lz = atoms.cell[2, 2]
        nzs = [_repeats(atoms, float(t)) for t in thicknesses]
        nz = max(nzs)
        wanted = sorted(set(nzs))
        paths = None
        if self.cache_dir:
            # the thickest is the plain simulation of nz repeats: share its file with ``simulate``
            paths = {k: self._cache_path(atoms, nz, None if k == nz else k) for k in wanted}
            if all(p.exists() for p in paths.values()):
                images = {k: RepeatImage.load(p) for k, p in paths.items()}
                return [images[k] for k in nzs]
        meta = self._provenance(meta, nz)
        images = {}
        for k, signals in zip(wanted, self._multislice(atoms, nz, wanted)):
            images[k] = RepeatImage(signals, (float(atoms.cell[0, 0]), float(atoms.cell[1, 1])), k * Lz, columns,
                                    "multislice", meta | {"repeats_along_beam": k, "exit_plane_of": nz})
            if paths:
                self._save(images[k], paths[k])
        return [images[k] for k in nzs]

    def _cache_path(self, atoms: Atoms, nz: int, exit_repeats: int | None = None) -> Path:
        """Where the run of ``nz`` repeats is cached, or its exit plane after ``exit_repeats``."""
        plane = "" if exit_repeats is None else f"@{exit_repeats}"
        return self.cache_dir / f"{self.key(atoms)}-{nz}{plane}.npz"

    def _provenance(self, meta: dict | None, nz: int) -> dict:
        return dict(meta or {}) | {"microscope": asdict(self.microscope), "potential_sampling": self.sampling,
                                   "repeats_along_beam": nz}

    @staticmethod
    def _save(image: RepeatImage, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # a name of this process's own: parallel jobs sharing the cache may write the same entry at once
        tmp = path.with_name(f"{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.npz")
        image.save(tmp)
        os.replace(tmp, path)

    def _cached(self, atoms: Atoms, columns: list[Column], nz: int, meta: dict | None) -> RepeatImage:
        path = None
        if self.cache_dir:
            path = self._cache_path(atoms, nz)
            if path.exists():
                return RepeatImage.load(path)
        meta = self._provenance(meta, nz)
        if self.config.method == "multislice":
            signals = self._multislice(atoms, nz)
        else:
            signals = {"haadf": self._convolution(atoms, nz)}
        out = RepeatImage(signals, (float(atoms.cell[0, 0]), float(atoms.cell[1, 1])), nz * atoms.cell[2, 2],
                          columns, self.config.method, meta)
        if path:
            self._save(out, path)
        return out

    def _output_shape(self, atoms: Atoms) -> tuple[int, int]:
        Lx, Ly = atoms.cell[0, 0], atoms.cell[1, 1]
        s = self.config.output_sampling
        return int(np.ceil(Ly / s)), int(np.ceil(Lx / s))

    def slices_per_repeat(self, atoms: Atoms) -> int:
        """Multislice cuts every repeat along the beam into this many equal slices (≤ ``slice_thickness``), so a
        slice boundary falls on every repeat's boundary: an exit plane reads off whole repeats, and no slice
        lumps two atomic layers that even slicing of the whole thickness would (bench/slicing.py)."""
        return max(1, int(np.ceil(atoms.cell[2, 2] / self.config.slice_thickness - 1e-9)))

    def _potential(self, atoms: Atoms, reps: tuple[int, int, int], gpts=None, exit_planes=None,
                   repeat_slices: bool = False, exact: bool = False):
        import abtem

        slice_thickness = self.config.slice_thickness
        if repeat_slices:
            m = self.slices_per_repeat(atoms)
            slice_thickness = (atoms.cell[2, 2] / m,) * (m * reps[2])
        big = atoms * reps
        if self.config.frozen_phonons > 0:
            big = abtem.FrozenPhonons(big, num_configs=self.config.frozen_phonons,
                                      sigmas=self.config.phonon_sigma, seed=self.config.seed)
        if gpts is None:
            cell = atoms.cell.array.diagonal()[:2] * reps[:2]
            gpts = tuple(_fft_friendly(int(np.ceil(c / self.sampling))) for c in cell)
        integrator = None
        if exact:
            from data.projection import ExactPhaseProjectionIntegrals

            integrator = ExactPhaseProjectionIntegrals(parametrization="lobato")
        return abtem.Potential(big, gpts=gpts, slice_thickness=slice_thickness, projection="infinite",
                               parametrization="lobato", exit_planes=exit_planes, integrator=integrator)

    def _multislice(self, atoms: Atoms, nz: int, exit_repeats: list[int] | None = None):
        """The signals after ``nz`` repeats; with ``exit_repeats`` (ascending, the last ``nz``), a list of them,
        one per exit plane, after that many repeats."""
        import abtem

        mic, cfg = self.microscope, self.config
        Lx, Ly = atoms.cell[0, 0], atoms.cell[1, 1]
        reps = (int(np.ceil(cfg.min_lateral_extent / Lx)), int(np.ceil(cfg.min_lateral_extent / Ly)), nz)
        per_repeat = self.slices_per_repeat(atoms)
        planes = None if exit_repeats is None else tuple(k * per_repeat - 1 for k in exit_repeats)
        step = cfg.scan_sampling or 0.9 * abtem.transfer.nyquist_sampling(mic.semiangle, mic.energy)
        gpts = (int(np.ceil(Lx / step)), int(np.ceil(Ly / step)))
        scan = abtem.GridScan(start=(0, 0), end=(Lx, Ly), gpts=gpts, endpoint=False)
        detectors = {"haadf": abtem.AnnularDetector(*mic.haadf)}
        if "abf" in cfg.signals:
            detectors["abf"] = abtem.AnnularDetector(*mic.abf)
        if "idpc" in cfg.signals:
            detectors["idpc"] = abtem.SegmentedDetector(1, 4, *mic.dpc)
        names = [k for k in detectors if k in cfg.signals or k == "haadf"]
        with abtem.config.set({"device": cfg.device}):  # potential, probe and waves all on that device
            potential = self._potential(atoms, reps, exit_planes=planes, repeat_slices=True,
                                        exact=cfg.projection == "exact")
            probe = mic.probe()
            probe.grid.match(potential)
            measurements = probe.scan(potential, scan=scan, detectors=[detectors[k] for k in names])
            if not isinstance(measurements, list):
                measurements = abtem.array.ComputableList([measurements])
            results = measurements.compute(progress_bar=False)  # one multislice pass for all detectors
            if cfg.device == "gpu":
                results = [m.to_cpu() for m in results]
        out = {}
        shape = self._output_shape(atoms)
        for name, m in zip(names, results):
            if name == "idpc":
                # quadrant bins start at +x and run counter-clockwise: x = (0,3) - (1,2), y = (0,1) - (2,3)
                m = m.differentials(direction_1=((1, 2), (0, 3)), direction_2=((2, 3), (0, 1))).integrate_gradient()
            arr = np.asarray(m.array, dtype=np.float64)
            kinds = [type(a).__name__ for a in m.axes_metadata]
            if planes is not None:  # exit planes first, then average what else leads (frozen phonons)
                # abTEM drops the thickness axis when there is one plane only
                arr = np.moveaxis(arr, kinds.index("ThicknessAxis"), 0) if "ThicknessAxis" in kinds else arr[None]
                while arr.ndim > 3:
                    arr = arr.mean(1)
                out[name] = [_fourier_resample(a.T, shape) for a in arr]
                continue
            while arr.ndim > 2:  # frozen-phonon ensemble
                arr = arr.mean(0)
            out[name] = _fourier_resample(arr.T, shape)
        if planes is None:
            return out
        return [{k: v[i] for k, v in out.items()} for i in range(len(planes))]

    def _projected(self, atoms: Atoms) -> np.ndarray:
        """abTEM's projected potential of one repeat of ``atoms`` on the output grid."""
        ny, nx = self._output_shape(atoms)
        potential = self._potential(atoms, (1, 1, 1), gpts=(nx, ny))
        return np.asarray(potential.build(lazy=False).project().array, dtype=np.float64).T

    def projected_potential(self, atoms: Atoms) -> np.ndarray:
        """abTEM's projected potential of one repeat per Å of thickness, on the output grid."""
        return self._projected(atoms) / atoms.cell[2, 2]

    def atom_potentials(self, atoms: Atoms) -> dict[int, np.ndarray]:
        """Projected potential of one atom of each element, centred on pixel (0, 0) of the output grid."""
        return {z: self._projected(Atoms(numbers=[z], positions=[[0.0, 0.0, atoms.cell[2, 2] / 2]],
                                         cell=atoms.cell, pbc=True))
                for z in sorted(set(int(n) for n in atoms.numbers))}

    def incoherent_object(self, atoms: Atoms, parts=None, exponent: float | None = None,
                          blur: float | None = None, weights: np.ndarray | None = None) -> np.ndarray:
        """The object the probe is convolved with, per Å of thickness. ``parts`` (the cell's
        ``projected_potential`` or its ``atom_potentials``) and the constants may be passed to fit them;
        ``weights`` (one per atom, per-atom object only) to try models of what else sets an atom's share
        (bench/depth_object.py)."""
        from data.scan import blur_periodic  # data.scan imports this module

        cfg = self.config
        exponent = cfg.convolution_exponent if exponent is None else exponent
        blur = cfg.convolution_blur if blur is None else blur
        cell = (float(atoms.cell[0, 0]), float(atoms.cell[1, 1]))
        if cfg.convolution_object == "summed":
            vproj = self.projected_potential(atoms) if parts is None else parts
            return np.clip(blur_periodic(vproj, _sampling(vproj, cell), blur), 0, None) ** exponent
        kernels = self.atom_potentials(atoms) if parts is None else parts
        ny, nx = next(iter(kernels.values())).shape
        ky = np.fft.fftfreq(ny, cell[1] / ny)[:, None]
        kx = np.fft.fftfreq(nx, cell[0] / nx)[None, :]
        total = np.zeros((ny, nx), complex)
        w = np.ones(len(atoms)) if weights is None else np.asarray(weights, float)
        # a slab's atoms each integrate to their isolated cross-section (data.cross_sections): the image of
        # one repeat (thickness Lz) then sums to that, scale included
        slab = cfg.slab_object == "cross_section" and is_slab(atoms)
        for z, v in kernels.items():
            kernel = np.clip(blur_periodic(v, _sampling(v, cell), blur), 0, None) ** exponent
            here = atoms.numbers == z
            if slab:
                from data.cross_sections import cross_section

                section = cross_section(self.microscope, z, self.sampling, cfg.slice_thickness)
                w = np.where(here, w * section / (cfg.convolution_scale * kernel.mean() * cell[0] * cell[1]), w)
            xy = atoms.positions[here][:, :2]
            # structure factor of this element's sites (places the kernel at every atom, sub-pixel
            # exact); the phase factorises in x and y, so it is one (ny, n) @ (n, nx) product
            sites = (np.exp(-2j * np.pi * ky * xy[:, 1]) * w[here]) @ np.exp(-2j * np.pi * xy[:, 0, None] * kx)
            total += np.fft.fft2(kernel) * sites
        return np.clip(np.fft.ifft2(total).real, 0, None) / atoms.cell[2, 2]

    def probe_psf(self, atoms: Atoms) -> np.ndarray:
        """abTEM's probe intensity folded onto the periodic cell (unit sum).

        Built on a grid m times the cell at the same sampling and folded back: exactly the
        periodic sum of the non-periodic probe, with no wrap-around interference.
        """
        Lx, Ly = atoms.cell[0, 0], atoms.cell[1, 1]
        ny, nx = self._output_shape(atoms)
        my, mx = (int(np.ceil(self.config.min_lateral_extent * 2 / L)) for L in (Ly, Lx))
        probe = self.microscope.probe(gpts=(mx * nx, my * ny), extent=(mx * Lx, my * Ly))
        intensity = np.asarray(probe.build(scan=np.zeros((1, 2)), lazy=False).intensity().array,
                               dtype=np.float64).reshape(mx * nx, my * ny).T
        return intensity.reshape(my, ny, mx, nx).sum(axis=(0, 2)) / intensity.sum()

    def convolve(self, obj: np.ndarray, psf: np.ndarray, thickness: float) -> np.ndarray:
        """Incoherent image: probe ⊗ object, scaled to a detector fraction."""
        img = np.fft.ifft2(np.fft.fft2(obj) * np.fft.fft2(psf)).real
        return self.config.convolution_scale * thickness * np.clip(img, 0, None)

    def _convolution(self, atoms: Atoms, nz: int) -> np.ndarray:
        return self.convolve(self.incoherent_object(atoms), self.probe_psf(atoms), nz * atoms.cell[2, 2])


def _described(structure, zone_axis) -> tuple[Atoms, list[Column], dict]:
    """The orthogonal repeat of ``structure`` along ``zone_axis``, its columns, and what a RepeatImage records of it."""
    za, atoms, columns = describe(structure, tuple(zone_axis))
    return atoms, columns, {"zone_axis": za.to_dict(), "formula": structure.composition.reduced_formula}


# A monolayer's repeat along the beam is one layer in ``data.prototypes.VACUUM`` Å of cell. Stacked to a
# thickness, it would image N identical layers 20 Å apart: no specimen anyone has, with N times a monolayer's
# signal (the pipeline benchmark's "monolayers" were such stacks until 2026-11-27). Over the library, the
# widest empty gap along the beam is 4.3 Å in a bulk zone-axis repeat and at least 14.7 Å in a monolayer's.
SLAB_GAP = 8.0  # Å


def is_slab(atoms: Atoms) -> bool:
    """Whether the repeat along the beam is a slab in vacuum (a monolayer), not a piece of a bulk crystal."""
    Lz = atoms.cell[2, 2]
    z = np.sort(np.mod(atoms.positions[:, 2], Lz))
    return bool(len(z)) and float(np.diff(np.r_[z, z[0] + Lz]).max()) >= SLAB_GAP


def _repeats(atoms: Atoms, thickness: float) -> int:
    """Whole repeats along the beam nearest ``thickness`` (Å), at least one; a slab is one layer whatever the
    thickness asked."""
    return 1 if is_slab(atoms) else max(1, int(round(thickness / atoms.cell[2, 2])))


def _sampling(img: np.ndarray, cell: tuple[float, float]) -> tuple[float, float]:
    return cell[0] / img.shape[1], cell[1] / img.shape[0]
