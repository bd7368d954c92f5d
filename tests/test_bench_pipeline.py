"""bench/pipeline.py: the issue-8 benchmark set is drawn from the test split by tier, and a run goes
through Pipeline.run, resumes, and reports per tier."""
from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

ROOT = Path(__file__).resolve().parent.parent
bench = runpy.run_path(str(ROOT / "bench" / "pipeline.py"))


def test_tiers_hold_only_test_split_materials_of_their_kind():
    pools = bench["tier_pools"]()
    assert all(len(p) > 5 for p in pools.values())
    for tier, pairs in pools.items():
        for entry, _ in pairs:
            assert entry.split == "test"
            els = entry.structure.composition.elements
            if tier == "monolayer":
                assert entry.kind == "monolayer"
            else:
                assert entry.kind != "monolayer"
            if tier == "tier1":
                assert len(els) <= 2 and max(e.Z for e in els) <= 30
            if tier in ("tier2", "tier3"):
                assert len(els) >= 2
    for entry in {e.id: e for e, _ in pools["tier3"]}.values():
        assert SpacegroupAnalyzer(entry.structure, 0.1).get_crystal_system() != "cubic"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    data, results = tmp / "set", tmp / "results"

    def cli(*args):
        r = subprocess.run([sys.executable, "bench/pipeline.py", *map(str, args)], cwd=ROOT, capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-2000:]
        return r

    cli("build", "--method", "convolution", "--per-tier", "1", "--negatives", "1", "--size", "192", "--out", data)
    cli("run", "--data", data, "--results", results)
    first = (results / "set" / "full.jsonl").read_text()
    cli("run", "--data", data, "--results", results)  # resumes: nothing is redone
    cli("report", "--data", data, "--results", results)
    return first, results


def test_run_writes_one_line_per_sample_resumes_and_reports_by_tier(small_run):
    first, results = small_run
    rows = [json.loads(line) for line in (results / "set" / "full.jsonl").read_text().splitlines()]
    assert (results / "set" / "full.jsonl").read_text() == first  # the rerun appended nothing
    assert sorted(r["tier"] for r in rows) == ["monolayer", "negative", "tier1", "tier2", "tier3"]
    for r in rows:
        assert r["timings"]["total"] > 0
        if r["kind"] == "crystal":
            assert r["truth"] and (r["truth_rank"] is None or 1 <= r["truth_rank"] <= 10)
            assert r["success"] is False or (r["accepted"] and r["rmsd"] is not None and r["lattice_error"] < 0.05)
        else:
            assert r["truth"] is None and r["success"] is False
    report = json.loads((results / "set.json").read_text())
    assert report["set"]["method"] == "convolution"
    overall = report["variants"]["full"]["overall"]
    assert overall["samples"] == 5 and 0 <= overall["false_acceptance"] <= 1
    assert "| full | tier3 | 1 |" in (results / "set.md").read_text()
