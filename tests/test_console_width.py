"""What people see first: findings in words, tables that fit the terminal, warnings once.

The terminal checks run ``fairlandmark audit`` in a pseudo-terminal of 80, 100
and 120 columns (the width rich reads from the terminal itself) and check
that no number is shortened ("…"), that every keypoint of every attribute is
shown, and that the findings come first and last.
"""

from __future__ import annotations

import os
import pty
import re
import shlex
import struct
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import fairlandmark
from fairlandmark.cli.main import build_parser
from fairlandmark.document import keypoint_frame, load_audit, top_gaps
from fairlandmark.exceptions import FairlandmarkWarning
from fairlandmark.findings import findings, findings_text
from fairlandmark.inputs.demo_data import make_demo_study
from fairlandmark.render.console import collapse_warnings

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
N_KEYPOINTS = 37


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    preds, meta = make_demo_study(n_images=160, n_runs=2, seed=3)
    p, m = folder / "preds.csv", folder / "meta.csv"
    preds.to_csv(p, index=False)
    meta.to_csv(m, index=False)
    return p, m


def _audit_command(p, m, *extra):
    return [sys.executable, "-m", "fairlandmark.cli", "audit", str(p), str(m), "-a", "sex", "-a", "age",
            "--bin", "age=14", "--wrist-width", "1,5,50", "--family", "wrist=1-18", "--family", "fingers=19-37",
            "--permutations", "100", "--bootstrap", "50", "--baseline-repeats", "20", "--min-group-size", "5",
            *extra]


def run_in_pty(cmd, columns, rows=50):
    """stdout of ``cmd`` run on a pseudo-terminal of ``columns`` x ``rows``; stderr is piped apart."""
    import fcntl
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    return ANSI.sub("", b"".join(chunks).decode().replace("\r\n", "\n"))


def keypoints_shown(text, attribute):
    """Keypoints in the first column of the attribute's first table (the one with the family)."""
    start = text.index(f"{attribute}: SDR@")
    block = text[start:].split("\n└", 1)[0]
    return {int(m.group(1)) for m in re.finditer(r"^│\s*(\d+)\s*│", block, re.M)}


@pytest.mark.parametrize("columns", [80, 100, 120])
def test_tables_fit_the_terminal_and_nothing_is_cut(demo_files, columns):
    text = run_in_pty(_audit_command(*demo_files), columns)
    assert "…" not in text
    table_lines = [line for line in text.splitlines() if line[:1] in "┏┃┡│└"]
    assert table_lines and max(len(line) for line in table_lines) <= columns
    for attribute in ("sex", "age", "sex&age"):
        assert keypoints_shown(text, attribute) == set(range(1, N_KEYPOINTS + 1)), attribute
    # Findings first and last: nothing but the findings after the final heading.
    assert text.lstrip().startswith("Findings")
    tail = text[text.rindex("Findings (as above)"):]
    assert "Largest gap:" in tail and "┃" not in tail
    # Every p adj value is whole (4 decimals or scientific), with its star where significant.
    assert not re.search(r"\b0\.\d{1,3}…", text)


