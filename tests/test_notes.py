"""Notes for the user travel as data: made once by a check, shown once, spelled for their reader.

Input checks inside ``prepare_study`` append to the study's notes instead of warning; the facade issues each
note once as a FairlandmarkWarning (API names), and the command line prints each once with its flags.
"""
from __future__ import annotations

import importlib
import warnings

import numpy as np
import pandas as pd
import pytest

from fairlandmark import audit
from fairlandmark.cli.main import main
from fairlandmark.exceptions import FairlandmarkWarning
from fairlandmark.inputs.schema import check_metadata, check_predictions
from fairlandmark.inputs.study import prepare_study


def _inputs(n: int = 24, extra_meta: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    ids = [f"im{i:03d}" for i in range(n)]
    rows = [{"run": 0, "image_id": i, "keypoint": k, "pred_x": rng.normal(0, 2), "pred_y": 0.0,
             "true_x": 0.0, "true_y": 0.0} for i in ids for k in (1, 2)]
    # A group of two images is below min_group_size=3: a note naming that option.
    site = ["A"] * (n - 2) + ["B"] * 2
    meta = pd.DataFrame({"image_id": ids + [f"unused{j}" for j in range(extra_meta)],
                         "site": site + ["A"] * extra_meta})
    return pd.DataFrame(rows), meta


def _fairlandmark_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, FairlandmarkWarning)]


def test_checks_called_alone_still_warn():
    preds, meta = _inputs()
    with pytest.warns(FairlandmarkWarning, match="2 metadata row"):
        check_metadata(meta, image_ids=preds["image_id"].unique())
    both = preds.assign(error_mm=1.0)
    with pytest.warns(FairlandmarkWarning, match="error_mm"):
        check_predictions(both)


def test_checks_given_a_list_append_instead_of_warning():
    preds, meta = _inputs()
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", FairlandmarkWarning)  # any warning would fail the test
        check_predictions(preds.assign(error_mm=1.0), notes=notes)
        check_metadata(meta, image_ids=preds["image_id"].unique(), notes=notes)
    assert len(notes) == 2 and "error_mm" in notes[0] and "2 metadata row(s)" in notes[1]


def test_prepare_study_warns_nothing_and_keeps_the_notes():
    preds, meta = _inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FairlandmarkWarning)
        study = prepare_study(preds, meta, attributes=["site"], spacing_mm=1.0)
    assert len(study.notes) == 1 and "2 metadata row(s) have no predictions" in study.notes[0]


def test_audit_issues_each_note_once_spelled_for_python():
    preds, meta = _inputs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FairlandmarkWarning)
        res = audit(preds, meta, attributes=["site"], spacing_mm=1.0, min_group_size=3, significance=False,
                    curves=False)
    shown = _fairlandmark_warnings(caught)
    assert shown == res.warnings  # once each, in order, nothing else
    assert len(shown) == 2
    assert "below min_group_size=3" in shown[1] and "«" not in "".join(shown)
    assert "«min_group_size»" in res.notes[1]  # kept marked for other spellings
    assert res.to_dict()["warnings"] == res.warnings


def test_audit_can_leave_the_notes_in_the_result_only():
    preds, meta = _inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FairlandmarkWarning)
        res = audit(preds, meta, attributes=["site"], spacing_mm=1.0, min_group_size=3, significance=False,
                    curves=False, emit_warnings=False)
    assert len(res.warnings) == 2


def test_cli_prints_each_note_once_with_its_flags(tmp_path, capsys):
    preds, meta = _inputs()
    p, m = tmp_path / "p.csv", tmp_path / "m.csv"
    preds.to_csv(p, index=False)
    meta.to_csv(m, index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["audit", str(p), str(m), "-a", "site", "--spacing-mm", "1", "--min-group-size", "3",
                     "--permutations", "0", "--bootstrap", "0", "--no-curves"])
    assert code == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert text.count("2 metadata row(s) have no predictions") == 1
    assert text.count("below --min-group-size=3") == 1
    assert "min_group_size" not in text and "«" not in text
    assert not _fairlandmark_warnings(caught)  # printed by the command, not raised past it


