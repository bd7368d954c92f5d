"""The projected 2-D lattice of detected columns, and the fit of a library template onto them.

``fit_lattice`` finds the translations that map the column set onto itself (the *positional*
lattice: columns that differ only in brightness count as equal, so SrTiO3 [001] with invisible
oxygen gives the a/√2 lattice of Sr + TiO columns). ``align_template`` then maps a template's
projected columns onto the detections with a 2x2 affine + shift, so the fitted affine carries the
in-plane metric that ``model.reconstruct`` turns into lattice parameters.

Frames: the template frame is that of ``data.zone_axes.describe`` (the simulator's repeat unit,
Å); the image frame is that of ``Columns.xy`` (pixel (0, 0) at the origin, Å or pixels).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import polar
from scipy.optimize import least_squares
from scipy.spatial import ConvexHull, cKDTree

from data.zone_axes import describe

# Columns the detector is trained to mark (``DataConfig.heatmap_min_weight``): fainter template
# columns are not expected among the detections, so they are not offered as matches either.
MIN_VISIBLE_WEIGHT = 0.12


def _cross(a, b) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def gauss_reduce(b1: np.ndarray, b2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lagrange-Gauss reduction: the two shortest vectors of the same 2-D lattice, right-handed."""
    b1, b2 = np.array(b1, float), np.array(b2, float)
    for _ in range(100):
        if b2 @ b2 < b1 @ b1:
            b1, b2 = b2, b1
        mu = round(float(b1 @ b2 / (b1 @ b1)))
        if mu == 0:
            break
        b2 = b2 - mu * b1
    if _cross(b1, b2) < 0:
        b2 = -b2
    return b1, b2


@dataclass
class Lattice2D:
    vectors: np.ndarray  # (2, 2) rows b1, b2 in the units of xy; Gauss-reduced, right-handed
    sigma: np.ndarray  # (2, 2) standard errors of the components of ``vectors``
    lengths: np.ndarray  # |b1|, |b2|
    length_sigma: np.ndarray
    angle_deg: float  # between b1 and b2
    rotation_deg: float  # direction of b1 from the image x axis, [0, 360)
    rms: float  # residual of the columns about the lattice + basis model, units of xy
    n_columns: int  # columns given
    n_used: int  # columns in the final least-squares fit (outliers and stray sites left out)
    sites: np.ndarray = field(default_factory=lambda: np.zeros((1, 2)))  # basis offsets (K, 2) from site 0
    source: str = "columns"  # "columns" | "fft" (of the denoised image) | "fft_raw" (of the image as given)
    fft_check: float | None = None  # max deviation of the FFT lattice from a sublattice of this one
    translations: np.ndarray | None = None  # (M, 2) accepted translations, shortest first (columns only)

    @property
    def area(self) -> float:
        return abs(_cross(*self.vectors))

    def to_dict(self) -> dict:
        r = lambda a, n=5: np.round(np.asarray(a, float), n).tolist()  # noqa: E731
        return {"vectors": r(self.vectors), "sigma": r(self.sigma, 6), "lengths": r(self.lengths),
                "length_sigma": r(self.length_sigma, 6), "angle_deg": round(self.angle_deg, 4),
                "rotation_deg": round(self.rotation_deg, 4),
                "rms": None if not np.isfinite(self.rms) else round(self.rms, 6), "n_columns": self.n_columns,
                "n_used": self.n_used, "sites": r(self.sites), "source": self.source,
                "fft_check": None if self.fft_check is None else round(self.fft_check, 4)}


class _Hull:
    """Inside test for the convex hull of the detections (half-plane equations: fast and exact)."""

    def __init__(self, xy: np.ndarray):
        self.eq = ConvexHull(xy).equations

    def contains(self, p: np.ndarray, margin: float = 0.0) -> np.ndarray:
        return np.all(p @ self.eq[:, :2].T + self.eq[:, 2] <= -margin, axis=1)


def _translations(xy: np.ndarray, tol: float, radius: float, min_fraction: float, n_ref: int = 12) -> list:
    """Difference vectors that carry the columns (those whose image stays inside the columns' convex
    hull) onto columns: at least ``min_fraction`` of them within ``tol``, and, within the positions'
    own precision, at least 80 % as many as the best vector does."""
    tree = cKDTree(xy)
    ref = np.argsort(np.linalg.norm(xy - np.median(xy, axis=0), axis=1))[:n_ref]
    diffs = []
    for i in ref:
        d = xy[tree.query_ball_point(xy[i], radius)] - xy[i]
        diffs.append(d[np.linalg.norm(d, axis=1) > tol])
    diffs = np.concatenate(diffs)
    if len(diffs) == 0:
        return []
    # cluster the difference vectors, densest first: a lattice vector recurs from every reference column
    dtree = cKDTree(diffs)
    groups = dtree.query_ball_point(diffs, tol)
    counts = np.array([len(g) for g in groups])
    taken = np.zeros(len(diffs), bool)
    centres = []
    for k in np.argsort(-counts, kind="stable"):
        if taken[k] or counts[k] < max(2, 0.3 * len(ref)):
            continue
        centres.append(diffs[groups[k]].mean(0))
        taken[groups[k]] = True
    hull = _Hull(xy)
    stats = []
    for d in centres:
        inside = hull.contains(xy + d, -1e-9)
        if inside.sum() < 3:
            continue
        dist, j = tree.query(xy[inside] + d, distance_upper_bound=tol)
        ok = np.isfinite(dist)
        if ok.mean() >= min_fraction:
            off = xy[j[ok]] - xy[inside][ok]
            d = np.median(off, axis=0)  # robust: a stray detection within tol must not pull it
            stats.append((d, inside, float(np.median(np.linalg.norm(off - d, axis=1)))))
    if not stats:
        return []
    # A true translation repeats every column as precisely as the positions are known. At that
    # precision a pseudo-translation of a nearly regular pattern (misses by a systematic tenth of
    # an Å) loses its matches, and a partial one (rutile [100]: Ti->O->Ti along a row, 2 of 3 sites)
    # keeps only its share, so both fall below the true translations' fraction.
    tol2 = min(tol, max(4 * float(np.percentile([sp for *_, sp in stats], 25)), 1e-3 * tol))
    out = []
    for d, inside, _ in stats:
        dist, j = tree.query(xy[inside] + d, distance_upper_bound=tol2)
        ok = np.isfinite(dist)
        if ok.sum() >= 3:
            out.append((np.median(xy[j[ok]] - xy[inside][ok], axis=0), float(ok.mean()), int(inside.sum())))
    # the reference fraction, discounted for few samples: a long vector tested on a dozen columns
    # can score high by luck
    best = max((f - 0.5 / np.sqrt(n) for _, f, n in out), default=0.0)
    return [d for d, f, _ in out if f >= 0.8 * best]


