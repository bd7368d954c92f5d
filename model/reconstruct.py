"""From a fitted in-plane metric to a 3-D structure: the template's lattice under its crystal system.

The alignment's affine maps the template's two in-plane lattice vectors (known in the template's
conventional basis, since we know the zone axis) to the image. With a calibrated pixel size those
two image vectors are fitted by the crystal system's free parameters (cubic a; tetragonal/hexagonal
a, c; orthorhombic a, b, c; monoclinic/triclinic also the free angles), a rotation, and the scan's
distortion (shear and slow-axis stretch: the fast axis is exact). With an estimated pixel size only
their rotation-free metric (two lengths, one angle) is fitted. What this projection cannot see
(c of a tetragonal crystal viewed along [001]) keeps its template ratio to what it can see, and is
recorded as ``carried``. The structure is rebuilt with the template's fractional coordinates in its
conventional setting, which keeps the Wyckoff positions and so the space group.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from scipy.optimize import least_squares

from data.zone_axes import oriented_cell, orthogonal_cell
from model.lattice import Alignment, orthogonalisation_strain

PARAMS = ("a", "b", "c", "alpha", "beta", "gamma")
SYMPREC = 0.01  # Å; the rebuilt cell is exact, so this only absorbs rounding
# 1σ of a material's axial ratios (relative) and cell angles (radians) about its template's: what decides
# the parameters a projection cannot see (they keep the template's ratio), and, with DRIFT_SIGMA, how a
# two-length projection shares what it cannot tell apart (see DRIFT_SIGMA). A ratio the data measure is
# theirs wherever they weigh 1/σ_data ≫ 1/this.
RATIO_SIGMA = 0.01
# the same for the no-symmetry ablation, where every length and angle is the data's: next to no pull
FREE_RATIO_SIGMA = 1e3
# 1σ of each scan-distortion component (shear, slow-axis stretch) the fit assumes a priori. A STEM
# image is exact along its fast-scan axis (image x) and drifts along its slow axis: a crystal's in-plane
# lattice plus rotation plus these two distortions are four unknowns for the affine's four numbers, so
# a one-parameter projection (cubic, a hexagonal [001]) is measured free of drift, and the priors only
# decide how a two-parameter projection shares a distortion between drift and its c/a: in proportion
# to their variances, RATIO_SIGMA² : DRIFT_SIGMA², a tenth to the cell. (A near-free ratio, as until
# 2026-12-06, put all of it into the cell: the right NiS [320] template needed 4.5 % of strain on a
# benchmark image, 0.5 % with the ratio prior, and its lattice prior had refused it.) The data engine
# draws up to 0.004 Å per line (3-7 % at 0.06-0.15 Å pixels).
DRIFT_SIGMA = 0.03


@dataclass
class BeamFrame:
    """How ``data.zone_axes.describe`` places a structure along [uvw]: in-plane position
    S @ (R @ cartesian + t)[:2], S the orthogonalisation strain (identity for most axes)."""
    R: np.ndarray  # (3, 3) rotation from the structure's Cartesian frame
    t: np.ndarray  # (3,) translation
    S: np.ndarray  # (2, 2) see ``model.lattice.orthogonalisation_strain``
    inplane: np.ndarray  # (2, 3) the oriented cell's a, b in fractional coordinates of the structure's lattice
    vectors: np.ndarray  # (2, 2) rows: those vectors in ``describe``'s frame, Å

    def project(self, frac: np.ndarray, lattice: Lattice) -> np.ndarray:
        """In-plane (x, y) of fractional positions in ``describe``'s frame."""
        return (np.atleast_2d(frac) @ lattice.matrix @ self.R.T + self.t)[:, :2] @ self.S.T


