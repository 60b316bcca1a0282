"""Figures: render for 1, 10 and 50 keypoints, with and without significance, with a group missing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest


from fairlandmark.exceptions import InputError

pytest.importorskip("matplotlib")
from fairlandmark.render import figures as F

PNG = b"\x89PNG\r\n\x1a\n"


def _bars(ax):
    from matplotlib.patches import Rectangle

    return [p for p in ax.patches if isinstance(p, Rectangle)]


@pytest.mark.parametrize("k", [1, 10, 50])
def test_all_figures_render(k, tmp_path, make_doc):
    doc = make_doc(k, significance=True, missing_group=True)
    n_attr = len(doc["attributes"])
    fig = F.mre_bars(doc)
    assert len(_bars(fig.axes[0])) == k
    heights = [b.get_height() for b in _bars(fig.axes[0])]
    expected = F.keypoint_mre(doc)["mre"].to_numpy()
    assert np.allclose(heights, expected)
    fig = F.dp_bars(doc)
    assert len(fig.axes) == n_attr
    for ax, attr in zip(fig.axes, doc["attributes"]):
        assert len(_bars(ax)) == 2 * k  # DP and randomized baseline beside it
    assert [t.get_text() for t in fig.axes[-1].get_xticklabels()] == [str(x) for x in doc["keypoints"]]
    fig = F.sdr_curves(doc, attribute="age_group")
    assert sum(ax.get_visible() for ax in fig.axes) == min(k, 4)
    for name, fig in (("mre", F.mre_bars(doc)), ("dp", fig)):
        png = tmp_path / f"{name}.png"
        svg = tmp_path / f"{name}.svg"
        F.save_figure(fig, png, dpi=40)
        F.save_figure(fig, svg)
        assert png.read_bytes()[:8] == PNG
        text = svg.read_text()
        assert "<svg" in text and "</svg>" in text


def test_dp_bars_without_significance_uses_std_and_no_baseline(make_doc):
    doc = make_doc(10)
    fig = F.dp_bars(doc, attribute="sex")
    ax = fig.axes[0]
    bars = _bars(ax)
    assert len(bars) == 10
    dp = [r["dp"] for r in doc["per_keypoint"] if r["attribute"] == "sex"]
    assert np.allclose([b.get_height() for b in bars], dp)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["DP (± std over runs)"]


def test_dp_bars_significance_marks_match_the_flags(make_doc):
    doc = make_doc(10, significance=True, real_significance=False)
    fig = F.dp_bars(doc, attribute=["sex"])
    stars = [c for c in fig.axes[0].collections if c.get_label() == "significant (adjusted)"]
    n_sig = sum(r["significant"] for r in doc["per_keypoint"] if r["attribute"] == "sex")
    assert n_sig > 0
    assert len(stars) == 1 and len(stars[0].get_offsets()) == n_sig
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "DP (bootstrap interval)" in labels and "randomized baseline (± std)" in labels


def test_compare_bars_side_by_side(make_doc):
    before, after = make_doc(10, seed=1), make_doc(10, significance=True)
    fig = F.compare_bars(before, after, labels=("vanilla", "mitigated"))
    assert len(fig.axes) == len(after["attributes"]) + 1  # DP per attribute, then MRE
    for ax in fig.axes:
        assert len(_bars(ax)) == 20
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["vanilla", "mitigated"]


def test_sdr_curves_for_chosen_keypoints_and_a_missing_group(make_doc):
    doc = make_doc(10, missing_group=True)
    fig = F.sdr_curves(doc, attribute="age_group", keypoints=[1, 3])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split(" ·")[0] for ax in visible] == ["keypoint 1", "keypoint 3"]
    # keypoint 1's record lost the 'infant' group: two lines there, three at keypoint 3
    assert len(visible[0].lines) == 2 and len(visible[1].lines) == 3
    assert np.allclose(visible[1].lines[0].get_xdata(), doc["thresholds"])


def test_bad_arguments_are_input_errors(tmp_path, make_doc):
    doc = make_doc(3)
    with pytest.raises(InputError, match="attribute 'race' is not in the audit"):
        F.dp_bars(doc, attribute="race")
    with pytest.raises(InputError, match="keypoint 9 is not in the audit"):
        F.sdr_curves(doc, keypoints=[9])
    with pytest.raises(InputError, match="unknown figure format 'jpg'"):
        F.save_figure(F.mre_bars(doc), tmp_path / "x.jpg")
    with pytest.raises(InputError, match="formats"):
        F.write_figures(doc, tmp_path, formats=["gif"])


def test_write_figures(tmp_path, make_doc):
    doc = make_doc(5)
    paths = F.write_figures(doc, tmp_path / "figs", formats=["png"], dpi=40)
    names = sorted(Path(p).name for p in paths)
    assert names == ["dp_by_keypoint.png", "fairness_map.png", "mre_by_keypoint.png", "sdr_age_group.png",
                     "sdr_sex.png", "sdr_sex_age_group.png"]
    assert all(Path(p).read_bytes()[:8] == PNG for p in paths)


def test_missing_matplotlib(monkeypatch, make_doc):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(F.MissingExtraError, match=r"figures need matplotlib.*fairlandmark\[report\]"):
        F.mre_bars(make_doc(2))


def test_attributes_whose_names_slug_alike_get_a_figure_each(tmp_path):
    import fairlandmark

    rng = np.random.default_rng(0)
    true = rng.uniform(0, 100, (40, 2, 2))
    res = fairlandmark.audit_arrays(true + rng.normal(0, 2, true.shape), true,
                                    {"a b": ["x", "y"] * 20, "a_b": ["x"] * 20 + ["y"] * 20}, spacing_mm=1.0,
                                    min_group_size=1, intersection=False, significance=False)
    names = sorted(Path(p).name for p in F.write_figures(res, tmp_path, formats=["png"], dpi=30))
    assert names == ["dp_by_keypoint.png", "fairness_map.png", "mre_by_keypoint.png", "sdr_a_b.png",
                     "sdr_a_b_2.png"]