def _periodic_sites(xy: np.ndarray, B: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer cell index and basis-site label of every column, given lattice rows ``B``."""
    frac = np.linalg.solve(B.T, (xy - xy[0]).T).T
    red = frac - np.floor(frac)
    cart = red @ B
    images = np.array(list(itertools.product((-1, 0, 1), repeat=2))) @ B
    label = -np.ones(len(xy), int)
    seeds = []
    for i in range(len(xy)):
        if label[i] >= 0:
            continue
        d = np.linalg.norm(cart[:, None, :] + images[None] - cart[i], axis=2).min(1)
        label[(d < tol) & (label < 0)] = len(seeds)
        seeds.append(red[i])
    seeds = np.array(seeds)
    cells = np.round(frac - seeds[label]).astype(int)
    return cells, label, seeds


def _refine(xy: np.ndarray, B: np.ndarray, tol: float):
    """Least-squares lattice + basis: x_i = o_site(i) + n_i·B, with stray sites and outliers dropped."""
    cells, label, _ = _periodic_sites(xy, B, tol)
    counts = np.bincount(label)
    keep = counts[label] >= max(2, 0.25 * counts.max())  # sites seen in a quarter of the cells: real

    def fit():
        sites = np.unique(label[keep])
        lab = np.searchsorted(sites, label[keep])
        X = np.concatenate([cells[keep], np.eye(len(sites))[lab]], axis=1).astype(float)
        coef, *_ = np.linalg.lstsq(X, xy[keep], rcond=None)
        return X, coef

    for _ in range(3):
        X, coef = fit()
        res = np.linalg.norm(X @ coef - xy[keep], axis=1)
        cut = max(3 * 1.4826 * np.median(res), 1e-9)
        bad = res > max(cut, 0.25 * tol)
        if not bad.any():
            break
        idx = np.flatnonzero(keep)
        keep[idx[bad]] = False
    else:  # the last pass dropped columns: the fit must be of the columns kept
        X, coef = fit()
    n, p = int(keep.sum()), X.shape[1]
    resid = X @ coef - xy[keep]
    dof = max(2 * n - 2 * p, 1)
    s2 = float((resid ** 2).sum() / dof)
    cov = s2 * np.linalg.pinv(X.T @ X)
    Bf = coef[:2]
    sig = np.sqrt(np.maximum(np.diag(cov)[:2], 0))[:, None] * np.ones((1, 2))
    offsets = coef[2:] - coef[2]
    return Bf, sig, float(np.sqrt((resid ** 2).sum(1).mean())), n, offsets


def _lattice(B: np.ndarray, sig: np.ndarray, rms: float, n: int, n_used: int, sites, source: str) -> Lattice2D:
    lengths = np.linalg.norm(B, axis=1)
    # σ of |b| from the component σ's (independent components)
    lsig = np.sqrt(((B / lengths[:, None]) ** 2 * sig ** 2).sum(1))
    ang = float(np.degrees(np.arccos(np.clip(B[0] @ B[1] / lengths.prod(), -1, 1))))
    rot = float(np.degrees(np.arctan2(B[0, 1], B[0, 0])) % 360)
    return Lattice2D(B, sig, lengths, lsig, ang, rot, rms, n, n_used, np.asarray(sites, float), source)


def fft_lattice(image: np.ndarray, pixel_size: float = 1.0, max_peaks: int = 40) -> Lattice2D:
    """Lattice from the strongest Fourier peaks of ``image`` (units: ``pixel_size`` per pixel)."""
    from skimage.feature import peak_local_max

    img = np.asarray(image, float)
    ny, nx = img.shape
    win = np.outer(np.hanning(ny), np.hanning(nx))
    P = np.abs(np.fft.fftshift(np.fft.fft2((img - img.mean()) * win))) ** 2
    cy, cx = ny // 2, nx // 2
    yy, xx = np.mgrid[:ny, :nx]
    P[(yy - cy) ** 2 + (xx - cx) ** 2 <= 9] = 0  # the window's own DC lobe
    pk = peak_local_max(P, min_distance=2, threshold_rel=0.02, num_peaks=max_peaks, exclude_border=1)
    if len(pk) < 4:
        raise ValueError("too few Fourier peaks for a lattice")
    logP = np.log(P + P.max() * 1e-12)

    def sub(i, j):  # parabolic sub-bin peak position
        fy = fx = 0.0
        a, b, c = logP[i - 1, j], logP[i, j], logP[i + 1, j]
        if a - 2 * b + c < 0:
            fy = 0.5 * (a - c) / (a - 2 * b + c)
        a, b, c = logP[i, j - 1], logP[i, j], logP[i, j + 1]
        if a - 2 * b + c < 0:
            fx = 0.5 * (a - c) / (a - 2 * b + c)
        return (j + fx - cx) / nx, (i + fy - cy) / ny

    g = np.array([sub(i, j) for i, j in pk]) / pixel_size
    power = P[pk[:, 0], pk[:, 1]]
    strong = g[np.argsort(-power)[:8]]
    strong = strong[np.argsort(np.linalg.norm(strong, axis=1))]
    g1 = strong[0]
    g2 = next((v for v in strong[1:] if abs(_cross(g1, v)) > 0.2 * np.linalg.norm(g1) * np.linalg.norm(v)), None)
    if g2 is None:
        raise ValueError("Fourier peaks are collinear")
    G = np.array(gauss_reduce(g1, g2))
    h = np.linalg.solve(G.T, g.T).T
    ok = np.abs(h - np.round(h)).max(1) < 0.15
    H = np.round(h[ok])
    G, *_ = np.linalg.lstsq(H, g[ok], rcond=None)
    resid = H @ G - g[ok]
    s2 = float((resid ** 2).sum() / max(2 * ok.sum() - 4, 1))
    gsig = np.sqrt(np.maximum(np.diag(s2 * np.linalg.pinv(H.T @ H)), 0))
    B = np.linalg.inv(G).T  # real rows: b_i · g_j = δ_ij
    B = np.array(gauss_reduce(*B))
    rel = gsig / np.linalg.norm(G, axis=1)  # the real vectors inherit the reciprocal ones' relative error
    sig = np.abs(B) * rel.max()
    return _lattice(B, sig, float("nan"), 0, int(ok.sum()), np.zeros((1, 2)), "fft")


def image_lattice(xy: np.ndarray, image: np.ndarray, pixel_size: float = 1.0) -> Lattice2D | None:
    """The image's lattice as the pipeline takes it: ``fit_lattice`` of the columns, else (too few or too
    irregular detections, a faint monolayer) the image's own periodicity, ``fft_lattice``; None when neither
    finds one."""
    for fit in (lambda: fit_lattice(xy, image, pixel_size), lambda: fft_lattice(image, pixel_size)):
        try:
            return fit()
        except ValueError:
            pass
    return None


# the raw image's periodicity counts only between these: shorter is the noise's pixel-scale texture (2-3 px
# on pure-noise images), fewer repeats across the field is chance (60-70 px periods on amorphous ones);
# and its vectors must carry detections onto detections this many times as often as the same lengths
# turned elsewhere (Si [210], 438 detections of which a third are false: 1.8 and 2.2; the noise and
# amorphous images of set97 and the validation set whose raw periods pass the limits above: at most 1.2)
MIN_PERIOD_PX, MIN_REPEATS, MIN_SUPPORT, MIN_SUPPORT_COLUMNS = 4.0, 5.0, 1.5, 20


def translation_support(xy: np.ndarray, vectors: np.ndarray, turns: int = 12) -> np.ndarray:
    """For each vector: the share of detections that ``±vector`` carries within a quarter of the median
    nearest-neighbour distance of another, over the same share for the vector turned by ``turns`` other
    angles (what a random direction of that length gives). Zero with fewer than ``MIN_SUPPORT_COLUMNS``."""
    xy = np.asarray(xy, float).reshape(-1, 2)
    if len(xy) < MIN_SUPPORT_COLUMNS:
        return np.zeros(len(vectors))
    tree = cKDTree(xy)
    tol = 0.25 * float(np.median(tree.query(xy, k=2)[0][:, 1]))

    def share(v):
        return np.mean([np.isfinite(tree.query(xy + s * v, distance_upper_bound=tol)[0]).mean() for s in (1, -1)])

    out = []
    for v in np.asarray(vectors, float):
        angles = np.pi * (np.arange(1, turns + 1) / (turns + 1))  # every direction but its own, half a turn
        c, s = np.cos(angles), np.sin(angles)
        turned = np.stack([c * v[0] - s * v[1], s * v[0] + c * v[1]], 1)
        chance = max(float(np.mean([share(t) for t in turned])), 1e-3)
        out.append(share(v) / chance)
    return np.array(out)


def image_lattices(xy: np.ndarray, image: np.ndarray, pixel_size: float = 1.0,
                   raw: np.ndarray | None = None, tol: float = 0.02) -> list[Lattice2D]:
    """``image_lattice``, and when the columns gave none, the periodicity of ``raw`` (the image before
    denoising) as well where it differs (relative lengths or angle beyond ``tol``): a pattern unlike
    any it was trained on (Si [210], whose atoms do not stack into columns) the denoiser can redraw at
    another period, which its Fourier peaks then repeat."""
    first = image_lattice(xy, image, pixel_size)
    out = [first] if first is not None else []
    if raw is None or (first is not None and first.source == "columns"):
        return out
    try:
        alt = fft_lattice(raw, pixel_size)
    except ValueError:
        return out
    alt.source = "fft_raw"
    px_lengths = alt.lengths / pixel_size
    if px_lengths.min() < MIN_PERIOD_PX or px_lengths.max() > min(raw.shape) / MIN_REPEATS:
        return out  # a period of a few pixels is the detector's noise; one seen a few times is no lattice
    if translation_support(xy, alt.vectors).min() < MIN_SUPPORT:
        return out  # the detections, however few right, must repeat along it more than by chance
    if first is None or not np.allclose(lattice_metric(alt.vectors), lattice_metric(first.vectors), rtol=tol,
                                        atol=tol):
        out.append(alt)
    return out


def fit_lattice(xy: np.ndarray, image: np.ndarray | None = None, pixel_size: float = 1.0, tol: float | None = None,
                min_columns: int = 8, min_fraction: float = 0.6) -> Lattice2D:
    """Positional 2-D lattice of detected columns (``xy`` (N, 2), Å or pixels).

    ``image`` (with ``pixel_size`` xy units per pixel) cross-checks the result with its FFT and
    stands in when there are fewer than ``min_columns`` columns. ``tol`` (xy units) is how far a
    translated column may land from another to count as the same; default a quarter of the
    median nearest-neighbour distance.
    """
    xy = np.asarray(xy, float).reshape(-1, 2)
    if len(xy) < min_columns:
        if image is None:
            raise ValueError(f"{len(xy)} columns are too few for a lattice (need {min_columns}) and no image was given")
        lat = fft_lattice(image, pixel_size)
        lat.n_columns = len(xy)
        return lat
    tree = cKDTree(xy)
    nn = float(np.median(tree.query(xy, k=2)[0][:, 1]))
    tol = tol or 0.25 * nn
    span = float(np.linalg.norm(xy.max(0) - xy.min(0)))
    def basis(radius):
        found = sorted(_translations(xy, tol, radius, min_fraction), key=lambda v: float(np.linalg.norm(v)))
        if not found:
            return found, None, None
        b1 = found[0]
        b2 = next((v for v in found[1:] if abs(_cross(b1, v)) > 0.2 * np.linalg.norm(b1) * np.linalg.norm(v)), None)
        return found, b1, b2

    radius, b2 = 4 * nn, None
    while radius < span:
        found, b1, b2 = basis(radius)
        if b2 is not None:
            break
        radius *= 2
    if b2 is None:
        raise ValueError("no two independent translations map the columns onto themselves")
    if radius < 2.5 * np.linalg.norm(b2):
        # look again with every translation up to well past the basis in view: the precision test
        # in ``_translations`` needs true translations among the candidates to tell a
        # pseudo-translation (pyrite [110]: a near-centring) from them
        found, b1, b2 = basis(min(2.5 * float(np.linalg.norm(b2)), span))
        if b2 is None:
            raise ValueError("no two independent translations map the columns onto themselves")
    B = np.array(gauss_reduce(b1, b2))
    B, sig, rms, n_used, sites = _refine(xy, B, tol)
    B1, B2 = gauss_reduce(*B)
    if not np.allclose(np.array([B1, B2]), B):  # keep the σ's in the same order as the vectors
        M = np.linalg.solve(B.T, np.array([B1, B2]).T).T
        sig = np.sqrt((M ** 2) @ (sig ** 2))
        B = np.array([B1, B2])
    lat = _lattice(B, sig, rms, len(xy), n_used, sites, "columns")
    lat.translations = np.array(found[:24])
    if image is not None:
        try:
            f = fft_lattice(image, pixel_size)
            # the image's periodicity may be coarser (columns that differ in brightness), never finer
            m = f.vectors @ np.linalg.inv(B)
            lat.fft_check = float(np.abs(m - np.round(m)).max())
        except ValueError:
            lat.fft_check = None
    return lat


# ---------------------------------------------------------------------------------------------
# Template alignment


@dataclass
class Alignment:
    template_id: str
    uvw: tuple[int, int, int]
    affine: np.ndarray  # (2, 2) template frame (Å) -> image frame (Å): x = affine @ u + shift
    shift: np.ndarray  # (2,) Å
    rotation_deg: float  # rotation part of the affine (polar decomposition), [0, 360)
    strain: np.ndarray  # (2, 2) symmetric: affine = R(rotation) @ (I + strain) [@ diag(1, -1) if mirrored]
    rms: float  # Å, residual of the matched columns
    inlier_fraction: float  # detected columns within the match radius of a template column
    n_matched: int
    pixel_size: float | None  # Å/px: the given one or the estimate (None: known but not given)
    pixel_size_sigma: float  # statistical only; 0 when given
    pixel_size_source: str  # "given" | "estimated"
    mirrored: bool = False  # the image is the template seen from -[uvw] (its projection mirrored)
    coverage: float = 0.0  # template columns in the field that found a detection
    intensity_corr: float | None = None  # detected intensity vs template Z^1.7 weight, matched columns
    affine_cov: np.ndarray = field(default_factory=lambda: np.zeros((4, 4)))  # of affine.ravel()
    lattice: Lattice2D | None = None  # the detections' lattice the fit started from (units of xy)
    candidates: int = 0  # initial (affine, shift) hypotheses scored

    def to_dict(self) -> dict:
        r = lambda a, n=6: np.round(np.asarray(a, float), n).tolist()  # noqa: E731
        return {"template_id": self.template_id, "uvw": [int(v) for v in self.uvw], "affine": r(self.affine),
                "shift": r(self.shift), "rotation_deg": round(self.rotation_deg, 4), "strain": r(self.strain),
                "rms": round(self.rms, 6) if np.isfinite(self.rms) else None,
                "inlier_fraction": round(self.inlier_fraction, 4),
                "n_matched": self.n_matched,
                "pixel_size": None if self.pixel_size is None else round(self.pixel_size, 7),
                "pixel_size_sigma": round(self.pixel_size_sigma, 7), "pixel_size_source": self.pixel_size_source,
                "mirrored": self.mirrored, "coverage": round(self.coverage, 4),
                "intensity_corr": None if self.intensity_corr is None else round(self.intensity_corr, 4),
                "affine_cov": r(self.affine_cov, 10),
                "lattice": None if self.lattice is None else self.lattice.to_dict(), "candidates": self.candidates}


@dataclass
class _Template:
    cell: tuple[float, float]  # orthogonal repeat, Å
    xy: np.ndarray  # visible columns in one repeat, Å
    weight: np.ndarray  # their Z^1.7 weights
    vectors: np.ndarray  # candidate 2-D lattice vectors (positional and true lattice), Å
    min_sep: float  # nearest distinct visible columns, Å
    anchors: np.ndarray  # indices of the columns of one true 2-D cell: where the central detection may sit
    true: np.ndarray  # (2, 2) reduced true 2-D lattice, Å
    pos: np.ndarray  # (2, 2) reduced positional lattice (what ``fit_lattice`` finds in a clean image), Å


def _wrap(p: np.ndarray, L: np.ndarray) -> np.ndarray:
    p = np.mod(p, L)
    p[p >= L] = 0.0  # np.mod can round up to L itself
    return p


def _merge(xy: np.ndarray, w: np.ndarray, L: np.ndarray, tol: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Join columns closer than ``tol`` (periodic): ``project_columns`` merges greedily from seed atoms,
    so near-coincident atoms can come out as two columns a few pm apart, which would make a
    meaningless 0.02 Å 'lattice'. The joined column sits at the weighted centroid, as it images."""
    pairs = cKDTree(xy, boxsize=L).query_pairs(tol, output_type="ndarray")
    if len(pairs) == 0:
        return xy, w
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(xy)
    _, label = connected_components(coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)),
                                    directed=False)
    out_xy, out_w = [], []
    for k in range(label.max() + 1):
        idx = np.flatnonzero(label == k)
        d = xy[idx] - xy[idx[0]]
        d -= np.round(d / L) * L
        out_xy.append(xy[idx[0]] + (w[idx, None] * d).sum(0) / w[idx].sum())
        out_w.append(w[idx].sum())
    return _wrap(np.array(out_xy), L), np.array(out_w)


