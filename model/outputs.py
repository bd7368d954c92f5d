"""What ``infer.py`` writes for one image: CIFs, report.json, overlay.png — whole or not at all."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from data.io import LoadedImage
from model.pipeline import Result


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_cif(structure, path: Path) -> None:
    from pymatgen.io.cif import CifWriter

    try:  # symmetrised: the CIF carries the space group, as crystallographers expect
        CifWriter(structure, symprec=0.01).write_file(path)
    except Exception:  # spglib can refuse odd cells; a P1 CIF is still the right structure
        CifWriter(structure).write_file(path)


def summary_lines(result: Result) -> list[str]:
    r = result.report
    if not result.accepted:
        return [f"no structure: {result.reason}"]
    t, z = r["template"], r["zone_axis"]
    lat = r["lattice"].get("relaxed") or r["lattice"]["reconstructed"]
    sg = r["spacegroup"].get("relaxed") or r["spacegroup"]["reconstructed"]["symbol"]
    lines = [f"{t['formula']} ({t['prototype']}, template {t['id']}) along {z['label']}",
             f"space group {sg}; confidence {r['confidence']:.2f} (score {r['score']:.3f}: verification "
             f"{r['verification_score']:.3f} × lattice prior {r['lattice_prior']:.2f})",
             "a b c = " + " ".join(f"{lat[k]:.4f}" for k in ("a", "b", "c")) + " Å; α β γ = "
             + " ".join(f"{lat[k]:.2f}" for k in ("alpha", "beta", "gamma")) + "°"]
    if r.get("indistinguishable"):
        lines.append("as well explained by: " + ", ".join(
            f"{c['template_id']} [{''.join(map(str, c['zone_axis']))}] ({c['kind']})" for c in r["indistinguishable"])
            + " (this image cannot tell them apart)")
    fit = r.get("specimen_fit")
    if fit:
        what = f"{fit['layers']:.1f} layers" if fit["layers"] is not None else f"{fit['thickness']:.0f} Å thick"
        lines.append(f"absolute scale: the signal is that of {what} (specimen prior {fit['prior']:.2f})")
    inp = r["input"]
    if inp.get("pixel_size_source") == "estimate":
        est = r.get("pixel_size_estimate")
        lines.append(f"pixel size estimated: {inp['pixel_size_used']:.4f} ± {inp['pixel_size_sigma']:.4f} Å"
                     + (f" (the columns' width alone: {est['value']:.3f} Å, ±{100 * est['sigma_ln']:.0f} %)" if est else ""))
    if r.get("energy_per_atom") is not None:
        ef = r.get("formation_energy_per_atom")
        lines.append(f"{r['potential']['name']}: E = {r['energy_per_atom']:.4f} eV/atom"
                     + (f", E_f = {ef:.3f} eV/atom" if ef is not None else "")
                     + f"; relaxation {'converged' if r['relaxation']['converged'] else 'NOT converged'}"
                     f" in {r['relaxation']['steps']} steps")
    return lines


def write_result(result: Result, image: LoadedImage, out_dir: Path) -> Path:
    """Write into a temporary sibling directory, then rename it into place: a crash leaves nothing half written."""
    from model.figure import save_overlay

    out_dir = Path(out_dir)
    final = out_dir / Path(image.path).stem
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=out_dir))
    try:
        if result.accepted:
            write_cif(result.reconstructed, tmp / "reconstructed.cif")
            if result.relaxed is not None:
                write_cif(result.relaxed, tmp / "relaxed.cif")
            save_overlay(tmp / "overlay.png", image.array, result.denoised, result.report["input"].get(
                "pixel_size_used"), result.columns_xy_px, result.model_xy_px, result.lattice_px,
                summary_lines(result))
        (tmp / "report.json").write_text(json.dumps(result.report, indent=1, default=_json_default) + "\n")
        tmp.chmod(0o755)
        if final.exists():  # a re-run replaces the old result as a whole
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=out_dir))
            final.rename(old / final.name)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
