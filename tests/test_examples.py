"""The examples run as documented and show what their READMEs say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _env():
    # The examples call `python` and `fairlandmark` from PATH, as a user inside the environment does.
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(cmd, cwd, timeout=600):
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def test_audit_csv_example_finds_the_planted_biases(tmp_path):
    run = _run(["bash", str(EXAMPLES / "01_audit_csv" / "run.sh"), str(tmp_path)], cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads((tmp_path / "audit.json").read_text())
    flagged = {(r["attribute"], r["keypoint"]) for r in doc["per_keypoint"] if r["significant"]}
    assert ("sex", 12) in flagged and ("sex&age", 3) in flagged
    # BH controls the false discovery *rate*, so a borderline extra keypoint may be flagged; the
    # family-wise Westfall-Young adjustment keeps only the planted ones.
    fwer = {r["keypoint"] for r in doc["per_keypoint"] if r["p_westfall_young"] < 0.05}
    assert fwer == {3, 12}
    assert doc["unit"] == "mm" and doc["n_runs"] == 10


def test_numpy_api_example(tmp_path):
    run = _run([sys.executable, str(EXAMPLES / "03_api_numpy" / "pipeline.py")], cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "age_group         5" in run.stdout  # the planted keypoint is flagged
    assert "keypoint(s) with a significant DP above 0.10" in run.stdout


def test_ci_gate_example_fails_on_the_demo_as_its_readme_says(tmp_path):
    demo = _run([sys.executable, "-m", "fairlandmark.cli", "demo", "--out", str(tmp_path / "study"), "--quiet",
                 "--permutations", "2000", "--bootstrap", "200"], cwd=ROOT)
    assert demo.returncode == 0, demo.stderr[-2000:]
    junit = tmp_path / "gate.xml"
    gate = _run([sys.executable, "-m", "fairlandmark.cli", "gate", str(tmp_path / "study" / "audit.json"),
                 "--config", str(EXAMPLES / "04_ci_gate" / "fairlandmark.toml"), "--junit", str(junit)], cwd=ROOT)
    assert gate.returncode == 1, gate.stderr[-2000:]
    import xml.etree.ElementTree as ET

    failures = [case for case in ET.parse(junit).iter("testcase") if case.find("failure") is not None]
    assert failures and all(("3" in case.get("name", "") or "12" in case.get("name", "")) for case in failures)


@pytest.mark.slow
@pytest.mark.torch
def test_full_study_example_quick(tmp_path):
    pytest.importorskip("segmentation_models_pytorch")
    env_out = tmp_path / "out"
    run = subprocess.run(["bash", str(EXAMPLES / "02_full_study" / "run.sh"), "--quick"], cwd=ROOT,
                         env={**_env(), "OUT": str(env_out)}, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    for name in ("vanilla.json", "mitigated.json", "privacy.json", "control.json", "compare.md", "report.html",
                 "report_vanilla.html"):
        assert (env_out / name).stat().st_size > 0, name
    vanilla = json.loads((env_out / "vanilla.json").read_text())
    assert vanilla["privacy"] is not None
    # The planted keypoint has the largest DP for sex, and its gap is significant after correction. (Not the
    # largest MRE gap: on torch 2.14.1 / Intel Xeon the quick preset's short-trained model gives keypoint 5 an MRE
    # gap of 0.56 mm from a few outliers, p_adj 0.44, against keypoint 3's DP 0.54, p_adj 0.0015; on torch 2.15 /
    # AMD EPYC keypoint 3 also had the largest MRE gap. The code trains bit-identically on one build: bisected
    # 2026-11-30.)
    sex = {r["keypoint"]: r for r in vanilla["per_keypoint"] if r["attribute"] == "sex"}
    assert max(sex.values(), key=lambda r: r["dp"])["keypoint"] == 3, sex
    assert sex[3]["significant"], sex[3]