def orthogonalisation_strain(oriented, orthogonal) -> np.ndarray:
    """2x2 S with orthogonal-cell positions = S @ oriented-cell positions (in-plane, Å).

    ``abtem.orthogonalize_cell`` repeats an oblique cell up to a few times and strains the rest
    away, so for some zone axes (Ti2O3 [110]: 2.5 % stretch, 2.1 % shear) the repeat unit that
    ``describe`` returns, and the simulator images, is a sheared crystal. S is exactly that shear
    (identity when the cell repeats without strain)."""
    c = oriented.cell.array[:2, :2]
    t = orthogonal.cell.array[:2, :2]
    f = np.round(np.linalg.solve(c.T, t.T).T)
    return t.T @ np.linalg.inv((f @ c).T)


def _template(structure, uvw, min_visible_weight: float, described=None) -> _Template:
    """``described``: (describe(structure, uvw), oriented_cell(structure, uvw)) when already at hand."""
    from data.zone_axes import oriented_cell

    (_, atoms, cols), oriented = described or (describe(structure, uvw), oriented_cell(structure, uvw))
    L = np.array([atoms.cell[0, 0], atoms.cell[1, 1]], float)
    w = np.array([c.z_weight for c in cols])
    vis = w >= min_visible_weight * w.max()
    xy, w = _merge(_wrap(np.array([[c.x, c.y] for c in cols])[vis], L), w[vis], L)
    # the true 2-D lattice as the columns carry it (sheared where the orthogonal repeat was strained)
    true = np.array(gauss_reduce(*(oriented.cell.array[:2, :2] @ orthogonalisation_strain(oriented, atoms).T)))
    # the positional lattice, exactly: translations that carry every visible column onto one
    # (modulo the orthogonal repeat). Every such translation carries column 0 onto some column.
    tree = cKDTree(xy, boxsize=L)
    trans = [d for d in xy - xy[0] if tree.query(_wrap(xy + d, L))[0].max() < 1e-3]
    ij = np.array(list(itertools.product(range(-2, 3), repeat=2)))
    pts = np.concatenate([d - np.floor(np.linalg.solve(true.T, d)) @ true + ij @ true for d in trans])
    pts = pts[np.linalg.norm(pts, axis=1) > 1e-6]
    pts = pts[np.argsort(np.linalg.norm(pts, axis=1), kind="stable")]
    b1 = pts[0]
    b2 = next(v for v in pts if abs(_cross(b1, v)) > 1e-3 * np.linalg.norm(b1) * np.linalg.norm(v))
    pos = np.array(gauss_reduce(b1, b2))
    vecs = np.concatenate([ij @ pos, ij @ true])
    vecs = vecs[(np.linalg.norm(vecs, axis=1) > 1e-6)
                & (np.linalg.norm(vecs, axis=1) <= 2.2 * np.linalg.norm(pos, axis=1).max() + 1e-9)]
    keep = []
    for v in vecs:
        if not any(np.linalg.norm(v - k) < 1e-6 for k in keep):
            keep.append(v)
    min_sep = float(tree.query(xy, k=2)[0][:, 1].min()) if len(xy) > 1 else float(np.linalg.norm(pos, axis=1).min())
    min_sep = min(min_sep, float(np.linalg.norm(pos, axis=1).min()))
    # anchors: the columns of one true 2-D cell (the orthogonal repeat may hold several; equivalent
    # columns can differ by a few pm where ``project_columns`` merged near-coincident atoms)
    _, label, _ = _periodic_sites(xy, true, 0.1)
    anchors = np.array([int(np.flatnonzero(label == k)[0]) for k in range(label.max() + 1)])
    return _Template(tuple(L), xy, w, np.array(keep), min_sep, anchors, true, pos)


