"""A "wrote PATH" line appears only once the file is in place: a run that fails later claims nothing."""
from __future__ import annotations

import numpy as np
import pandas as pd

import fairlandmark.cli.report as cli_report
from fairlandmark.cli.main import main
from fairlandmark.exceptions import InputError
from fairlandmark.files import OutputSet, atomic_write_text, when_written


def _study(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"im{i:02d}" for i in range(20)]
    preds = pd.DataFrame([{"run": 0, "image_id": i, "keypoint": 1, "pred_x": rng.normal(0, 2), "pred_y": 0.0,
                           "true_x": 0.0, "true_y": 0.0} for i in ids])
    meta = pd.DataFrame({"image_id": ids, "sex": ["F", "M"] * 10})
    p, m = tmp_path / "p.csv", tmp_path / "m.csv"
    preds.to_csv(p, index=False)
    meta.to_csv(m, index=False)
    return str(p), str(m)


def test_when_written_waits_for_the_commit_and_is_dropped_on_rollback(tmp_path):
    said: list[str] = []
    with OutputSet():
        atomic_write_text(tmp_path / "a.txt", "a")
        when_written(lambda: said.append("a"))
        assert said == [] and not (tmp_path / "a.txt").exists()
    assert said == ["a"] and (tmp_path / "a.txt").read_text() == "a"
    try:
        with OutputSet():
            atomic_write_text(tmp_path / "b.txt", "b")
            when_written(lambda: said.append("b"))
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert said == ["a"] and not (tmp_path / "b.txt").exists()
    when_written(lambda: said.append("now"))  # no output set: at once
    assert said == ["a", "now"]


def test_cli_says_nothing_was_written_when_a_later_output_fails(tmp_path, capsys, monkeypatch):
    p, m = _study(tmp_path)

    def failing(*args, **kwargs):
        raise InputError("--html: cannot render (test)")

    monkeypatch.setattr(cli_report, "write_outputs", failing)
    out_json, out_html = tmp_path / "a.json", tmp_path / "r.html"
    code = main(["audit", p, m, "-a", "sex", "--spacing-mm", "1", "--permutations", "0", "--bootstrap", "0",
                 "--no-curves", "--min-group-size", "2", "--json", str(out_json), "--html", str(out_html)])
    captured = capsys.readouterr()
    assert code == 2
    assert "wrote" not in captured.out + captured.err
    assert not out_json.exists() and not out_html.exists()
    assert captured.err.strip().splitlines()[-1] == "error: --html: cannot render (test)"


def test_cli_says_wrote_after_success(tmp_path, capsys):
    p, m = _study(tmp_path)
    out_json = tmp_path / "a.json"
    code = main(["audit", p, m, "-a", "sex", "--spacing-mm", "1", "--permutations", "0", "--bootstrap", "0",
                 "--no-curves", "--min-group-size", "2", "--json", str(out_json)])
    assert code == 0 and out_json.exists()
    assert f"wrote {out_json}" in capsys.readouterr().out