def beam_frame(structure: Structure, uvw, tol: float = 1e-3) -> BeamFrame:
    """Recover the rotation and origin ``oriented_cell`` used, by matching its atoms to ours, and
    the strain ``orthogonal_cell`` adds.

    Lattice vectors ⊥ the beam with the oriented a's length are the candidates for a (symmetry
    equivalents among them give frames that differ by a crystal symmetry; only one also puts
    every atom where ``oriented_cell`` put it, translations included).
    """
    atoms = oriented_cell(structure, uvw)
    cell = atoms.cell.array
    L = structure.lattice.matrix
    d = np.asarray(uvw, float) @ L
    ez = d / np.linalg.norm(d)
    prim = structure.get_primitive_structure().lattice.matrix
    n = np.array(list(itertools.product(range(-6, 7), repeat=3)))
    cart = n @ prim
    la = np.linalg.norm(cell[0])
    ok = (np.abs(cart @ ez) < 1e-6 * la) & (np.abs(np.linalg.norm(cart, axis=1) - la) < 1e-5 * la)
    oinv = np.linalg.inv(cell)
    species = np.array(atoms.get_chemical_symbols())
    ours = np.array([str(s.specie) for s in structure])
    for a in cart[ok]:
        ex = a / np.linalg.norm(a)
        R = np.array([ex, np.cross(ez, ex), ez])
        rot = structure.cart_coords @ R.T
        for k in np.flatnonzero(ours == species[0]):
            t = atoms.positions[0] - rot[k]
            f = (rot + t) @ oinv
            # every one of our atoms must sit on an oriented atom of its species (mod the oriented cell)
            hit = True
            for p, sp in zip(f, ours):
                q = atoms.get_scaled_positions()[species == sp] - p
                q -= np.round(q)
                if np.linalg.norm(q @ cell, axis=1).min() > tol:
                    hit = False
                    break
            if hit:
                inplane = np.linalg.solve(L.T, (cell[:2] @ R).T).T  # oriented → Cartesian → fractional
                S = orthogonalisation_strain(atoms, orthogonal_cell(atoms))
                return BeamFrame(R, t, S, inplane, cell[:2, :2] @ S.T)
    raise ValueError(f"could not recover the oriented frame of {structure.composition.reduced_formula} "
                     f"along {list(uvw)}")


@dataclass
class Reconstruction:
    structure: Structure
    template_id: str
    uvw: tuple[int, int, int]
    lattice: dict  # a, b, c (Å), alpha, beta, gamma (deg) of the conventional cell
    measured: list  # parameters fitted to the image ("c/a" style ratios when the pixel size was estimated)
    carried: list  # free parameters not seen in this projection: template ratio to the measured ones kept
    fixed: list  # parameters held at the template value in Å (a monolayer's c: vacuum)
    sigma: dict  # 1σ of measured parameters (statistical, from the column positions)
    crystal_system: str
    spacegroup_template: dict  # {"symbol", "number"}
    spacegroup: dict
    pixel_size: float | None
    pixel_size_sigma: float
    pixel_size_source: str  # "given" | "estimated"
    alignment: Alignment
    template_lattice: dict = field(default_factory=dict)
    strain_residual: float = 0.0  # rms relative misfit of the observed in-plane vectors (metric) the fit leaves
    # image-frame scan distortion fitted beside the lattice (pixel size given): image x = fast scan,
    # [[1, shear], [0, 1 + stretch]] maps the undistorted crystal frame onto the image
    scan_distortion: dict = field(default_factory=lambda: {"shear": 0.0, "stretch": 0.0})
    # template frame -> reconstruction frame (both ``data.zone_axes.describe`` frames): u' = F u + f
    frame_affine: np.ndarray = field(default_factory=lambda: np.eye(2))
    frame_shift: np.ndarray = field(default_factory=lambda: np.zeros(2))
    notes: list = field(default_factory=list)

    @property
    def symmetry_kept(self) -> bool:
        return self.spacegroup["number"] == self.spacegroup_template["number"]

    @property
    def lengths_measured(self) -> int:
        """How many of a, b, c this projection measured (two or more share a distortion with the drift)."""
        return sum(p in ("a", "b", "c") for p in self.measured)

    @property
    def template_strain(self) -> float:
        """Largest relative change of a free lattice length (angles: in radians) from the template's own
        lattice. A material's lattice parameters are known to a fraction of a per cent, so a candidate
        that needs several per cent to fit the image is probably another material. With an estimated
        pixel size the overall scale is not data, so only the shape counts."""
        if not self.template_lattice:
            return 0.0
        lengths = [p for p in ("a", "b", "c") if p not in self.fixed]
        r = np.array([self.lattice[p] / self.template_lattice[p] for p in lengths])
        if self.pixel_size_source != "given" and len(r):
            r = r / np.exp(np.mean(np.log(r)))
        d_ang = [np.radians(abs(self.lattice[p] - self.template_lattice[p])) for p in ("alpha", "beta", "gamma")]
        return float(max([*np.abs(r - 1), *d_ang], default=0.0))

    def to_dict(self) -> dict:
        r = lambda a, n=6: np.round(np.asarray(a, float), n).tolist()  # noqa: E731
        return {"template_id": self.template_id, "uvw": [int(v) for v in self.uvw],
                "formula": self.structure.composition.reduced_formula,
                "lattice": {k: round(float(v), 5) for k, v in self.lattice.items()},
                "template_lattice": {k: round(float(v), 5) for k, v in self.template_lattice.items()},
                "measured": list(self.measured), "carried": list(self.carried), "fixed": list(self.fixed),
                "sigma": {k: round(float(v), 6) for k, v in self.sigma.items()}, "crystal_system": self.crystal_system,
                "spacegroup_template": self.spacegroup_template, "spacegroup": self.spacegroup,
                "symmetry_kept": self.symmetry_kept, "template_strain": round(self.template_strain, 6),
                "scan_distortion": {k: round(float(v), 6) for k, v in self.scan_distortion.items()},
                "pixel_size": None if self.pixel_size is None else round(self.pixel_size, 7),
                "pixel_size_sigma": round(self.pixel_size_sigma, 7), "pixel_size_source": self.pixel_size_source,
                "strain_residual": round(self.strain_residual, 7), "frame_affine": r(self.frame_affine),
                "frame_shift": r(self.frame_shift), "notes": list(self.notes),
                "alignment": self.alignment.to_dict(), "structure": self.structure.as_dict()}