def test_columns_honoured_when_piped(demo_files):
    env = {**os.environ, "COLUMNS": "80"}
    run = subprocess.run(_audit_command(*demo_files), capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert max(len(line) for line in run.stdout.splitlines()) <= 80
    assert "…" not in run.stdout


def test_quiet_prints_only_the_findings(demo_files):
    env = {**os.environ, "COLUMNS": "100"}
    run = subprocess.run(_audit_command(*demo_files, "-q"), capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Findings") and "Largest gap:" in run.stdout
    assert "┃" not in run.stdout and "│" not in run.stdout


def test_demo_command_is_one_pasteable_line(tmp_path):
    env = {**os.environ, "COLUMNS": "60"}
    out = tmp_path / "demo out"  # a space: the command must quote it
    run = subprocess.run([sys.executable, "-m", "fairlandmark.cli", "demo", "--out", str(out), "--images", "120",
                          "--runs", "2", "--permutations", "50", "--bootstrap", "20", "-q"],
                         capture_output=True, text=True, env=env, timeout=180)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    command = lines[lines.index(next(x for x in lines if x.startswith("Same audit"))) + 1]
    argv = shlex.split(command)
    assert argv[:2] == ["fairlandmark", "audit"]
    args = build_parser().parse_args(argv[1:])  # every argument is whole and known
    assert args.json == str(out / "audit.json") and args.csv == str(out / "audit.csv")
    assert args.predictions == str(out / "preds.csv")


# -- findings ------------------------------------------------------------------------------------------------
def _doc(records, **extra):
    return {"schema_version": "1.0", "attributes": sorted({r["attribute"] for r in records}),
            "keypoints": sorted({r["keypoint"] for r in records}), "per_keypoint": records,
            "significance": {"alpha": 0.05, "correction": "bh"}, **extra}


def _rec(attribute, keypoint, dp, p_adj, chance, pair=("F", "M")):
    return {"attribute": attribute, "keypoint": keypoint, "dp": dp, "pair": list(pair), "p_value": p_adj / 2,
            "p_adjusted": p_adj, "significant": p_adj < 0.05, "baseline_mean": chance}


def test_findings_name_each_significant_pair_ranked_by_evidence():
    doc = _doc([_rec("sex", 1, 0.10, 0.01, 0.05), _rec("sex&age", 1, 0.30, 0.20, 0.25, ("F&old", "M&young")),
                _rec("age", 2, 0.15, 0.01, 0.04, ("old", "young")), _rec("sex", 2, 0.02, 0.9, 0.05)])
    items = findings(doc)
    assert [f.kind for f in items] == ["significant_header", "significant", "significant", "largest_gap"]
    assert items[0].text.startswith("2 of 4 (attribute, keypoint) gaps are significant (adjusted p < 0.05, bh)")
    # Same adjusted p: the larger DP above chance (0.11 > 0.05) comes first.
    assert items[1].text.strip() == "age, keypoint 2: DP 0.150 (old vs young), chance 0.040, adjusted p 0.0100"
    assert items[2].attribute == "sex" and items[2].keypoint == 1
    assert items[3].text == ("Largest gap: sex&age, keypoint 1: DP 0.300 (F&old vs M&young), chance 0.250, "
                             "not significant (adjusted p 0.2000).")


def test_findings_when_nothing_is_significant_or_no_significance():
    doc = _doc([_rec("sex", 1, 0.02, 0.6, 0.05), _rec("sex", 2, 0.0, 1.0, 0.05)])
    text = findings_text(doc).splitlines()
    assert text[0] == "No (attribute, keypoint) gap is significant after correction (2 tested, adjusted p < 0.05, bh)."
    plain = {"schema_version": "1.0", "attributes": ["sex"], "keypoints": [1],
             "per_keypoint": [{"attribute": "sex", "keypoint": 1, "dp": 0.0, "pair": ["F", "M"]}]}
    lines = findings_text(plain).splitlines()
    assert lines[0].startswith("Significance was not computed")
    assert lines[1] == "Largest gap: sex, keypoint 1: DP 0.000 (no gap)."  # no pair named at DP 0


def test_findings_report_a_privacy_leak():
    doc = _doc([_rec("sex", 1, 0.02, 0.6, 0.05)], privacy={"attributes": {"sex": {"analyses": [
        {"attribute": "sex", "balanced_accuracy": 0.71, "chance": 0.5, "p_value": 0.001, "leak": True,
         "risk_line": "errors predict sex with balanced accuracy 0.71 (chance 0.50, p 0.001)"}]}}})
    leak = [f for f in findings(doc) if f.kind == "privacy"]
    assert len(leak) == 1 and leak[0].alarm and "errors predict sex" in leak[0].text


def test_top_gaps_rank_by_evidence_and_show_no_pair_at_zero():
    doc = load_audit(_doc([_rec("sex&age", 1, 0.40, 0.30, 0.35), _rec("sex", 1, 0.12, 0.02, 0.05),
                           _rec("sex", 2, 0.0, 1.0, 0.05)]))
    gaps = top_gaps(doc, 3)
    assert list(gaps["attribute"]) == ["sex", "sex&age", "sex"]
    assert gaps["dp_above_chance"].tolist() == pytest.approx([0.07, 0.05, -0.05])
    assert keypoint_frame(doc)["pair"].tolist() == ["F vs M", "F vs M", ""]


# -- warnings ------------------------------------------------------------------------------------------------
def test_unbinned_numeric_attribute_gives_one_line_and_a_bin_hint():
    rng = np.random.default_rng(0)
    n = 120
    pred, true = rng.normal(0, 2, (n, 3, 2)), np.zeros((n, 3, 2))
    runs = np.repeat(np.arange(4), n // 4)
    ages = rng.integers(6, 16, n)  # 10 ages over 4 runs: every group small in some run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        res = fairlandmark.audit_arrays(pred, true, {"age": ages}, runs=runs, spacing_mm=1.0, significance=False)
    assert len(res.warnings) == 2, res.warnings
    small, hint = res.warnings
    assert small.startswith("attribute 'age': 10 group(s) fall below min_group_size=10 in 40 (group, run) case(s)")
    assert "--bin age=" in hint and "bins={'age': [" in hint
    assert collapse_warnings(["x", "y", "x", "x"]) == ["x (x3)", "y"]


def test_findings_wrap_under_their_item_and_keep_numbers_with_labels():
    """Issue 15: a finding about an intersection group no longer breaks 'adjusted p' from its number at 80 columns."""
    import io

    from rich.console import Console

    from fairlandmark.findings import Finding
    from fairlandmark.render.console import render_findings, wrap_finding

    long = "  sex&age, keypoint 3: DP 0.469 (F&age<14 vs F&age>=14), chance 0.197, adjusted p 0.0111"
    short = "  sex, keypoint 12: DP 0.197 (F vs M), chance 0.078, adjusted p 0.0111"
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False, color_system=None)
    render_findings([Finding(kind="significant", text=long), Finding(kind="significant", text=short)], console)
    lines = out.getvalue().splitlines()
    assert lines == ["Findings",
                     "  sex&age, keypoint 3: DP 0.469 (F&age<14 vs F&age>=14), chance 0.197,",
                     "      adjusted p 0.0111",
                     short]
    # Whatever the width, no word is lost or split, and every continuation is indented under its item.
    for width in range(30, 100):
        wrapped = wrap_finding(long, width)
        assert " ".join(line.strip() for line in wrapped) == long.strip()
        assert all(line.startswith("      ") for line in wrapped[1:])
        assert all(len(line) <= width for line in wrapped)