def positional_lattice(structure, uvw, min_visible_weight: float = MIN_VISIBLE_WEIGHT) -> np.ndarray:
    """(2, 2) reduced lattice of the visible projected columns along ``uvw``, Å: the lattice
    ``fit_lattice`` finds in a clean image of this crystal (columns alike in position count as one
    lattice, whatever their species)."""
    return _template(structure, uvw, min_visible_weight).pos


# Which columns a detection may have found, as the minimum Z^1.7 weight relative to the heaviest:
# the visible ones (a clean image), only the heavy ones (a low dose loses SnS2 [001]'s S2 columns
# beside Sn, and fit_lattice then finds a √3 larger cell), or every one (faint F columns of ScF3
# [110] found too: a finer cell)
DETECTED_COLUMN_SETS = {"visible": MIN_VISIBLE_WEIGHT, "heavy": 0.5, "all": 0.0}


def detectable_lattices(structure, uvw) -> np.ndarray:
    """(len(DETECTED_COLUMN_SETS), 2, 2): ``positional_lattice`` of each set of columns a detection
    may have found."""
    from data.zone_axes import oriented_cell

    described = (describe(structure, uvw), oriented_cell(structure, uvw))
    return np.stack([_template(structure, uvw, w, described).pos for w in DETECTED_COLUMN_SETS.values()])