def _spacegroup(s: Structure) -> dict:
    sga = SpacegroupAnalyzer(s, symprec=SYMPREC)
    return {"symbol": sga.get_space_group_symbol(), "number": int(sga.get_space_group_number())}


def _groups(lat: Lattice, system: str, monolayer: bool) -> tuple[list, list, list]:
    """Free length groups, free angle groups (indices into a,b,c / alpha,beta,gamma) and fixed names."""
    abc, ang = np.array(lat.abc), np.array(lat.angles)
    eq = lambda x, y: abs(x - y) < 1e-4 * max(abs(x), 1)  # noqa: E731
    if system == "cubic":
        lengths, angles = [[0, 1, 2]], []
    elif system in ("tetragonal", "hexagonal", "trigonal"):
        if system == "trigonal" and eq(abc[0], abc[2]) and eq(abc[1], abc[2]) and not eq(ang[0], 90):
            lengths, angles = [[0, 1, 2]], [[0, 1, 2]]  # rhombohedral setting
        else:
            pair = next(([i, j] for i, j in ((0, 1), (0, 2), (1, 2)) if eq(abc[i], abc[j])), [0, 1])
            lengths, angles = [pair, [k for k in range(3) if k not in pair]], []
    elif system == "orthorhombic":
        lengths, angles = [[0], [1], [2]], []
    elif system == "monoclinic":
        lengths, angles = [[0], [1], [2]], [[k] for k in range(3) if not eq(ang[k], 90)]
    else:
        lengths, angles = [[0], [1], [2]], [[0], [1], [2]]
    fixed = []
    if monolayer:
        # the layer normal: the cell vector along the other two's cross product (c in the library)
        m = lat.matrix
        normal = next((k for k in (2, 0, 1) if abs(np.dot(np.cross(*np.delete(m, k, 0)), m[k]))
                       > 0.999 * np.linalg.norm(np.cross(*np.delete(m, k, 0))) * np.linalg.norm(m[k])), 2)
        lengths = [[i for i in g if i != normal] for g in lengths]
        lengths = [g for g in lengths if g]
        angles = []  # the layer stays flat over its normal
        fixed = [PARAMS[normal]]
    return lengths, angles, fixed


def _lattice_from(x: np.ndarray, base: Lattice, lengths: list, angles: list) -> Lattice:
    abc, ang = list(base.abc), list(base.angles)
    for v, g in zip(x[:len(lengths)], lengths):
        for i in g:
            abc[i] = float(np.exp(v))
    for v, g in zip(x[len(lengths):], angles):
        for i in g:
            ang[i] = float(v)
    return Lattice.from_parameters(*abc, *ang)


