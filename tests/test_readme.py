"""Every command in the README runs as written on the demo study.

The README's commands use the demo study's paths (``demo_study/preds.csv``)
and write under ``out/`` and ``demo/``. This test builds a small demo study in a
temporary folder laid out like the repository root, then runs each
``fairlandmark`` command in README order (resampling counts cut for speed by
flags appended after the command's own, which argparse lets win), and executes
the Python blocks. Commands whose inputs are your own files (``convert``'s wide
and COCO files, ``preds.csv``/``meta.csv``, DICOM ``scans/``) run in a second
test on small files made here under those names, and the reference model's
commands (``fairlandmark-train``, torch) in a third, in README order.
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
    """The README's fenced blocks of one kind, list items' indented blocks included (indent removed)."""
    blocks = re.findall(rf"^( *)```{kind}\n(.*?)^ *```", README.read_text(), flags=re.S | re.M)
    return [re.sub(rf"^{indent}", "", body, flags=re.M) for indent, body in blocks]


def readme_commands(program="fairlandmark"):
    """Each ``program ...`` command of the bash blocks, as argv (continuations joined, comments dropped)."""
    out = []
    for block in readme_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] == program:
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


def _own_files(root):
    """Small stand-ins for the files the README's own-input commands name, written under those names."""
    import json

    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(3)
    n, k = 40, 19  # ISBI 2015: 19 landmarks, coordinates in mm
    ids = [f"{i:03d}" for i in range(1, n + 1)]
    senior = rng.uniform(20, 180, (n, k, 2)).round(2)
    junior = (senior + rng.normal(0, 1.5, senior.shape)).round(2)

    def wide(path, coords, image_ids):
        frame = pd.DataFrame(coords.reshape(len(image_ids), -1), columns=[f"{a}{j}" for j in range(1, k + 1)
                                                                           for a in "xy"])
        frame.insert(0, "id", image_ids)
        frame.to_csv(root / path, index=False)

    wide("senior.csv", senior, ids)
    wide("junior.csv", junior, ids)
    wide("truth.csv", senior, ids)
    wide("h1.csv", junior[: n // 2], ids[: n // 2])  # each hold-out predicts its own test images
    wide("h2.csv", junior[n // 2:], ids[n // 2:])
    pd.DataFrame({"image_id": ids, "sex": ["F", "M"] * (n // 2), "site": ["A"] * (n // 2) + ["B"] * (n // 2),
                  "pixel_spacing": rng.choice([0.1, 0.12], n)}).to_csv(root / "meta.csv", index=False)

    names = [f"L{j}" for j in range(1, 4)]
    images = [{"id": 100 + i, "file_name": f"{100 + i}.png", "width": 512, "height": 512,
               "sex": "F" if i % 2 else "M", "age": int(rng.integers(9, 19))} for i in range(n)]
    truth = rng.uniform(50, 450, (n, 3, 2)).round(1)
    pred = (truth + rng.normal(0, 8, truth.shape)).round(2)
    visible = np.full((n, 3, 1), 2.0)
    gt = {"images": images, "categories": [{"id": 1, "name": "skull", "keypoints": names}],
          "annotations": [{"id": 1000 + i, "image_id": 100 + i, "category_id": 1, "area": 1000.0, "iscrowd": 0,
                           "keypoints": np.concatenate([truth[i], visible[i]], axis=1).ravel().tolist()}
                          for i in range(n)]}
    results = [{"image_id": 100 + i, "category_id": 1, "score": 0.9,
                "keypoints": np.concatenate([pred[i], visible[i] / 2], axis=1).ravel().tolist()} for i in range(n)]
    (root / "gt_coco.json").write_text(json.dumps(gt))
    (root / "results.json").write_text(json.dumps(results))
    return [img["id"] for img in images]


def test_readme_commands_on_your_own_files_run_as_written(tmp_path, monkeypatch, capsys):
    """convert (wide, several runs, COCO), the measurement, adjusted and DICOM audits, and plan, in README order."""
    pytest.importorskip("pydicom")
    pytest.importorskip("statsmodels")
    from test_dicom import write_dicom

    monkeypatch.chdir(tmp_path)
    coco_ids = _own_files(tmp_path)
    run_after_coco = False
    ran = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        for argv in readme_commands():
            inputs = _inputs(argv)
            if any(p.startswith(("demo_study/", "out/", "demo/")) for p in inputs):
                continue  # the demo-study and reference-model commands: the other two tests
            if "--spacing-from-dicom" in argv:
                (tmp_path / "scans").mkdir(exist_ok=True)
                for image in coco_ids:
                    write_dicom(tmp_path / "scans" / f"{image}.dcm", pixel=[0.1, 0.1])
                run_after_coco = True
            rc = main([*argv, *FAST.get(argv[0], [])])
            err = capsys.readouterr().err
            assert rc == 0, (argv, err[-2000:])
            ran.append(argv[0])
    assert ran.count("convert") == 4 and ran.count("audit") == 3 and ran.count("plan") == 2 and run_after_coco
    for path in ("preds.csv", "audit.json", "report.html", "plan.png"):
        assert (tmp_path / path).stat().st_size > 0, path


def test_readme_reference_model_commands_run_as_written(tmp_path, monkeypatch, capsys):
    """The reference model's try-it block (synthetic data, quick hold-outs with GroupDRO, two audits, compare)."""
    pytest.importorskip("torch")
    pytest.importorskip("segmentation_models_pytorch")
    from reference_model.cli import main as train_main

    monkeypatch.chdir(tmp_path)
    train = readme_commands("fairlandmark-train")
    assert [argv[0] for argv in train] == ["synth", "holdouts"]
    for argv in train:
        assert train_main(argv) == 0, argv
    assert (tmp_path / "demo/study/predictions_mitigated.csv").exists()
    ran = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        for argv in readme_commands():
            inputs = _inputs(argv)
            if not inputs or not all(p.startswith("demo/") for p in inputs) or argv[0] == "report":
                continue
            if not all(os.path.exists(p) for p in inputs):
                continue  # compare before its audits: the README's own order runs the audits first
            rc = main([*argv, *FAST.get(argv[0], [])])
            assert rc == 0, (argv, capsys.readouterr().err[-2000:])
            ran += 1
    assert ran >= 3 and (tmp_path / "demo/vanilla.json").exists() and (tmp_path / "demo/mitigated.json").exists()