def sublattices(vectors: np.ndarray, index: int = 2) -> list[np.ndarray]:
    """Every lattice of ``index`` in the lattice ``vectors`` (2, 2) spans, one per Hermite normal form
    (three of index 2: {2b1, b2}, {b1, 2b2}, {b1 + b2, 2b2}), Gauss-reduced. Of index 2, the crystal's own
    lattice when the detections' lattice is finer than it by a pseudo-translation that carries most
    columns but not all (the hexagonal layered crystals along [320], with columns 1.1 Å apart)."""
    B = np.asarray(vectors, float)
    return [np.array(gauss_reduce(*(np.array([[a, b], [0, index // a]]) @ B)))
            for a in range(1, index + 1) if index % a == 0 for b in range(index // a)]


def lattice_metric(vectors: np.ndarray) -> np.ndarray:
    """|b1|, |b2|, |cos γ| of a 2-D basis after Gauss reduction: invariant to rotation, mirror and
    the choice of reduced basis (|b1| ≤ |b2|)."""
    b1, b2 = gauss_reduce(*np.asarray(vectors, float))
    l1, l2 = float(np.linalg.norm(b1)), float(np.linalg.norm(b2))
    return np.array([l1, l2, abs(float(b1 @ b2)) / (l1 * l2)])


def _tile(t: _Template, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Template columns covering the template-frame box [lo, hi]."""
    L = np.array(t.cell)
    n0 = np.floor(lo / L).astype(int) - 1
    n1 = np.ceil(hi / L).astype(int) + 1
    gx, gy = np.meshgrid(np.arange(n0[0], n1[0] + 1), np.arange(n0[1], n1[1] + 1))
    shifts = np.stack([gx.ravel(), gy.ravel()], 1) * L
    pos = (t.xy[None] + shifts[:, None]).reshape(-1, 2)
    w = np.tile(t.weight, len(shifts))
    return pos, w


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.std(a) < 1e-12 or np.std(b) < 1e-12:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _score_anchors(xy, A0, t: _Template, anchors: np.ndarray, r_in: float, intensity, xref, patch: np.ndarray,
                   radius: float, scale: float) -> list[tuple[float, float, np.ndarray]]:
    """Symmetric truncated-quadratic match cost of x = A0 u + s for every anchor (s = xref - A0 u0),
    on the detections within ``radius`` of ``xref`` (``patch``: their indices): detections far from the
    template (template-frame Å) plus template columns in the patch without a detection.
    Returns (cost, intensity correlation, s) per anchor."""
    A_inv = np.linalg.inv(A0)
    Q = (xy[patch] - xref) @ A_inv.T  # template-frame offsets from the anchor
    U = t.xy[anchors]
    pos, w = _tile(t, Q.min(0) + U.min(0), Q.max(0) + U.max(0))
    ptree = cKDTree(pos)
    img = pos @ A0.T  # image-frame positions, before the shift
    dtree = cKDTree(xy[patch] - xref)
    r_img = r_in * scale
    out = []
    for u0 in U:
        dist, j = ptree.query(Q + u0, distance_upper_bound=r_in)
        ok = np.isfinite(dist)
        cost = float(np.where(ok, (dist / r_in) ** 2, 1.0).mean())
        rel = img - A0 @ u0
        inside = (rel ** 2).sum(1) <= (radius - r_img) ** 2
        if inside.any():
            dd, _ = dtree.query(rel[inside], distance_upper_bound=r_img)
            cost += float(np.where(np.isfinite(dd), (dd / r_img) ** 2, 1.0).mean())
        else:
            cost += 1.0
        corr = _corr(intensity[patch][ok], w[j[ok]]) if intensity is not None and ok.sum() >= 3 else 0.0
        out.append((cost, corr, xref - A0 @ u0))
    return out


def _fit(xy, A, s, t: _Template, r_in: float, scale: float, iterations: int = 10):
    """ICP: match every detection to its nearest template column, robust linear fit, repeat."""
    prev = None
    for _ in range(iterations):
        q = np.linalg.solve(A, (xy - s).T).T
        pos, w = _tile(t, q.min(0), q.max(0))
        dist, j = cKDTree(pos).query(q)
        use = dist < 2 * r_in
        if use.sum() < max(6, 0.3 * len(xy)):  # too few matches to pin six parameters: a wrong start
            break
        u, x = pos[j[use]], xy[use]

        def resid(p):
            return ((u @ p[:4].reshape(2, 2).T + p[4:]) - x).ravel()

        sol = least_squares(resid, np.concatenate([A.ravel(), s]), loss="soft_l1", f_scale=0.1 * scale)
        A, s = sol.x[:4].reshape(2, 2), sol.x[4:]
        key = tuple(np.flatnonzero(use)), tuple(j[use])
        if key == prev:
            break
        prev = key
    return A, s


def _final(xy, A, s, t: _Template, r_in: float, scale: float, intensity):
    """Plain least squares on the inliers: the affine, its covariance and the match statistics."""
    q = np.linalg.solve(A, (xy - s).T).T
    pos, w = _tile(t, q.min(0), q.max(0))
    dist, j = cKDTree(pos).query(q)
    x_model = pos[j] @ A.T + s
    d_img = np.linalg.norm(x_model - xy, axis=1)
    inl = d_img < r_in * scale
    n = int(inl.sum())
    cov = np.zeros((6, 6))
    if n >= 4:
        u = pos[j[inl]]
        X = np.concatenate([u, np.ones((n, 1))], axis=1)  # per image coordinate: [u_x, u_y, 1]
        coef, *_ = np.linalg.lstsq(X, xy[inl], rcond=None)
        A, s = coef[:2].T, coef[2]
        res = X @ coef - xy[inl]
        s2 = float((res ** 2).sum() / max(2 * n - 6, 1))
        C = s2 * np.linalg.pinv(X.T @ X)  # same for both image coordinates
        # parameter order (A00, A01, A10, A11, s0, s1): row k of A is coef[:2, k]
        idx = {0: (0, 0), 1: (1, 0), 4: (2, 0), 2: (0, 1), 3: (1, 1), 5: (2, 1)}
        for a, (ia, ka) in idx.items():
            for b, (ib, kb) in idx.items():
                if ka == kb:
                    cov[a, b] = C[ia, ib]
        x_model = pos[j] @ A.T + s
        d_img = np.linalg.norm(x_model - xy, axis=1)
        inl = d_img < r_in * scale
    rms = float(np.sqrt((d_img[inl] ** 2).mean())) if inl.any() else float("nan")
    # coverage: template columns well inside the detections' hull that have a detection nearby
    mp = pos @ A.T + s
    inside = _Hull(xy).contains(mp)
    if inside.any():
        dd, _ = cKDTree(xy).query(mp[inside])
        coverage = float((dd < r_in * scale).mean())
    else:
        coverage = 0.0
    corr = _corr(intensity[inl], w[j[inl]]) if intensity is not None and inl.sum() >= 3 else None
    return A, s, cov, rms, float(inl.mean()), n, coverage, corr


def _singular_values(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest and smallest singular values of a stack of 2x2 matrices (closed form)."""
    f = (M ** 2).sum(axis=(-2, -1))
    det = np.abs(np.linalg.det(M))
    root = np.sqrt(np.maximum(f ** 2 - 4 * det ** 2, 0))
    return np.sqrt((f + root) / 2), np.sqrt(np.maximum(f - root, 0) / 2)


def _hypotheses(pairs, vectors: np.ndarray, max_strain: float, known_scale: bool, allow_mirror: bool,
                area: float | None = None, max_hyps: int = 48) -> list:
    """Affines A0 = D V⁻¹ taking a pair of template vectors V onto a pair of detected ones D, with
    at most ``max_strain`` shape change (and scale change, when the scale is known); with ``area``,
    only pairs V that span a cell of that area (a basis of the template's positional lattice)."""
    V = np.array([np.array([a, b]).T for a, b in itertools.permutations(vectors, 2)])
    det = np.abs(np.linalg.det(V))
    V = V[(det > 1e-6) & ((area is None) | (np.abs(det / (area or 1.0) - 1) < 1e-3))]
    Vinv = np.linalg.inv(V)
    out, seen = [], set()
    for D in pairs:
        A = np.einsum("ij,njk->nik", np.asarray(D).T, Vinv)
        hi, lo = _singular_values(A)
        ok = hi / lo <= (1 + max_strain) / (1 - max_strain)
        if known_scale:
            ok &= (lo >= 1 - max_strain) & (hi <= 1 + max_strain)
        if not allow_mirror:
            ok &= np.linalg.det(A) > 0
        # most similar first: a candidate's strain should be small
        for k in np.flatnonzero(ok)[np.argsort((hi / lo)[ok], kind="stable")]:
            key = tuple(np.round(A[k].ravel() / hi[k], 3))
            if key not in seen:
                seen.add(key)
                out.append(A[k])
    out.sort(key=lambda a: float(np.divide(*_singular_values(a[None]))[0]))
    return out[:max_hyps]


def align_template(xy: np.ndarray, entry, uvw, pixel_size_known: bool = True, *, pixel_size: float | None = None,
                   intensity: np.ndarray | None = None, max_strain: float = 0.1, allow_mirror: bool = True,
                   min_visible_weight: float = MIN_VISIBLE_WEIGHT, lattice: Lattice2D | None = None,
                   n_refine: int = 8, max_anchors: int = 48) -> Alignment:
    """Fit x = A u + s mapping ``entry``'s projected columns along ``uvw`` onto detections ``xy``.

    ``xy`` is in Å when ``pixel_size_known`` (``pixel_size`` is then only recorded), else in
    pixels: the overall scale then becomes the pixel-size estimate (the template's lattice scale
    assumed) and the strain keeps only the shape. ``intensity`` (per detection, e.g.
    ``Columns.intensity``) decides between placements that match positions equally well but put
    heavy columns on light sites. Template columns fainter than ``min_visible_weight`` of the
    brightest (Z^1.7) are not offered as matches; detections far from any template column are
    tolerated as outliers.
    """
    xy = np.asarray(xy, float).reshape(-1, 2)
    uvw = tuple(int(v) for v in uvw)
    t = _template(entry.structure, uvw, min_visible_weight)
    lat = lattice or fit_lattice(xy)
    Bd = lat.vectors
    if intensity is not None:
        intensity = np.log(np.clip(np.asarray(intensity, float), 1e-12, None))
    r_in = min(0.5, 0.35 * t.min_sep)  # Å, match radius in the template frame
    hull, tree = _Hull(xy), cKDTree(xy)
    # every hypothesis hangs on one central detection: take one that the detected lattice repeats
    # (a false detection has no neighbours one lattice vector away)
    central = np.argsort(np.linalg.norm(xy - np.median(xy, axis=0), axis=1))[:20]
    steps = np.array([[1, 0], [0, 1], [1, 1], [1, -1]]) @ Bd
    steps = np.concatenate([steps, -steps])
    support = np.array([np.isfinite(tree.query(xy[i] + steps, distance_upper_bound=0.25 * lat.lengths.min())[0]).sum()
                        for i in central])
    central = central[support >= support.max() - 1]  # stably sorted: still nearest the centre first
    xref, anchors = xy[central[0]], t.anchors
    if intensity is not None and len(anchors) > max_anchors:
        # a big cell: put the brightest central detection only on the heavier half of the columns
        xref = xy[central[np.argmax(intensity[central])]]
        anchors = anchors[t.weight[anchors] >= np.median(t.weight[anchors])]

    # hypotheses are scored on a disc of detections around the central one: inside the field, and
    # small enough to be cheap
    to_edge = float(-(hull.eq[:, :2] @ xref + hull.eq[:, 2]).max())
    order = np.argsort(np.linalg.norm(xy - xref, axis=1))
    radius = min(to_edge, float(np.linalg.norm(xy[order[min(len(xy), 250) - 1]] - xref)) + 1e-9)
    patch = order[np.linalg.norm(xy[order] - xref, axis=1) <= radius]

    def search(pairs, area=None):
        hyps = _hypotheses(pairs, t.vectors, max_strain, pixel_size_known, allow_mirror, area)
        scored = []
        for A0 in hyps:  # the central detection sits on each template column (anchor) in turn
            sc = float(np.sqrt(abs(np.linalg.det(A0))))
            for cost, corr, s0 in _score_anchors(xy, A0, t, anchors, r_in, intensity, xref, patch, radius, sc):
                scored.append((cost + 0.1 * (1 - corr), A0, s0))
        scored.sort(key=lambda z: z[0])
        best = None
        for _, A0, s0 in scored[:n_refine]:
            sc = 1.0 if pixel_size_known else float(np.sqrt(abs(np.linalg.det(A0))))
            A, s = _fit(xy, A0, s0, t, r_in, sc)
            A, s, cov, rms, frac, n, coverage, corr = _final(xy, A, s, t, r_in, sc, intensity)
            # misfit: unmatched detections and template columns, then how closely the matched ones sit
            # (a pseudo-periodic pattern also matches, strained and loosely); intensity breaks positional ties
            obj = ((1 - frac) + (1 - coverage) + (rms / (r_in * sc)) ** 2 + 0.1 * (1 - (corr or 0.0))
                   + 0.05 * (np.linalg.det(A) < 0))
            if best is None or obj < best[0] - 1e-9:
                best = (obj, A, s, cov, rms, frac, n, coverage, corr)
        return best, len(scored)

    # initial affines: the detections' reduced basis onto every basis of the template's positional
    # lattice of matching shape (this enumerates the lattice's point-group-equivalent choices) ...
    best, n_scored = search([Bd], abs(_cross(*t.pos)))
    if (best is None or best[0] > 0.3) and lat.translations is not None and len(lat.translations) > 2:
        # ... or, when the detections' reduced lattice is finer than the template's (a translation that
        # carries most but not all columns), any two of their translations
        T = list(lat.translations[:12])
        if pixel_size_known:  # and the translations as long as the template's own lattice vectors
            nn = float(np.median(tree.query(xy, k=2)[0][:, 1]))
            reach = 1.15 * float(np.linalg.norm(t.vectors, axis=1).max())
            lengths = np.linalg.norm(t.vectors, axis=1)
            long = [d for d in _translations(xy, 0.25 * nn, reach, 0.5, n_ref=6)
                    if np.any(np.abs(np.linalg.norm(d) / lengths - 1) <= max_strain)]
            T += sorted(long, key=lambda v: float(np.linalg.norm(v)))[:40]
        pairs = [np.array([a, b]) for a, b in itertools.permutations(T, 2)
                 if abs(_cross(a, b)) > 0.2 * np.linalg.norm(a) * np.linalg.norm(b)]
        alt, n_alt = search(pairs)
        n_scored += n_alt
        if alt is not None and (best is None or alt[0] < best[0]):
            best = alt
    if best is None:
        raise ValueError(f"the detections' lattice {lat.lengths.round(3).tolist()} fits no lattice vectors of "
                         f"{entry.id} along {list(uvw)} within {max_strain:.0%} strain")
    _, A, s, cov, rms, frac, n, coverage, corr = best

    cov4 = cov[:4, :4]
    if pixel_size_known:
        p, p_sig, source = pixel_size, 0.0, "given"
        A_ang, s_ang, rms_ang = A, s, rms
    else:
        k = float(np.sqrt(abs(np.linalg.det(A))))  # px per Å, isotropic part
        p, source = 1.0 / k, "estimated"
        g = -0.5 / k * np.linalg.inv(A).T.ravel()  # d(1/sqrt|det A|)/dA
        p_sig = float(np.sqrt(max(g @ cov4 @ g, 0.0)))
        A_ang, s_ang, rms_ang = A / k, s / k, rms / k

        def norm(a):
            a = a.reshape(2, 2)
            return (a / np.sqrt(abs(np.linalg.det(a)))).ravel()

        J = np.empty((4, 4))
        h = 1e-6 * np.abs(A).max()
        for i in range(4):
            e = np.zeros(4)
            e[i] = h
            J[:, i] = (norm(A.ravel() + e) - norm(A.ravel() - e)) / (2 * h)
        cov4 = J @ cov4 @ J.T
    mirrored = bool(np.linalg.det(A_ang) < 0)
    Ap = A_ang @ np.diag([1.0, -1.0]) if mirrored else A_ang
    U, P = polar(Ap)
    rot = float(np.degrees(np.arctan2(U[1, 0], U[0, 0])) % 360)
    return Alignment(entry.id, uvw, A_ang, s_ang, rot, P - np.eye(2), rms_ang, frac, n, p, p_sig, source, mirrored,
                     coverage, corr, cov4, lat, n_scored)