def test_cli_shows_a_stray_warning_as_one_plain_line(capsys, monkeypatch):
    cli_main = importlib.import_module("fairlandmark.cli.main")

    def stray(args):
        warnings.warn(FairlandmarkWarning("«spacing_mm» was guessed"), stacklevel=1)
        return 0

    monkeypatch.setattr(cli_main, "build_parser", _parser_with(stray))
    assert main(["stray"]) == 0
    assert capsys.readouterr().err == "warning: --spacing-mm was guessed\n"


def _parser_with(handler):
    import argparse

    def build() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog="fairlandmark")
        sub = parser.add_subparsers()
        stray = sub.add_parser("stray")
        stray.set_defaults(handler=handler)
        return parser

    return build


def test_warnings_point_at_the_callers_line_and_privacy_notes_join_once():
    from fairlandmark import audit_arrays

    preds, meta = _inputs(n=40, extra_meta=0)
    preds.loc[0, ["pred_x", "pred_y"]] = np.nan  # a missing prediction: the audit's note and privacy's own note
    meta["site"] = ["A", "B"] * 20
    privacy = {"n_permutations": 0, "n_repeats": 1, "n_splits": 2}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FairlandmarkWarning)
        res = audit(preds, meta, attributes=["site"], spacing_mm=1.0, significance=False, curves=False,
                    privacy=privacy)
    shown = [w for w in caught if issubclass(w.category, FairlandmarkWarning)]
    assert [str(w.message) for w in shown] == res.warnings
    assert all(w.filename == __file__ for w in shown)  # the user's line, not the library's
    assert sum("missing prediction" in t for t in res.warnings) == 2  # the audit's policy and the classifier's
    assert len(set(res.warnings)) == len(res.warnings)
    pred = np.zeros((20, 2, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FairlandmarkWarning)
        audit_arrays(pred, pred, {"g": ["a"] * 19 + ["b"]}, spacing_mm=1.0, significance=False, curves=False)
    assert caught and all(w.filename == __file__ for w in caught)


def test_cli_audit_with_privacy_prints_each_note_once(tmp_path, capsys):
    preds, meta = _inputs(n=40, extra_meta=1)
    preds.loc[0, ["pred_x", "pred_y"]] = np.nan
    meta["site"] = ["A", "B"] * 20 + ["A"]
    p, m = tmp_path / "p.csv", tmp_path / "m.csv"
    preds.to_csv(p, index=False)
    meta.to_csv(m, index=False)
    for quiet in ([], ["-q"]):
        code = main(["audit", str(p), str(m), "-a", "site", "--spacing-mm", "1", "--permutations", "0",
                     "--bootstrap", "0", "--no-curves", "--privacy", "--privacy-permutations", "0",
                     "--privacy-folds", "2", *quiet])
        assert code == 0
        out = capsys.readouterr()
        text = out.out + out.err
        assert text.count("1 metadata row(s) have no predictions") == 1, quiet
        assert text.count("replaced by the median error") == 1, quiet  # the privacy section's own note


def test_overlapping_runs_get_a_note_on_small_strata_and_hold_outs_do_not():
    rng = np.random.default_rng(5)
    ids = [f"im{i:03d}" for i in range(60)]
    meta = pd.DataFrame({"image_id": ids, "sex": ["F", "M"] * 30})

    def study(runs):
        rows = [{"run": r, "image_id": i, "keypoint": 1, "pred_x": rng.normal(0, 2), "pred_y": 0.0,
                 "true_x": 0.0, "true_y": 0.0} for r, members in enumerate(runs) for i in members]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FairlandmarkWarning)
            return audit(pd.DataFrame(rows), meta, attributes=["sex"], spacing_mm=1.0, min_group_size=3,
                         significance={"permutations": 20, "bootstrap": 0, "baseline_repeats": 0}, curves=False)

    # Three cross-validation-like repeats of 30 random test images each: many strata of one or two images.
    repeats = [list(rng.choice(ids, 30, replace=False)) for _ in range(3)]
    assert any("little power" in t for t in study(repeats).warnings)
    assert not any("little power" in t for t in study([ids[:30], ids[30:]]).warnings)  # hold-outs
    assert not any("little power" in t for t in study([ids, ids]).warnings)  # identical runs: one stratum
