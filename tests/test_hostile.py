"""Hostile and messy input (issue 14): one class per kind of breakage.

Every bad input is one line on stderr, exit code 2, no traceback, no output touched; every legitimate
but messy input gives the same numbers as its clean twin.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _hostile_data import run_cli, study_frames, write_study

import fairlandmark as fl
from fairlandmark.exceptions import InputError
from fairlandmark.files import OutputSet, atomic_write_text, check_outputs, is_special_output

FAST = ["--no-significance", "--min-group-size", "1", "-q"]
REPO = Path(__file__).resolve().parents[1]


def audit_json(path):
    doc = json.loads(Path(path).read_text())
    doc.pop("warnings", None)
    return doc


def clean_numbers(tmp_path, capsys, **options):
    folder = tmp_path / "clean"
    folder.mkdir(exist_ok=True)
    p, m = write_study(folder, **options)
    code, _, err = run_cli(capsys, "audit", p, m, "-a", "sex", "-a", "site", *FAST, "--json", folder / "a.json")
    assert code == 0, err
    return audit_json(folder / "a.json")


# -- 1. rich markup -----------------------------------------------------------------------------------------
class TestMarkup:
    NAMES = ("[red]M[/red]", "[/]", "[bold", "x[/x]", "\\[b]", "[link=http://e]F[/link]")

    @pytest.mark.parametrize("name", NAMES)
    def test_group_names_print_literally(self, tmp_path, capsys, name):
        preds, meta = study_frames(groups=(name, "plain"))
        preds.to_csv(tmp_path / "p.csv", index=False)
        meta.to_csv(tmp_path / "m.csv", index=False)
        code, out, err = run_cli(capsys, "audit", tmp_path / "p.csv", tmp_path / "m.csv", "-a", "sex",
                                 "--no-significance", "--min-group-size", "1")
        assert code == 0, err
        assert name in out  # shown as typed, not swallowed as a style tag

    def test_paths_with_brackets_and_warnings_quoting_ids(self, tmp_path, capsys):
        folder = tmp_path / "o[x]"
        folder.mkdir()
        preds, meta = study_frames(groups=("[red]F", "M[/]"))
        extra = pd.DataFrame({"image_id": ["[bold]unused[/]"], "sex": ["[/]"], "site": ["x"]})
        pd.concat([meta, extra]).to_csv(tmp_path / "m.csv", index=False)  # warning quotes the unused id
        preds.to_csv(tmp_path / "p.csv", index=False)
        out_json = folder / "a[b].json"
        code, out, err = run_cli(capsys, "audit", tmp_path / "p.csv", tmp_path / "m.csv", "-a", "sex",
                                 "--no-significance", "--min-group-size", "1", "--json", out_json)
        assert code == 0, err
        assert f"wrote {out_json}" in out
        assert "[bold]unused[/]" in out
        assert out_json.is_file()

    def test_gate_and_compare_print_names_literally(self, tmp_path, capsys):
        preds, meta = study_frames(groups=("[red]F[/red]", "[/]"))
        preds.to_csv(tmp_path / "p.csv", index=False)
        meta.to_csv(tmp_path / "m.csv", index=False)
        assert run_cli(capsys, "audit", tmp_path / "p.csv", tmp_path / "m.csv", "-a", "sex", *FAST, "--json",
                       tmp_path / "a.json")[0] == 0
        code, out, err = run_cli(capsys, "gate", tmp_path / "a.json", "--max-dp", "0.0001")
        assert code == 1 and "FAIL" in err and "sex keypoint" in err
        code, out, err = run_cli(capsys, "compare", tmp_path / "a.json", tmp_path / "a.json", "--labels", "[b]x,[/]")
        assert code == 0, err
        assert "[b]x" in out and "[/]" in out

    def test_progress_descriptions_are_not_markup(self, monkeypatch):
        from rich.console import Console
        from rich.progress import Progress

        from fairlandmark.progress import progress_bar

        monkeypatch.setenv("TTY_COMPATIBLE", "1")  # a terminal (rich 14+): off one, no bar is drawn at all
        monkeypatch.setenv("FORCE_COLOR", "1")  # rich 13
        with progress_bar(True) as bar:  # the bar the statistics draw
            columns = bar.columns
        progress = Progress(*columns, console=Console(file=open(os.devnull, "w"), force_terminal=True))
        with progress:
            task = progress.add_task("permutation test (within sex=[/])", total=1)
            progress.advance(task)
            progress.refresh()

    def test_console_helpers(self):
        from rich.console import Console

        from fairlandmark.render.console import plain, print_note, print_wrote

        console = Console(record=True, width=200, highlight=False)
        print_note(console, "warning", "group [red]x[/red] is small")
        print_wrote(console, "/tmp/[a]/b.json")
        console.print(f"cell {plain('[/]')}")
        text = console.export_text()
        assert "warning: group [red]x[/red] is small" in text
        assert "wrote /tmp/[a]/b.json" in text
        assert "cell [/]" in text


# -- 2. special files and '-' -------------------------------------------------------------------------------
class TestSpecialFiles:
    def test_dev_null_is_written_in_place_not_replaced(self, tmp_path, capsys):
        p, m = write_study(tmp_path)
        before = os.stat("/dev/null")
        code, _, err = run_cli(capsys, "audit", p, m, "-a", "sex", *FAST, "--json", "/dev/null")
        assert code == 0, err
        after = os.stat("/dev/null")
        assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino

    def test_fifo_is_written_in_place(self, tmp_path):
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        assert is_special_output(fifo)
        reader = subprocess.Popen([sys.executable, "-c", f"print(open({str(fifo)!r}).read(), end='')"],
                                  stdout=subprocess.PIPE, text=True)
        atomic_write_text(fifo, "hello\n")
        assert reader.communicate(timeout=30)[0] == "hello\n"
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)

    @pytest.mark.parametrize("option", ["--json", "--csv", "--markdown"])
    def test_dash_is_stdout_for_audit_outputs(self, tmp_path, capsys, option):
        p, m = write_study(tmp_path)
        code, out, err = run_cli(capsys, "audit", p, m, "-a", "sex", "--no-significance", "--min-group-size", "1",
                                 option, "-")
        assert code == 0, err
        assert not (Path.cwd() / "-").exists()
        if option == "--json":
            assert json.loads(out)["attributes"] == ["sex"]  # tables went to stderr
        elif option == "--csv":
            assert out.startswith("attribute,group,keypoint")
        else:
            assert out.lstrip().startswith("#")

    def test_two_outputs_on_stdout_refused(self, tmp_path, capsys):
        p, m = write_study(tmp_path)
        code, out, err = run_cli(capsys, "audit", p, m, *FAST, "--json", "-", "--csv", "-")
        assert code == 2 and "standard output" in err and len(err.strip().splitlines()) == 1

    def test_convert_out_dash(self, tmp_path, capsys):
        (tmp_path / "t.csv").write_text("a,0,0\nb,1,1\n")
        (tmp_path / "p.csv").write_text("a,1,0\nb,1,2\n")
        code, out, err = run_cli(capsys, "convert", "--pred", tmp_path / "p.csv", "--truth", tmp_path / "t.csv",
                                 "--out", "-")
        assert code == 0, err
        assert out.startswith("image_id,keypoint") or out.startswith("run,") or "pred_x" in out.splitlines()[0]
        assert "wrote -" in err


# -- 3. several outputs: all or none ------------------------------------------------------------------------
class TestOutputSet:
    def test_failure_after_first_output_leaves_nothing(self, tmp_path):
        target = tmp_path / "a.json"
        with pytest.raises(RuntimeError):
            with OutputSet():
                atomic_write_text(target, "{}")
                raise RuntimeError("later output failed")
        assert not target.exists() and os.listdir(tmp_path) == []

    def test_commit_replaces_all(self, tmp_path):
        (tmp_path / "b.txt").write_text("old")
        with OutputSet():
            atomic_write_text(tmp_path / "a.txt", "A")
            atomic_write_text(tmp_path / "b.txt", "B")
            assert (tmp_path / "b.txt").read_text() == "old"  # nothing replaced before the commit
        assert (tmp_path / "a.txt").read_text() == "A" and (tmp_path / "b.txt").read_text() == "B"
        assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]

    def test_created_folders_removed_on_rollback(self, tmp_path):
        with pytest.raises(KeyboardInterrupt):
            with OutputSet():
                atomic_write_text(tmp_path / "new" / "deeper" / "a.txt", "A")
                raise KeyboardInterrupt
        assert os.listdir(tmp_path) == []

    @pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
    def test_unwritable_output_refused_before_work(self, tmp_path, capsys):
        p, m = write_study(tmp_path)
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            code, _, err = run_cli(capsys, "audit", p, m, *FAST, "--json", tmp_path / "ok.json", "--csv",
                                   locked / "a.csv")
        finally:
            locked.chmod(0o700)
        assert code == 2 and "--csv" in err and "permission" in err
        assert not (tmp_path / "ok.json").exists()

    def test_read_only_file_refused(self, tmp_path):
        target = tmp_path / "a.json"
        target.write_text("keep")
        target.chmod(0o400)
        try:
            if os.access(target, os.W_OK):
                pytest.skip("root can write read-only files")
            with pytest.raises(InputError, match="read-only"):
                check_outputs([("--json", target, False)])
        finally:
            target.chmod(0o600)

    def test_file_in_the_way_of_a_folder(self, tmp_path, capsys):
        p, m = write_study(tmp_path)
        (tmp_path / "blocker").write_text("x")
        code, _, err = run_cli(capsys, "audit", p, m, *FAST, "--json", tmp_path / "ok.json", "--csv",
                               tmp_path / "blocker" / "sub" / "a.csv")
        assert code == 2 and "is a file, not a folder" in err
        assert not (tmp_path / "ok.json").exists()

    def test_failing_second_output_leaves_first_untouched(self, tmp_path, capsys, monkeypatch):
        p, m = write_study(tmp_path)
        (tmp_path / "a.json").write_text("old")
        from fairlandmark.audit import AuditResult

        def broken(self, path):
            raise OSError(28, "No space left on device", str(path))

        monkeypatch.setattr(AuditResult, "to_csv", broken)
        code, _, err = run_cli(capsys, "audit", p, m, *FAST, "--json", tmp_path / "a.json", "--csv",
                               tmp_path / "a.csv")
        assert code == 2 and "No space left" in err
        assert (tmp_path / "a.json").read_text() == "old"
        assert sorted(os.listdir(tmp_path)) == ["a.json", "meta.csv", "preds.csv"]

    def test_missing_folder_created_and_announced(self, tmp_path, capsys):
        p, m = write_study(tmp_path)
        code, _, err = run_cli(capsys, "audit", p, m, *FAST, "--json", tmp_path / "new" / "a.json")
        assert code == 0 and (tmp_path / "new" / "a.json").is_file()
        assert f"created folder {tmp_path / 'new'}" in err


# -- 4. non-finite numbers ----------------------------------------------------------------------------------
class TestNonFinite:
    def test_overflowing_difference_names_the_row(self):
        preds, meta = study_frames()
        preds = preds.astype({"true_x": float})
        preds.loc[4, ["pred_x", "true_x"]] = [1e308, -1e308]
        with pytest.raises(InputError, match=r"image 'im001' \(run 0\), keypoint 2: the radial error is infinite"):
            fl.audit(preds, meta, attributes=["sex"], min_group_size=1)

    def test_sum_that_overflows(self):
        preds, meta = study_frames()
        preds.loc[[0, 3], "pred_x"] = 9e307
        with pytest.raises(InputError, match="too large to average"):
            fl.audit(preds, meta, attributes=["sex"], min_group_size=1)

    def test_one_huge_error_that_resampling_would_overflow(self):
        # One error of 1e308: its own sum is finite, but a bootstrap resample counting it twice is not.
        preds, meta = study_frames()
        preds.loc[0, "pred_x"] = -1e308
        with pytest.raises(InputError, match=r"image 'im000' \(run 0\), keypoint 1: error 1e\+308 is too large"):
            fl.audit(preds, meta, attributes=["sex"], min_group_size=1)

    @pytest.mark.filterwarnings("error::RuntimeWarning")
    def test_an_error_beyond_float32_is_audited_in_float64(self):
        preds, meta = study_frames()
        preds.loc[0, "pred_x"] = 1e39  # finite, but inf in the float32 resampling kernel
        result = fl.audit(preds, meta, attributes=["sex"], min_group_size=1,
                          significance={"permutations": 99, "bootstrap": 20, "baseline_repeats": 10})
        mre = result.overall["mre"].to_numpy(dtype=float)
        assert np.isfinite(mre).all() and mre.max() > 1e36

    def test_scale_that_overflows(self):
        preds, meta = study_frames()
        with pytest.raises(InputError, match="infinite"):
            fl.audit(preds, meta, attributes=["sex"], spacing_mm=1e308, min_group_size=1)

    @pytest.mark.parametrize("flag", [["--wrist-width", "1,2,inf"], ["--wrist-width", "1,2,nan"],
                                      ["--spacing-mm", "inf"], ["--spacing-mm", "nan"], ["--threshold-mm", "inf"],
                                      ["--ci", "nan"], ["--max-mre", "inf"], ["--min-sdr", "inf=0.5"],
                                      ["--bin", "sex=1,inf"]])
    def test_non_finite_options_refused(self, tmp_path, capsys, flag):
        p, m = write_study(tmp_path)
        code, out, err = run_cli(capsys, "audit", p, m, "-a", "sex", *FAST, *flag)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err

    def test_inf_in_a_file_is_not_a_number(self, tmp_path):
        preds, meta = study_frames()
        preds["pred_x"] = preds["pred_x"].astype(object)
        preds.loc[2, "pred_x"] = "1e999"
        preds.to_csv(tmp_path / "p.csv", index=False)
        with pytest.raises(InputError, match="row 4, column 'pred_x': 'inf' is not a number"):
            fl.audit(tmp_path / "p.csv", meta, attributes=["sex"], min_group_size=1)


# -- 5. NA-like values are values ---------------------------------------------------------------------------
class TestNaStrings:
    @pytest.mark.parametrize("value", ["NA", "None", "NULL", "n/a", "nan", "N/A", "null", "#N/A"])
    def test_na_like_site_names_are_groups(self, tmp_path, value):
        preds, meta = study_frames()
        meta["site"] = np.where(np.arange(len(meta)) % 2 == 0, value, "EU")
        meta.to_csv(tmp_path / "m.csv", index=False)
        preds.to_csv(tmp_path / "p.csv", index=False)
        res = fl.audit(tmp_path / "p.csv", tmp_path / "m.csv", attributes=["site"], min_group_size=1)
        assert sorted(res.groups["group"]) == sorted(["EU", value])
        twin = fl.audit(preds, meta.assign(site=np.where(meta["site"] == value, "X", "EU")),
                        attributes=["site"], min_group_size=1)
        assert np.allclose(res.per_keypoint["dp"], twin.per_keypoint["dp"])

    def test_na_like_ids(self, tmp_path):
        preds, meta = study_frames(n_images=4)
        mapping = {"im000": "NA", "im001": "None", "im002": "NULL", "im003": "n/a"}
        preds["image_id"] = preds["image_id"].map(mapping)
        meta["image_id"] = meta["image_id"].map(mapping)
        preds.to_csv(tmp_path / "p.csv", index=False)
        meta.to_csv(tmp_path / "m.csv", index=False)
        res = fl.audit(tmp_path / "p.csv", tmp_path / "m.csv", attributes=["sex"], min_group_size=1)
        assert res.groups["n_images"].sum() == 4

    def test_empty_cell_is_still_missing(self, tmp_path):
        preds, meta = study_frames()
        meta["site"] = meta["site"].astype(object)
        meta.loc[5, "site"] = ""
        meta.to_csv(tmp_path / "m.csv", index=False)
        with pytest.raises(InputError, match="row 7, column 'site' is empty"):
            fl.audit(preds, tmp_path / "m.csv", attributes=["site"])

    def test_na_in_a_coordinate_is_still_a_missing_prediction(self, tmp_path):
        preds, meta = study_frames()
        preds["pred_x"] = preds["pred_x"].astype(object)
        preds.loc[0, "pred_x"] = "NA"
        preds.to_csv(tmp_path / "p.csv", index=False)
        res = fl.audit(tmp_path / "p.csv", meta, attributes=["sex"], min_group_size=1)
        assert int(res.overall["n_missing"].iloc[0]) == 1


# -- 6. trailing commas -------------------------------------------------------------------------------------
class TestTrailingComma:
    @pytest.mark.parametrize("header_too", [False, True])
    def test_trailing_comma_gives_the_clean_numbers(self, tmp_path, capsys, header_too):
        clean = clean_numbers(tmp_path, capsys)
        p, m = write_study(tmp_path)
        for path in (p, m):
            lines = path.read_text().splitlines()
            start = 0 if header_too else 1
            path.write_text("\n".join(lines[:start] + [line + "," for line in lines[start:]]) + "\n")
        code, _, err = run_cli(capsys, "audit", p, m, "-a", "sex", "-a", "site", *FAST, "--json",
                               tmp_path / "t.json")
        assert code == 0, err
        assert audit_json(tmp_path / "t.json") == clean

    def test_one_ragged_row_is_one_line(self, tmp_path):
        preds, meta = study_frames()
        meta.to_csv(tmp_path / "m.csv", index=False)
        lines = (tmp_path / "m.csv").read_text().splitlines()
        lines[3] += ",extra,more"
        (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
        with pytest.raises(InputError, match="line 4 has 5 fields where the header has 3"):
            fl.audit(preds, tmp_path / "m.csv", attributes=["sex"])


# -- 7. encodings -------------------------------------------------------------------------------------------
class TestEncodings:
    def frames(self):
        preds, meta = study_frames()
        meta["sex"] = np.where(np.arange(len(meta)) % 2 == 0, "Mé", "Fö")
        return preds, meta

    @pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"])
    def test_bom_files_read(self, tmp_path, encoding):
        preds, meta = self.frames()
        meta.to_csv(tmp_path / "m.csv", index=False, encoding=encoding)
        preds.to_csv(tmp_path / "p.csv", index=False, encoding=encoding)
        res = fl.audit(tmp_path / "p.csv", tmp_path / "m.csv", attributes=["sex"], min_group_size=1)
        assert set(res.groups["group"]) == {"Mé", "Fö"}

    def test_latin1_named_and_read_with_encoding(self, tmp_path, capsys):
        preds, meta = self.frames()
        meta.to_csv(tmp_path / "m.csv", index=False, encoding="latin-1")
        preds.to_csv(tmp_path / "p.csv", index=False)
        with pytest.raises(InputError, match=r"not UTF-8 text \(byte 0xe9 on line 2\), it looks like Latin-1"):
            fl.audit(tmp_path / "p.csv", tmp_path / "m.csv", attributes=["sex"])
        res = fl.audit(tmp_path / "p.csv", tmp_path / "m.csv", attributes=["sex"], min_group_size=1,
                       encoding="latin-1")
        assert set(res.groups["group"]) == {"Mé", "Fö"}
        code, _, err = run_cli(capsys, "audit", tmp_path / "p.csv", tmp_path / "m.csv", "-a", "sex", *FAST)
        assert code == 2 and "--encoding latin-1" in err
        assert run_cli(capsys, "audit", tmp_path / "p.csv", tmp_path / "m.csv", "-a", "sex", *FAST,
                       "--encoding", "latin-1")[0] == 0

    def test_utf16_without_bom_and_unknown_encoding(self, tmp_path):
        preds, meta = self.frames()
        meta.to_csv(tmp_path / "m.csv", index=False, encoding="utf-16-le")
        with pytest.raises(InputError, match="UTF-16 without a byte-order mark"):
            fl.audit(preds, tmp_path / "m.csv", attributes=["sex"])
        with pytest.raises(InputError, match="'klingon': not an encoding"):
            fl.audit(preds, tmp_path / "m.csv", attributes=["sex"], encoding="klingon")

    def test_gzip_utf16(self, tmp_path):
        preds, meta = self.frames()
        meta.to_csv(tmp_path / "m.csv.gz", index=False, encoding="utf-16")
        res = fl.audit(preds, tmp_path / "m.csv.gz", attributes=["sex"], min_group_size=1)
        assert set(res.groups["group"]) == {"Mé", "Fö"}


# -- 8. memory ----------------------------------------------------------------------------------------------
class TestMemory:
    def test_batch_lowered_to_fit(self):
        from fairlandmark.stats.memory import GIB, SignificanceMemory, fit_batch_size

        mem = SignificanceMemory(fixed=GIB, per_resample=GIB // 100)
        # 60% of 4 GiB = 2.4 GiB; 1.4 GiB left over for batches of 0.01 GiB -> 143
        assert fit_batch_size(mem, 500, n_keypoints=1, n_attributes=1, permutations=1, bootstrap=1,
                              baseline_repeats=1, available=4 * GIB) == int((0.6 * 4 * GIB - GIB) // (GIB // 100))
        assert fit_batch_size(mem, 50, n_keypoints=1, n_attributes=1, permutations=1, bootstrap=1,
                              baseline_repeats=1, available=4 * GIB) == 50

    def test_too_big_is_one_line_naming_what_to_reduce(self, monkeypatch):
        monkeypatch.setenv("FAIRLANDMARK_MEMORY_BYTES", str(50 << 20))  # 50 MiB machine
        preds, meta = study_frames()
        with pytest.raises(InputError, match=r"needs about .* GiB .* reduce permutations \(1000000\), bootstrap"):
            fl.audit(preds, meta, attributes=["sex"], min_group_size=1,
                     significance={"permutations": 10**6, "bootstrap": 10**6, "baseline_repeats": 0})

    def test_small_memory_same_numbers(self, monkeypatch):
        preds, meta = study_frames()
        options = {"permutations": 60, "bootstrap": 40, "baseline_repeats": 20, "seed": 3}
        big = fl.audit(preds, meta, attributes=["sex"], min_group_size=1, significance=options)
        monkeypatch.setenv("FAIRLANDMARK_MEMORY_BYTES", str(2 << 20))  # forces batches of a few resamples
        small = fl.audit(preds, meta, attributes=["sex"], min_group_size=1, significance=options)
        cols = ["p_value", "dp_ci_low", "dp_ci_high", "baseline_mean"]
        assert np.array_equal(big.per_keypoint[cols].to_numpy(), small.per_keypoint[cols].to_numpy())

    def test_estimate_matches_the_kernel_sums_shape(self):
        from fairlandmark.stats.memory import estimate

        mem = estimate(n_rows=100, max_rows_per_run=100, n_runs=1, n_cells=4, n_columns=30, n_keypoints=10,
                       groups=[2], permutations=10, bootstrap=0, baseline_repeats=0)
        # sums (1 run x 4 cells x 30 columns) + 3 aggregates (2 groups) in float64, + float32 label match
        assert mem.per_resample == 8 * 4 * 30 + 3 * 8 * 2 * 30 + 4 * 4 * 100
        assert mem.fixed == 8 * 10 * 2 * 10 + 4 * 100 * 30 * 2 + 8 * 4 * 30


# -- 9. configs and audit documents -------------------------------------------------------------------------
class TestConfigsAndDocuments:
    @pytest.fixture()
    def audit_file(self, tmp_path, capsys):
        p, m = write_study(tmp_path)
        assert run_cli(capsys, "audit", p, m, "-a", "sex", *FAST, "--json", tmp_path / "a.json")[0] == 0
        return tmp_path / "a.json"

    @pytest.mark.parametrize("name,text", [
        ("fairlandmark.toml", b"[gate]\nmax_dp = 0.9\n# caf\xe9\n"),
        ("pyproject.toml", b"tool = 'x'\n"),
        ("pyproject.toml", b"tool = 5\n"),
        ("pyproject.toml", b"[tool]\nfairlandmark = [1]\n"),
        ("pyproject.toml", b"[tool.fairlandmark]\ngate = 3\n"),
        ("fairlandmark.toml", b"[gate]\nmax_dp = 'x'\n"),
        ("fairlandmark.toml", b"[gate\n"),
    ])
    def test_bad_config_is_one_line(self, tmp_path, capsys, audit_file, name, text):
        (tmp_path / name).write_bytes(text)
        code, _, err = run_cli(capsys, "gate", audit_file, "--config", tmp_path / name)
        assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err

    def test_gate_that_checked_nothing_fails(self, tmp_path, capsys, audit_file):
        (tmp_path / "fairlandmark.toml").write_text("[gate]\nmax_dp = 0.9\nattributes = []\n")
        code, out, err = run_cli(capsys, "gate", audit_file, "--config", tmp_path / "fairlandmark.toml",
                                 "--junit", tmp_path / "j.xml")
        assert code == 1
        assert "no check ran" in err and "PASSED" not in err
        assert 'failures="1"' in (tmp_path / "j.xml").read_text()

    @pytest.mark.parametrize("change", [
        {"attributes": "sex"}, {"attributes": None}, {"schema_version": "9.0"}, {"per_keypoint": "x"},
        {"summary": [1]}, {"thresholds": ["a"]}, {"thresholds": [-1]},
        {"per_keypoint": [{"attribute": "sex", "keypoint": {"x": 1}, "dp": 0.1}]},
        {"per_keypoint": [{"attribute": "sex", "keypoint": 1, "dp": "high"}]},
        {"per_keypoint": [{"attribute": 3, "keypoint": 1, "dp": 0.1}]},
        {"overall": [{"family": "all", "mre": [1]}]} , {"unit": 5},
    ])
    def test_malformed_document_is_one_line_everywhere(self, tmp_path, capsys, audit_file, change):
        doc = json.loads(audit_file.read_text())
        doc.update(change)
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(doc))
        for argv in (["report", bad, "--markdown", tmp_path / "r.md"], ["compare", audit_file, bad],
                     ["gate", bad, "--max-dp", "0.5"]):
            code, _, err = run_cli(capsys, *argv)
            assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
        assert not (tmp_path / "r.md").exists()

    def test_deep_nesting_and_garbage(self, tmp_path, capsys):
        for text in ("[" * 200000 + "]" * 200000, "", "{\"a\": NaN", "\xff\xfe garbage"):
            bad = tmp_path / "bad.json"
            bad.write_text(text, encoding="latin-1")
            code, _, err = run_cli(capsys, "gate", bad, "--max-dp", "0.5")
            assert code == 2 and len(err.strip().splitlines()) == 1, err


# -- 10. written types --------------------------------------------------------------------------------------
class TestWrittenTypes:
    def test_max_dp_keypoint_keeps_integer_type(self):
        preds, meta = study_frames()
        doc = json.loads(fl.audit(preds, meta, attributes=["sex"], min_group_size=1).to_json())
        kp = doc["summary"][0]["max_dp_keypoint"]
        assert type(kp) is int and kp in (1, 2, 3)

    def test_max_dp_keypoint_keeps_string_type(self):
        preds, meta = study_frames()
        preds["keypoint"] = preds["keypoint"].map({1: "nasion", 2: "sella", 3: "menton"})
        doc = json.loads(fl.audit(preds, meta, attributes=["sex"], min_group_size=1).to_json())
        assert doc["summary"][0]["max_dp_keypoint"] in ("nasion", "sella", "menton")


# -- 11. signals --------------------------------------------------------------------------------------------
class TestSignals:
    def test_console_entry_point_is_light(self):
        code = ("import sys, fairlandmark.cli; "
                "print(any(m in sys.modules for m in ('numpy', 'pandas', 'fairlandmark.cli.main')))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        assert out.stdout.strip() == "False", out.stderr

    def test_ctrl_c_while_importing(self, monkeypatch, capsys):
        import importlib

        import fairlandmark.cli as cli

        real = importlib.import_module

        def interrupted(name, *args):
            if name == "fairlandmark.cli.main":
                raise KeyboardInterrupt
            return real(name, *args)

        monkeypatch.setattr(importlib, "import_module", interrupted)
        assert cli.main(["--version"]) == 130
        assert capsys.readouterr().err == "interrupted\n"

    def test_sigterm_mid_run_leaves_nothing(self, tmp_path):
        p, m = write_study(tmp_path)
        script = ("import os, signal, sys\n"
                  "from fairlandmark.audit import AuditResult\n"
                  "real = AuditResult.to_csv\n"
                  "def slow(self, path):\n"
                  "    real(self, path); os.kill(os.getpid(), signal.SIGTERM)\n"
                  "AuditResult.to_csv = slow\n"
                  "from fairlandmark.cli import main\n"
                  "sys.exit(main(sys.argv[1:]))\n")
        out = subprocess.run([sys.executable, "-c", script, "audit", str(p), str(m), "-a", "sex", *FAST,
                              "--json", str(tmp_path / "a.json"), "--csv", str(tmp_path / "a.csv")],
                             capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert out.returncode == 143 and out.stderr.strip() == "terminated", out.stderr
        assert sorted(os.listdir(tmp_path)) == ["meta.csv", "preds.csv"]


# -- 13. the Python API -------------------------------------------------------------------------------------
class TestApi:
    def test_single_string_is_one_attribute(self):
        preds, meta = study_frames()
        one = fl.audit(preds, meta, attributes="sex", min_group_size=1)
        listed = fl.audit(preds, meta, attributes=["sex"], min_group_size=1)
        assert one.attributes == ["sex"]
        assert np.array_equal(one.per_keypoint["dp"], listed.per_keypoint["dp"])

    @pytest.mark.parametrize("bad", [None, 5, 3.2, object()])
    def test_inputs_of_the_wrong_type(self, bad):
        preds, meta = study_frames()
        with pytest.raises(InputError, match="predictions: expected a pandas DataFrame or the path"):
            fl.audit(bad, meta)
        with pytest.raises(InputError, match="metadata: expected a pandas DataFrame or the path"):
            fl.audit(preds, bad)

    def test_attributes_of_the_wrong_type(self):
        preds, meta = study_frames()
        for bad in (5, ["sex", 3]):
            with pytest.raises(InputError, match="give a column name or a list of column names"):
                fl.audit(preds, meta, attributes=bad)

    def test_misspelt_significance_key(self):
        preds, meta = study_frames()
        with pytest.raises(InputError, match="significance has no option 'permutaions'; the options are: "
                                             "permutations, bootstrap"):
            fl.audit(preds, meta, attributes="sex", significance={"permutaions": 10})
        with pytest.raises(InputError, match="ci: must be a number"):
            fl.audit(preds, meta, attributes="sex", significance={"ci": "0.9"})

    def test_boolean_coordinates_refused(self):
        preds, meta = study_frames()
        with pytest.raises(InputError, match="column 'pred_x' holds True/False"):
            fl.audit(preds.assign(pred_x=preds["pred_x"] > 10), meta, attributes="sex")
        mixed = preds.assign(true_y=preds["true_y"].astype(object))
        mixed.loc[3, "true_y"] = True
        with pytest.raises(InputError, match="column 'true_y' holds True/False"):
            fl.audit(mixed, meta, attributes="sex")
        with pytest.raises(InputError, match="pred: holds True/False"):
            fl.audit_arrays(np.zeros((4, 2, 2), bool), np.zeros((4, 2, 2)), groups={"s": [0, 0, 1, 1]})


# -- the worst cases end to end, in a fresh process ---------------------------------------------------------
def test_worst_cases_end_to_end(tmp_path):
    p, m = write_study(tmp_path)
    (tmp_path / "a.json").write_text("untouched")
    lat = tmp_path / "latin.csv"
    lat.write_bytes("image_id,sex\nim000,Mé\n".encode("latin-1"))
    bad_doc = tmp_path / "bad.json"
    bad_doc.write_text(json.dumps({"schema_version": "1.0", "per_keypoint": [], "attributes": None,
                                   "keypoints": []}))
    cases = [
        ["audit", p, lat, "--json", tmp_path / "a.json"],
        ["audit", p, m, "--wrist-width", "1,5,inf", "--json", tmp_path / "a.json"],
        ["audit", p, m, "--json", tmp_path / "a.json", "--csv", tmp_path / "a.json"],
        ["gate", bad_doc, "--max-dp", "0.1", "--junit", tmp_path / "a.json"],
        ["report", bad_doc, "--html", tmp_path / "a.json"],
    ]
    for argv in cases:
        out = subprocess.run([sys.executable, "-m", "fairlandmark.cli", *map(str, argv)], capture_output=True,
                             text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert out.returncode == 2, (argv, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
        assert (tmp_path / "a.json").read_text() == "untouched"


class TestWideFileEncodings:
    def test_utf16_wide_files_and_latin1_named(self, tmp_path):
        from fairlandmark.inputs.convert import convert, read_wide

        (tmp_path / "t.csv").write_text("a,0,0\nb,1,1\n", encoding="utf-16")
        (tmp_path / "p.csv").write_text("a,1,0\nb,1,2\n", encoding="utf-16")
        frame = convert([tmp_path / "p.csv"], read_wide(tmp_path / "t.csv", truth=True))
        assert len(frame) == 2 and sorted(frame["image_id"]) == ["a", "b"]
        (tmp_path / "l.csv").write_bytes("é,0,0\n".encode("latin-1"))
        with pytest.raises(InputError, match="not UTF-8 text .* Latin-1"):
            read_wide(tmp_path / "l.csv", truth=True)

    def test_wide_files_with_trailing_commas_convert_like_clean_ones(self, tmp_path):
        from fairlandmark.inputs.convert import convert, read_wide

        (tmp_path / "t.csv").write_text("a,0,0,3,4\nb,1,1,5,5\n")
        (tmp_path / "p.csv").write_text("a,1,0,3,3\nb,1,2,,\n")
        clean = convert([tmp_path / "p.csv"], read_wide(tmp_path / "t.csv", truth=True))
        (tmp_path / "t2.csv").write_text("a,0,0,3,4,\nb,1,1,5,5,\n")
        (tmp_path / "p2.csv").write_text("a,1,0,3,3,\nb,1,2,,,\n")
        messy = convert([tmp_path / "p2.csv"], read_wide(tmp_path / "t2.csv", truth=True))
        pd.testing.assert_frame_equal(clean, messy)
        assert messy["pred_x"].isna().sum() == 1


@pytest.mark.parametrize("block_rows", [1, 2, 4096])
def test_the_first_infinite_error_is_named_whatever_the_blocks(monkeypatch, block_rows):
    # The errors are checked in blocks of rows: the message names the first bad entry in row order, and an
    # overflowing sum is found across blocks.
    from types import SimpleNamespace

    from fairlandmark.inputs import radial_error

    monkeypatch.setattr(radial_error, "_CHECK_BLOCK_ERRORS", 8 * block_rows)
    preds = SimpleNamespace(source="p.csv", row_image=np.array([f"img{i}" for i in range(12)]),
                            runs=["0"], row_run=np.zeros(12, int), keypoints=[1, 2, 3])
    errors = np.ones((12, 3))
    errors[9, 2] = np.inf
    errors[10, 0] = np.inf
    with pytest.raises(InputError, match=r"image 'img9' \(run 0\), keypoint 3: the radial error is infinite"):
        radial_error.check_finite_errors(errors, preds)
    errors = np.full((12, 3), 1e306)
    errors[3, 1] = np.nan
    with pytest.raises(InputError, match="too large to average"):
        radial_error.check_finite_errors(errors, preds)
    errors[:] = 1.0
    assert radial_error.check_finite_errors(errors, preds) is errors
