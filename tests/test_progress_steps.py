"""The progress line of reading and checking a study: its steps, in order, and nothing where no one looks."""

from __future__ import annotations

import numpy as np
import pytest
from test_audit_numbers import random_study

from fairlandmark.cli import main
from fairlandmark.inputs.study import prepare_study
from fairlandmark.progress import progress_steps


class Recorder:
    """A stand-in for ``rich.progress.Progress`` that keeps every description it is given."""

    def __init__(self):
        self.descriptions = []

    def add_task(self, description, total=None):
        self.descriptions.append(description)
        return 0

    def update(self, task, description=None):
        self.descriptions.append(description)

    def remove_task(self, task):
        self.descriptions.append("(removed)")

    def advance(self, task, advance=1):
        pass


@pytest.fixture
def files(tmp_path):
    preds, meta = random_study(3, runs=["h1", "h2"])
    p, m = tmp_path / "[red]preds.csv", tmp_path / "meta.csv"  # a file name that reads as rich markup
    preds.to_csv(p, index=False)
    meta.to_csv(m, index=False)
    return p, m, preds


def test_the_steps_name_the_files_and_the_sizes_in_order(files):
    p, m, preds = files
    recorder = Recorder()
    study = prepare_study(str(p), str(m), attributes=["sex"], spacing_mm=0.1, progress=recorder)
    n_rows, n_kp = study.errors.shape
    assert n_rows * n_kp == len(preds)  # every line is one (row, keypoint)
    assert recorder.descriptions == [
        f"Reading {p.name}",
        f"Checking the ids of {len(preds):,} lines (duplicates, missing keypoints)",
        f"Arranging the coordinates of {n_rows:,} rows",
        "Computing the radial errors",
        f"Reading {m.name} and matching its images",
        "Encoding the groups",
        "(removed)",  # the caller's display goes on without the steps' line
    ]


def test_the_steps_change_no_number(files):
    p, m, _ = files
    quiet = prepare_study(str(p), str(m), attributes=["sex"], spacing_mm=0.1)
    shown = prepare_study(str(p), str(m), attributes=["sex"], spacing_mm=0.1, progress=Recorder())
    np.testing.assert_array_equal(quiet.errors, shown.errors)
    np.testing.assert_array_equal(quiet.coding.base_codes["sex"], shown.coding.base_codes["sex"])


def test_a_terminal_sees_the_step_with_user_text_as_text(files, monkeypatch, capsys):
    p, m, _ = files
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich 14+: standard error counts as a terminal
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich 13
    prepare_study(str(p), str(m), attributes=["sex"], spacing_mm=0.1, progress=True)
    err = capsys.readouterr().err
    assert "Reading [red]preds.csv" in err  # the first step, its file name as typed, not read as a colour
    assert "Encoding the groups" in err  # the last step; the line is cleared at the end (transient)


def test_no_terminal_no_output(files, capsys):
    p, m, _ = files
    with progress_steps(True) as step:
        step("Reading x")
    prepare_study(str(p), str(m), attributes=["sex"], spacing_mm=0.1, progress=True)
    assert capsys.readouterr().err == ""


def test_the_command_line_leaves_no_empty_lines_in_a_log(files, capsys):
    """Redirected to a file, standard error holds the warnings only: no trace of a transient line or bar."""
    p, m, _ = files
    code = main(["audit", str(p), str(m), "-a", "sex", "--spacing-mm", "0.1", "--permutations", "20",
                 "--bootstrap", "0", "--baseline-repeats", "0"])
    assert code == 0
    err = capsys.readouterr().err
    assert "\n\n" not in err and not err.startswith("\n")


def test_quiet_and_the_api_default_show_nothing(files, monkeypatch, capsys):
    p, m, _ = files
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")
    prepare_study(str(p), str(m), attributes=["sex"], spacing_mm=0.1)
    assert "Reading" not in capsys.readouterr().err
    main(["audit", str(p), str(m), "-a", "sex", "--spacing-mm", "0.1", "--no-significance", "--quiet"])
    assert "Reading" not in capsys.readouterr().err
    main(["audit", str(p), str(m), "-a", "sex", "--spacing-mm", "0.1", "--no-significance"])
    assert "Encoding the groups" in capsys.readouterr().err


def test_the_point_estimates_name_their_steps_and_change_no_number(files):
    from fairlandmark.audit import run_audit

    p, m, _ = files
    study = prepare_study(str(p), str(m), attributes=["sex"], spacing_mm=0.1)
    recorder = Recorder()
    shown = run_audit(study, significance=False, emit_warnings=False, progress=recorder)
    assert recorder.descriptions == [
        f"Summing hits and errors per group ({study.errors.shape[0]:,} rows)",
        "(removed)",
        "Computing the error curves",
        "(removed)",
    ]
    quiet = run_audit(study, significance=False, emit_warnings=False)
    assert shown.to_json() == quiet.to_json()


def test_a_callers_display_keeps_going_without_the_steps_line(files):
    import io

    from rich.console import Console
    from rich.progress import Progress

    p, m, _ = files
    display = Progress(console=Console(file=io.StringIO(), force_terminal=True))
    with display:
        mine = display.add_task("the caller's own work", total=2)
        prepare_study(str(p), str(m), attributes=["sex"], spacing_mm=0.1, progress=display)
        assert [t.id for t in display.tasks] == [mine]


def test_the_facade_and_privacy_pass_progress_on(files):
    import warnings

    from fairlandmark import audit
    from fairlandmark.stats.privacy import attribute_inference

    p, m, preds = files
    recorder = Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audit(str(p), str(m), attributes=["sex"], spacing_mm=0.1, significance=False, progress=recorder)
    assert recorder.descriptions[0] == f"Reading {p.name}" and "Computing the error curves" in recorder.descriptions
    recorder = Recorder()
    attribute_inference(str(p), str(m), target="sex", spacing_mm=0.1, n_permutations=0, n_splits=2, progress=recorder)
    assert recorder.descriptions[:2] == [f"Reading {p.name}", f"Checking the ids of {len(preds):,} lines (duplicates, missing keypoints)"]


@pytest.mark.parametrize("value", [1, "yes", object()])
def test_progress_that_is_not_a_display_is_one_line(files, value):
    from fairlandmark import InputError, audit

    p, m, _ = files
    with pytest.raises(InputError, match="progress: give True, False or a rich.progress.Progress"):
        prepare_study(str(p), str(m), attributes=["sex"], spacing_mm=0.1, progress=value)
    with pytest.raises(InputError, match="progress: give True, False"):
        audit(str(p), str(m), attributes=["sex"], spacing_mm=0.1, significance={"progress": value, "permutations": 10})


def test_no_progress_and_numpy_booleans_are_accepted(files):
    from fairlandmark.progress import NoProgress

    p, m, _ = files
    for value in (NoProgress(), np.True_, np.False_):
        prepare_study(str(p), str(m), attributes=["sex"], spacing_mm=0.1, progress=value)