def _inplane_metric(lat: Lattice, inplane: np.ndarray, uvw) -> np.ndarray:
    """|v1|, |v2|, cos(v1, v2) of the two in-plane lattice vectors projected ⊥ the beam."""
    d = np.asarray(uvw, float) @ lat.matrix
    d /= np.linalg.norm(d)
    v = inplane @ lat.matrix
    v = v - np.outer(v @ d, d)
    l1, l2 = np.linalg.norm(v, axis=1)
    return np.array([l1, l2, v[0] @ v[1] / (l1 * l2)])


def _inplane_vectors(lat: Lattice, inplane: np.ndarray, uvw, handed: float) -> np.ndarray:
    """(2, 2) rows: the two in-plane lattice vectors projected ⊥ the beam, in a 2-D frame with v1 on x
    and the sign of v2's y given by ``handed`` (that of the template frame's vectors)."""
    l1, l2, c = _inplane_metric(lat, inplane, uvw)
    return np.array([[l1, 0.0], [l2 * c, handed * l2 * np.sqrt(max(1.0 - c * c, 0.0))]])


def _scanned(P: np.ndarray, theta: float, shear: float, stretch: float, mirror: float) -> np.ndarray:
    """Rows of ``P`` (crystal frame) as a drifting scan images them: [[1, shear], [0, 1 + stretch]] ·
    R(θ) · diag(1, mirror)."""
    c, s = np.cos(theta), np.sin(theta)
    D = np.array([[1.0, shear], [0.0, 1.0 + stretch]]) @ np.array([[c, -s], [s, c]]) @ np.diag([1.0, mirror])
    return P @ D.T


def _jacobian(f, x: np.ndarray, steps) -> np.ndarray:
    """Central differences of the vector function ``f`` at ``x``, one step per parameter."""
    J = np.empty((len(f(x)), len(x)))
    for i, h in enumerate(np.broadcast_to(steps, len(x))):
        e = np.zeros(len(x))
        e[i] = h
        J[:, i] = (f(x + e) - f(x - e)) / (2 * h)
    return J


