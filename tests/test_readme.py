"""Every command in the README runs as written on the demo study.

The README's commands use the demo study's paths (``demo_study/preds.csv``)
and write under ``out/`` and ``demo/``. This test builds a small demo study in a
temporary folder laid out like the repository root, then runs each
``fairlandmark`` command in README order (resampling counts cut for speed by
flags appended after the command's own, which argparse lets win), and executes
the Python blocks. Commands whose inputs come from elsewhere (your own wide
files for ``convert``, the reference model's ``demo/study`` that needs torch)
are parsed, so a stale flag still fails.
"""

from __future__ import annotations

import os
import re
import shlex
import warnings
from pathlib import Path

import pytest

from fairlandmark.cli import main
from fairlandmark.cli.main import build_parser
from fairlandmark.exceptions import FairlandmarkWarning

README = Path(__file__).resolve().parents[1] / "README.md"
FAST = {"audit": ["--permutations", "200", "--bootstrap", "50", "--baseline-repeats", "20"],
        "privacy": ["--permutations", "0", "--trees", "10", "--repeats", "1", "--n-jobs", "1"]}
INPUT_OPTIONS = {"--pred", "--truth", "--baseline", "--config"}


def readme_blocks(kind):
    return re.findall(rf"^```{kind}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def readme_commands():
    """Each ``fairlandmark ...`` command of the bash blocks, as argv (continuations joined, comments dropped)."""
    out = []
    for block in readme_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] == "fairlandmark":
                out.append(argv[1:])
    return out


def test_readme_has_the_commands_and_every_one_parses():
    commands = readme_commands()
    assert {c[0] for c in commands} >= {"audit", "convert", "privacy", "report", "compare", "gate"}
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)  # SystemExit on an unknown or malformed option
    assert "age_group" not in README.read_text()  # the demo data has sex and age


def _inputs(argv):
    paths = [a for a in argv[1:] if not a.startswith("-") and a.endswith((".csv", ".json"))]
    positional = [a for a, prev in zip(argv[1:], argv[:-1]) if not a.startswith("-") and
                  (not prev.startswith("-") or prev in INPUT_OPTIONS)]
    return [p for p in paths if p in positional]


@pytest.fixture
def demo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--out", "demo_study", "--images", "120", "--runs", "2", "--permutations", "50",
                 "--bootstrap", "20", "-q"]) == 0
    # Stand-ins for the reference model demo's two audits (same keypoints, so they compare).
    base = ["audit", "demo_study/preds.csv", "demo_study/meta.csv", "-a", "sex", "--wrist-width", "1,5,50",
            "--min-group-size", "5", "-q", *FAST["audit"]]
    assert main([*base, "--json", "demo/vanilla.json"]) == 0
    assert main([*base, "--threshold-mm", "2.5", "--json", "demo/mitigated.json"]) == 0
    return tmp_path


def test_readme_commands_run_as_written(demo_root, capsys):
    ran = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        for argv in readme_commands():
            missing = [p for p in _inputs(argv) if not os.path.exists(p)]
            if missing:
                # Your own files (convert's wide files, the reference model's demo/study, other sections' own
                # inputs): parsed above, not run here. Commands on the demo study never get here.
                assert not any(p.startswith(("demo_study/", "out/")) for p in missing), (argv, missing)
                continue
            rc = main([*argv, *FAST.get(argv[0], [])])
            err = capsys.readouterr().err
            assert rc in ((0, 1) if argv[0] == "gate" else (0,)), (argv, err[-2000:])
            ran.add(argv[0])
    assert ran >= {"audit", "privacy", "report", "compare", "gate"}
    for path in ("out/audit.json", "out/audit.csv", "out/audit.html", "out/summary.md", "out/privacy.json",
                 "out/report.html", "out/gate.xml", "out/gate.md"):
        assert (demo_root / path).stat().st_size > 0, path
    assert list((demo_root / "out" / "figs").glob("*.svg"))

    # The Python blocks, in order, on the files the commands wrote (significance cut for speed).
    import fairlandmark.stats.significance as sig

    for block in readme_blocks("python"):
        if "fairlandmark.audit(" in block:
            block = block.replace("permutations=10000, bootstrap=2000", "permutations=200, bootstrap=50")
        namespace: dict = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FairlandmarkWarning)
            exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
        if "res" in namespace and hasattr(namespace["res"], "per_keypoint"):
            cols = namespace["res"].per_keypoint[["p_adjusted", "significant"]]
            assert len(cols) and cols["p_adjusted"].notna().all()
    assert sig  # imported for the API block's SignificanceOptions