def _observed(alignment: Alignment, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The in-plane metric the fitted affine gives the template vectors, and its covariance."""
    def metric(a):
        w = T @ a.reshape(2, 2).T
        l1, l2 = np.linalg.norm(w, axis=1)
        return np.array([l1, l2, w[0] @ w[1] / (l1 * l2)])

    a0 = alignment.affine.ravel()
    J = _jacobian(metric, a0, 1e-7)
    return metric(a0), J @ alignment.affine_cov @ J.T


def reconstruct(entry, uvw, alignment: Alignment, symmetry: bool = True) -> Reconstruction:
    """The template ``entry``'s structure with the lattice the aligned columns measure.

    ``symmetry=False`` is the ablation: every length and angle is free (triclinic), so the measured
    metric, drift and noise included, decides the cell and the space group may drop."""
    uvw = tuple(int(v) for v in uvw)
    s0 = entry.structure
    lat0 = s0.lattice
    monolayer = entry.kind == "monolayer"
    system = SpacegroupAnalyzer(s0, symprec=SYMPREC).get_crystal_system() if symmetry else "triclinic"
    ratio_sigma = RATIO_SIGMA if symmetry else FREE_RATIO_SIGMA
    frame0 = beam_frame(s0, uvw)
    y_obs, cov = _observed(alignment, frame0.vectors)
    # σ floors: a perfect fit must not make the weights infinite
    sig = np.sqrt(np.maximum(np.diag(cov), [(1e-5 * y_obs[0]) ** 2, (1e-5 * y_obs[1]) ** 2, 1e-10]))
    lengths, angles, fixed = _groups(lat0, system, monolayer)
    abc0, ang0 = np.array(lat0.abc), np.array(lat0.angles)
    y0 = _inplane_metric(lat0, frame0.inplane, uvw)
    scale = float(np.sqrt(y_obs[0] * y_obs[1] / (y0[0] * y0[1])))
    x0 = np.array([np.log(abc0[g[0]] * scale) for g in lengths] + [ang0[g[0]] for g in angles])
    x_ref = np.array([np.log(abc0[g[0]]) for g in lengths] + [ang0[g[0]] for g in angles])
    nl, nx = len(lengths), len(x0)
    estimated = alignment.pixel_size_source == "estimated"
    # With a calibrated pixel the image-frame vectors are data, and the scan distortion is fitted beside
    # the lattice; with an estimated one only the rotation-free metric (the scale is the template's).
    T = frame0.vectors
    W_obs = T @ alignment.affine.T  # rows: the template vectors as the image shows them
    Jw = np.zeros((4, 4))  # d W_obs.ravel() / d affine.ravel()
    for k, i, j in itertools.product(range(2), range(2), range(2)):
        Jw[2 * k + i, 2 * i + j] = T[k, j]
    sig_w = np.sqrt(np.maximum(np.diag(Jw @ alignment.affine_cov @ Jw.T), (1e-5 * np.abs(W_obs).max()) ** 2))
    handed = float(np.sign(T[0, 0] * T[1, 1] - T[0, 1] * T[1, 0]))
    mirror = float(np.sign(np.linalg.det(alignment.affine)))

    def lattice(x):
        return _lattice_from(x[:nx], lat0, lengths, angles)

    def data(x):
        if estimated:
            return (_inplane_metric(lattice(x), frame0.inplane, uvw) - y_obs) / sig
        P = _inplane_vectors(lattice(x), frame0.inplane, uvw, handed)
        return ((_scanned(P, *x[nx:], mirror) - W_obs) / sig_w.reshape(2, 2)).ravel()

    def prior(x):
        # template ratios (differences of log lengths) and angles: decide what the data cannot, beside the drift
        r = [(x[i] - x[j]) - (x_ref[i] - x_ref[j]) for i, j in itertools.combinations(range(nl), 2)]
        r += list(np.radians(x[nl:nx] - x_ref[nl:]))
        return np.concatenate([np.array(r) / ratio_sigma, x[nx + 1:] / DRIFT_SIGMA])

    if not estimated:  # start at the rotation that carries the first template vector onto its image
        P0 = _inplane_vectors(lattice(x0), frame0.inplane, uvw, handed) @ np.diag([1.0, mirror])
        theta0 = np.arctan2(W_obs[0, 1], W_obs[0, 0]) - np.arctan2(P0[0, 1], P0[0, 0])
        x0 = np.concatenate([x0, [theta0, 0.0, 0.0]])
    sol = least_squares(lambda x: np.concatenate([data(x), prior(x)]), x0, x_scale="jac", xtol=1e-14, ftol=1e-14,
                        gtol=1e-14)
    x_all = sol.x
    drift = {"shear": 0.0, "stretch": 0.0} if estimated else {"shear": float(x_all[nx + 1]),
                                                               "stretch": float(x_all[nx + 2])}
    x = x_all[:nx]

    def data_x(xl):  # the data as a function of the lattice alone, the nuisances where the fit left them
        return data(np.concatenate([xl, x_all[nx:]]))
    # which free parameters the projection measures: those orthogonal to the data Jacobian's null space
    steps = [1e-6] * nl + [1e-4] * (nx - nl) + [1e-6] * (len(x_all) - nx)  # log lengths, degrees, nuisances
    Jd = _jacobian(data_x, x, steps[:nx])
    _, sv, Vt = np.linalg.svd(Jd, full_matrices=True)
    rank = int((sv > 1e-6 * max(sv.max(), 1e-30)).sum())
    null = Vt[rank:]
    if estimated:  # the absolute scale came from the template: it is not a measurement
        sdir = np.array([1.0] * nl + [0.0] * (len(x) - nl)) / np.sqrt(nl)
        null = np.linalg.qr(np.vstack([null, sdir]).T)[0].T if len(null) else sdir[None]
    names = [PARAMS[g[0]] for g in lengths] + [PARAMS[3 + g[0]] for g in angles]

    def seen(v):
        return not len(null) or np.linalg.norm(null @ v) < 1e-3 * np.linalg.norm(v)

    measured, carried = [], []
    for i, name in enumerate(names):
        e = np.eye(len(x))[i]
        if not estimated or i >= nl:
            (measured if seen(e) else carried).append(name)
        elif i == 0:
            carried.append("scale")  # the first length stands for the scale the template lent
        else:  # a length relative to an earlier one (c/a) may still be measured
            ref = next((j for j in range(i) if seen(e - np.eye(len(x))[j])), None)
            (measured if ref is not None else carried).append(name if ref is None else f"{name}/{names[ref]}")

    # 1σ of the measured parameters (pinv: well defined on the measured subspace); with a calibrated
    # pixel the rotation and scan distortion are fitted too, so their uncertainty is carried over
    if estimated:
        cov_x = np.linalg.pinv(Jd.T @ Jd)
    else:
        Jf = _jacobian(lambda v: np.concatenate([data(v), v[nx + 1:] / DRIFT_SIGMA]), x_all, steps)
        cov_x = np.linalg.pinv(Jf.T @ Jf)[:nx, :nx]
    new = _lattice_from(x, lat0, lengths, angles)
    values = dict(zip(PARAMS, (*new.abc, *new.angles)))
    sigma = {}
    for i, name in enumerate(names):
        if name in measured:
            sd = float(np.sqrt(max(cov_x[i, i], 0.0)))
            sigma[name] = sd * values[name] if i < nl else sd

    structure = Structure(new, s0.species, s0.frac_coords)
    frame1 = beam_frame(structure, uvw)
    # template frame -> reconstruction frame: the same fractional in-plane vectors in each
    T0 = frame0.vectors
    T1 = np.array([frame1.project(n, new)[0] - frame1.project(np.zeros(3), new)[0] for n in frame0.inplane])
    F = np.linalg.solve(T0, T1).T  # F @ t0_k = t1_k
    f = frame1.project(np.zeros(3), new)[0] - F @ frame0.project(np.zeros(3), lat0)[0]
    notes = []
    if monolayer:
        notes.append("monolayer: the cell height (vacuum) and the atoms' out-of-plane positions are kept in Å")
    if estimated:
        notes.append("pixel size estimated from the template's lattice: absolute lengths are the template's")
    if estimated:
        resid = data(x) * sig / np.array([y_obs[0], y_obs[1], 1.0])
    else:  # the vectors' misfit relative to their lengths
        resid = data(x_all) * sig_w / np.repeat(np.linalg.norm(W_obs, axis=1), 2)
    rec = Reconstruction(
        structure=structure, template_id=entry.id, uvw=uvw, lattice=values, measured=measured, carried=carried,
        fixed=fixed, sigma=sigma, crystal_system=system, spacegroup_template=_spacegroup(s0),
        spacegroup=_spacegroup(structure), pixel_size=alignment.pixel_size,
        pixel_size_sigma=alignment.pixel_size_sigma, pixel_size_source=alignment.pixel_size_source,
        alignment=alignment, template_lattice=dict(zip(PARAMS, (*lat0.abc, *lat0.angles))),
        strain_residual=float(np.sqrt(np.mean(resid ** 2))), scan_distortion=drift, frame_affine=F, frame_shift=f,
        notes=notes)
    if symmetry and not estimated and rec.lengths_measured >= 2:
        rec.notes.append(f"two lengths in the plane: their ratio and a slow-scan stretch look alike in one image, "
                         f"and the fit shares them by priors of {RATIO_SIGMA:.0%} (the template's ratio) and "
                         f"{DRIFT_SIGMA:.0%} (drift)")
    return rec


def match_truth(structure: Structure, truth: Structure, lattice: dict, matcher=None) -> dict:
    """Benchmark scores of a reconstruction against the true crystal: ``success`` under pymatgen's
    StructureMatcher (default tolerances unless ``matcher`` is given), its RMSD when it matches, and
    the mean |Δx|/x over the conventional a, b, c (``lattice``: the report's reconstructed lattice)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = matcher or StructureMatcher()
    success = bool(matcher.fit(structure, truth))
    rms = matcher.get_rms_dist(structure, truth) if success else None
    t = dict(zip("abc", truth.lattice.abc))
    return {"success": success, "rmsd": None if rms is None else float(rms[0]),
            "lattice_error": float(np.mean([abs(lattice[k] - t[k]) / t[k] for k in "abc"]))}
