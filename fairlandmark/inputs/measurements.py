"""Clinical measurements computed from landmarks: definitions, presets and geometry.

Clinicians act on angles, distances and classes computed from landmarks
(e.g. a skeletal class from the ANB angle), not on single landmarks. A
:class:`Measurement` is one of

- ``angle``: the angle at a vertex, ``points = [a, vertex, b]``, in degrees
  (0-180);
- ``line_angle``: the angle between two lines, ``points = [p1, p2, q1, q2]``
  (directions p1->p2 and q1->q2), in degrees, 0-180; with ``signed = true``
  it is negative when ``cross(p2 - p1, q2 - q1) < 0`` in the file's
  coordinates (image coordinates, y pointing down);
- ``distance``: ``points = [a, b]``, in the coordinate unit (mm with a scale);
  ``signed = "x"`` (or ``"y"``) makes it negative when ``b`` lies before
  ``a`` along that axis;
- ``ratio``: ``of = [m1, m2]`` (two other measurements) or the shortcut
  ``points = [a, b, c, d]`` for ``|ab| / |cd|``;
- ``difference``: ``of = [m1, m2]``, ``m1 - m2``;
- ``sum``: ``of = [m1, m2, ...]`` with optional ``weights``.

Each may have a clinical ``tolerance`` (a prediction within it is a success)
and class ``cuts`` with ``classes`` labels, in increasing order of value; a
value equal to a cut point falls in the upper class. Helper measurements used
only inside others take ``report = false``.

A measurement file is TOML, one ``[[measurement]]`` table per measurement::

    [[measurement]]
    name = "SNA"
    kind = "angle"
    points = [1, 2, 5]          # sella, nasion (vertex), A point
    tolerance = 2.0
    cuts = [79.4, 83.2]
    classes = ["retrognathic maxilla", "normal maxilla", "prognathic maxilla"]

Built-in presets: ``isbi2015`` (the eight measurements of the ISBI 2015
cephalometric challenge) and ``dha`` (finger lengths and the 2D:4D ratio on
the Digital Hand Atlas layout); see docs/measurements.md.

Examples
--------
>>> import numpy as np
>>> mset = check_measurements([{"name": "L", "kind": "distance", "points": [1, 2]}])
>>> coords = np.array([[[0.0, 0.0], [3.0, 4.0]]])
>>> measurement_values(coords, [1, 2], mset)
array([[5.]])
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fairlandmark.exceptions import InputError

__all__ = [
    "Measurement",
    "MeasurementSet",
    "KINDS",
    "PRESETS",
    "check_measurements",
    "load_measurements",
    "measurement_values",
    "classify",
    "ISBI2015_CITATION",
]

KINDS = ("angle", "line_angle", "distance", "ratio", "difference", "sum")
_N_POINTS = {"angle": 3, "line_angle": 4, "distance": 2, "ratio": 4}
_KEYS = {"name", "kind", "points", "of", "weights", "signed", "tolerance", "cuts", "classes", "report",
         "description", "unit"}

ISBI2015_CITATION = ("C.-W. Wang, C.-T. Huang, J.-H. Lee, C.-H. Li, S.-W. Chang, M.-J. Siao, T.-M. Lai, B. Ibragimov, "
                     "T. Vrtovec, O. Ronneberger, P. Fischer, T. F. Cootes, C. Lindner. A benchmark for comparison of "
                     "dental radiography analysis algorithms. Medical Image Analysis 31 (2016) 63-76.")

MSG_WHERE = "{src}: measurement {which}"
MSG_NOT_TABLE = "{src}: expected [[measurement]] tables (a list of definitions), got {got}"
MSG_NONE = "{src}: defines no measurement; add at least one [[measurement]] table"
MSG_UNKNOWN_KEY = "{where}: unknown key {key!r}; the keys are {known}"
MSG_NAME = "{where}: needs a 'name' (text), got {value!r}"
MSG_DUP_NAME = "{src}: measurement name {name!r} is defined twice; give each measurement its own name"
MSG_KIND = "{where}: kind {value!r} is not one of {kinds}"
MSG_POINTS = "{where}: kind {kind!r} needs 'points' with {n} keypoints ({layout}), got {value!r}"
MSG_OF = "{where}: kind {kind!r} needs 'of' = {n} names of other measurements, got {value!r}"
MSG_OF_UNKNOWN = "{where}: 'of' names {ref!r}, which is not defined; the measurements are {known}"
MSG_CYCLE = "{where}: refers back to itself through 'of' ({chain}); break the cycle"
MSG_WEIGHTS = "{where}: 'weights' must be {n} numbers, one per name in 'of', got {value!r}"
MSG_SIGNED = "{where}: 'signed' must be {allowed} for kind {kind!r}, got {value!r}"
MSG_TOLERANCE = "{where}: 'tolerance' must be a positive number, got {value!r}"
MSG_CUTS = "{where}: 'cuts' must be finite numbers in increasing order, got {value!r}"
MSG_CLASSES = "{where}: 'classes' needs {n} labels (one more than the {m} cut point(s)), got {value!r}"
MSG_CLASSES_WITHOUT_CUTS = "{where}: 'classes' given without 'cuts'; add the cut points between the classes"
MSG_REPORT = "{where}: 'report' must be true or false, got {value!r}"
MSG_NOTHING_REPORTED = "{src}: every measurement has report = false; report at least one"
MSG_FILE = "--measurements {value!r}: no such file and not a preset; the presets are {presets}"
MSG_TOML = "{path}: not valid TOML ({error}); see docs/measurements.md for the format"
MSG_NO_TOMLLIB = "{path}: reading TOML needs Python 3.11 or the tomli package (pip install tomli)"
MSG_KEYPOINT = ("measurement {name!r} uses keypoint {kp!r}, which the predictions do not have; "
                "the keypoints are {known}")
MSG_BAD_SPEC = "measurements: expected a preset name, a TOML path, a list of definitions or a MeasurementSet, got {type}"
MSG_COORDS = "measurement coordinates: expected an array of shape (N, K, 2) with K = {k}, got shape {shape}"


@dataclass(frozen=True)
class Measurement:
    """One clinical measurement (see the module docstring for the kinds).

    Attributes
    ----------
    name : str
    kind : str
        One of :data:`KINDS`.
    points : tuple
        Keypoint labels (``angle``, ``line_angle``, ``distance``, ``ratio``).
    of : tuple of str
        Names of the measurements combined (``ratio``, ``difference``, ``sum``).
    weights : tuple of float
        Weights of a ``sum`` (default all 1).
    signed : bool or str
        ``line_angle``: True for a signed angle; ``distance``: "x" or "y".
    tolerance : float or None
        Largest absolute error that counts as a success.
    cuts : tuple of float
        Class cut points, increasing.
    classes : tuple of str
        Class labels, one more than the cuts.
    report : bool
        False for helpers used only inside other measurements.
    description : str
    unit : str or None
        Display unit; default from the kind ("deg", the coordinate unit, "ratio").
    """

    name: str
    kind: str
    points: tuple = ()
    of: tuple = ()
    weights: tuple = ()
    signed: object = False
    tolerance: float | None = None
    cuts: tuple = ()
    classes: tuple = ()
    report: bool = True
    description: str = ""
    unit: str | None = None

    @property
    def has_classes(self) -> bool:
        """Whether the measurement defines classes."""
        return len(self.cuts) > 0

    def unit_for(self, coordinate_unit: str, others: Mapping[str, Measurement] | None = None) -> str:
        """Display unit given the unit of the coordinates ("mm" or "px")."""
        if self.unit:
            return self.unit
        if self.kind in ("angle", "line_angle"):
            return "deg"
        if self.kind == "distance":
            return coordinate_unit
        if self.kind == "ratio":
            return "ratio"
        if others and self.of and self.of[0] in others:
            return others[self.of[0]].unit_for(coordinate_unit, others)
        return ""


@dataclass(frozen=True)
class MeasurementSet:
    """Validated measurements, in definition order.

    Attributes
    ----------
    name : str
        Preset name or file name.
    measurements : tuple of Measurement
        All definitions, helpers included.
    source : str
        Where they came from (for messages).
    citation : str
        Reference of a preset, empty for user files.
    """

    name: str
    measurements: tuple
    source: str
    citation: str = ""
    by_name: dict[str, Measurement] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name.update({m.name: m for m in self.measurements})

    @property
    def reported(self) -> list[Measurement]:
        """The measurements that are reported (``report`` true)."""
        return [m for m in self.measurements if m.report]

    def keypoints(self) -> list[object]:
        """Every keypoint label used, in first-use order."""
        out: list[object] = []
        for m in self.measurements:
            out += [p for p in m.points if p not in out]
        return out


# -- validation ------------------------------------------------------------------------------------------------
def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def _keypoint_label(value: object) -> int | str | None:
    if isinstance(value, bool) or not isinstance(value, (int, str, np.integer)):
        return None
    return int(value) if isinstance(value, (int, np.integer)) else value


def _check_one(raw: object, index: int, src: str) -> Measurement:
    which = f"#{index + 1}"
    if isinstance(raw, Measurement):
        raw = {k: getattr(raw, k) for k in _KEYS}
    if not isinstance(raw, Mapping):
        raise InputError(MSG_NOT_TABLE.format(src=src, got=type(raw).__name__))
    name = raw.get("name")
    where = MSG_WHERE.format(src=src, which=which)
    if not isinstance(name, str) or not name.strip():
        raise InputError(MSG_NAME.format(where=where, value=name))
    where = MSG_WHERE.format(src=src, which=repr(name))
    for key in raw:
        if key not in _KEYS:
            raise InputError(MSG_UNKNOWN_KEY.format(where=where, key=key, known=", ".join(sorted(_KEYS))))
    kind = raw.get("kind")
    if kind not in KINDS:
        raise InputError(MSG_KIND.format(where=where, value=kind, kinds=", ".join(KINDS)))
    points = raw.get("points") or ()
    of = raw.get("of") or ()
    layouts = {"angle": "a, vertex, b", "line_angle": "p1, p2, q1, q2", "distance": "a, b",
               "ratio": "a, b, c, d for |ab| / |cd|"}
    if kind in ("angle", "line_angle", "distance") or (kind == "ratio" and not of):
        labels = [_keypoint_label(p) for p in points] if isinstance(points, Sequence) and not isinstance(
            points, str) else None
        if labels is None or len(labels) != _N_POINTS[kind] or any(p is None for p in labels):
            raise InputError(MSG_POINTS.format(where=where, kind=kind, n=_N_POINTS[kind], layout=layouts[kind],
                                               value=points))
        points, of = tuple(labels), ()
    else:
        n = "2" if kind in ("ratio", "difference") else "2 or more"
        ok = isinstance(of, Sequence) and not isinstance(of, str) and all(isinstance(x, str) for x in of)
        if not ok or (len(of) != 2 if kind in ("ratio", "difference") else len(of) < 2) or points:
            raise InputError(MSG_OF.format(where=where, kind=kind, n=n, value=of))
        points, of = (), tuple(of)
    weights = raw.get("weights") or ()
    if weights:
        if kind != "sum" or not isinstance(weights, Sequence) or len(weights) != len(of) or not all(
                _number(w) and np.isfinite(w) for w in weights):
            raise InputError(MSG_WEIGHTS.format(where=where, n=len(of), value=weights))
        weights = tuple(float(w) for w in weights)
    signed = raw.get("signed", False)
    allowed = {"line_angle": (False, True), "distance": (False, "x", "y")}.get(kind, (False,))
    if signed is None:
        signed = False
    if not any(signed is a or (isinstance(a, str) and signed == a) for a in allowed):
        raise InputError(MSG_SIGNED.format(where=where, kind=kind, value=signed,
                                           allowed=" or ".join(repr(a).lower() for a in allowed)))
    tolerance = raw.get("tolerance")
    if tolerance is not None and not (_number(tolerance) and np.isfinite(tolerance) and tolerance > 0):
        raise InputError(MSG_TOLERANCE.format(where=where, value=tolerance))
    cuts = raw.get("cuts") or ()
    if cuts:
        ok = isinstance(cuts, Sequence) and all(_number(c) and np.isfinite(c) for c in cuts)
        if not ok or any(b <= a for a, b in zip(cuts[:-1], cuts[1:])):
            raise InputError(MSG_CUTS.format(where=where, value=cuts))
        cuts = tuple(float(c) for c in cuts)
    classes = raw.get("classes") or ()
    if classes and not cuts:
        raise InputError(MSG_CLASSES_WITHOUT_CUTS.format(where=where))
    if cuts:
        if not classes:
            classes = tuple(_default_class_names(cuts))
        elif (not isinstance(classes, Sequence) or isinstance(classes, str) or len(classes) != len(cuts) + 1
              or not all(isinstance(c, str) and c.strip() for c in classes)):
            raise InputError(MSG_CLASSES.format(where=where, n=len(cuts) + 1, m=len(cuts), value=classes))
        classes = tuple(classes)
    report = raw.get("report", True)
    if not isinstance(report, bool):
        raise InputError(MSG_REPORT.format(where=where, value=report))
    return Measurement(name=name.strip(), kind=kind, points=points, of=of, weights=weights, signed=signed,
                       tolerance=None if tolerance is None else float(tolerance), cuts=cuts, classes=classes,
                       report=report, description=str(raw.get("description") or ""),
                       unit=raw.get("unit") or None)


def _default_class_names(cuts: Sequence[float]) -> list[str]:
    names = [f"< {cuts[0]:g}"]
    names += [f"{a:g} to {b:g}" for a, b in zip(cuts[:-1], cuts[1:])]
    return names + [f">= {cuts[-1]:g}"]


def check_measurements(definitions: Any, *, name: str = "measurements", source: str | None = None,
                       citation: str = "") -> MeasurementSet:
    """Validate measurement definitions and return them as a :class:`MeasurementSet`.

    Parameters
    ----------
    definitions : sequence of dict or Measurement, or a MeasurementSet
        One definition per measurement (the keys of a ``[[measurement]]``
        table).
    name : str
        Name of the set (a preset or file name).
    source : str, optional
        Where the definitions come from, for messages; default ``name``.
    citation : str
        Reference of a preset.

    Returns
    -------
    MeasurementSet

    Raises
    ------
    InputError
        One line naming the measurement and the key to fix.

    Examples
    --------
    >>> mset = check_measurements([{"name": "ANB", "kind": "difference", "of": ["SNA", "SNB"]},
    ...                            {"name": "SNA", "kind": "angle", "points": [1, 2, 5], "report": False},
    ...                            {"name": "SNB", "kind": "angle", "points": [1, 2, 6], "report": False}])
    >>> [m.name for m in mset.reported]
    ['ANB']
    """
    if isinstance(definitions, MeasurementSet):
        return definitions
    src = source or name
    if isinstance(definitions, (str, bytes)) or not isinstance(definitions, Sequence):
        raise InputError(MSG_NOT_TABLE.format(src=src, got=type(definitions).__name__))
    if not definitions:
        raise InputError(MSG_NONE.format(src=src))
    items = [_check_one(raw, i, src) for i, raw in enumerate(definitions)]
    names = [m.name for m in items]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise InputError(MSG_DUP_NAME.format(src=src, name=n))
    by_name = {m.name: m for m in items}
    for m in items:
        for ref in m.of:
            if ref not in by_name:
                raise InputError(MSG_OF_UNKNOWN.format(where=MSG_WHERE.format(src=src, which=repr(m.name)), ref=ref,
                                                       known=", ".join(names)))
    for m in items:  # cycles through 'of'
        _resolve_order(m.name, by_name, src, [])
    if not any(m.report for m in items):
        raise InputError(MSG_NOTHING_REPORTED.format(src=src))
    return MeasurementSet(name=name, measurements=tuple(items), source=src, citation=citation)


def _resolve_order(name: str, by_name: Mapping[str, Measurement], src: str, chain: list[str]) -> None:
    if name in chain:
        raise InputError(MSG_CYCLE.format(where=MSG_WHERE.format(src=src, which=repr(chain[0])),
                                          chain=" -> ".join(chain + [name])))
    for ref in by_name[name].of:
        _resolve_order(ref, by_name, src, chain + [name])


# -- files and presets -----------------------------------------------------------------------------------------
def _read_toml(path: str) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise InputError(MSG_NO_TOMLLIB.format(path=path)) from None
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(MSG_TOML.format(path=path, error=str(exc).splitlines()[0])) from None


def load_measurements(spec: Any) -> MeasurementSet:
    """Measurements from a preset name, a TOML file, a list of definitions or a set.

    Parameters
    ----------
    spec : str, os.PathLike, sequence of dict, or MeasurementSet
        ``"isbi2015"`` or ``"dha"`` (see :data:`PRESETS`), a path to a TOML
        file with ``[[measurement]]`` tables, or definitions as in
        :func:`check_measurements`.

    Returns
    -------
    MeasurementSet

    Examples
    --------
    >>> [m.name for m in load_measurements("isbi2015").reported]
    ['ANB', 'SNB', 'SNA', 'ODI', 'APDI', 'FHI', 'FMA', 'MW']
    """
    if isinstance(spec, MeasurementSet):
        return spec
    if isinstance(spec, str) and spec.lower() in PRESETS:
        preset = PRESETS[spec.lower()]
        return check_measurements(preset["measurements"], name=spec.lower(), source=f"preset {spec.lower()!r}",
                                  citation=preset.get("citation", ""))
    if isinstance(spec, (str, os.PathLike)):
        path = os.fspath(spec)
        if not os.path.isfile(path):
            raise InputError(MSG_FILE.format(value=path, presets=", ".join(PRESETS)))
        doc = _read_toml(path)
        tables = doc.get("measurement", doc.get("measurements"))
        if tables is None:
            raise InputError(MSG_NONE.format(src=path))
        return check_measurements(tables, name=os.path.basename(path), source=path)
    if isinstance(spec, Sequence) and not isinstance(spec, bytes):
        return check_measurements(spec)
    raise InputError(MSG_BAD_SPEC.format(type=type(spec).__name__))


# -- geometry ----------------------------------------------------------------------------------------------------
def _angle_between(u: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned angle in degrees between vectors (..., 2); NaN when one has zero length."""
    cross = u[..., 0] * w[..., 1] - u[..., 1] * w[..., 0]
    dot = (u * w).sum(axis=-1)
    degenerate = (np.hypot(u[..., 0], u[..., 1]) == 0) | (np.hypot(w[..., 0], w[..., 1]) == 0)
    angle = np.degrees(np.arctan2(np.abs(cross), dot))  # stabler than arccos near 0 and 180 degrees
    return np.where(degenerate, np.nan, angle), cross


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = b - a
    return np.hypot(d[..., 0], d[..., 1])


def _values_of(m: Measurement, pts: Mapping[object, np.ndarray], done: Mapping[str, np.ndarray]) -> np.ndarray:
    """Values of measurement ``m`` for every row; ``pts`` maps a keypoint label to (N, 2) coordinates."""
    if m.kind == "angle":
        a, v, b = (pts[p] for p in m.points)
        return _angle_between(a - v, b - v)[0]
    if m.kind == "line_angle":
        p1, p2, q1, q2 = (pts[p] for p in m.points)
        angle, cross = _angle_between(p2 - p1, q2 - q1)
        return np.where(cross < 0, -angle, angle) if m.signed is True else angle
    if m.kind == "distance":
        a, b = (pts[p] for p in m.points)
        dist = _distance(a, b)
        if m.signed in ("x", "y"):
            axis = 0 if m.signed == "x" else 1
            dist = np.where(b[:, axis] < a[:, axis], -dist, dist)
        return dist
    if m.kind == "ratio":
        if m.points:
            a, b, c, d = (pts[p] for p in m.points)
            num, den = _distance(a, b), _distance(c, d)
        else:
            num, den = done[m.of[0]], done[m.of[1]]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den == 0, np.nan, num / np.where(den == 0, 1.0, den))
    if m.kind == "difference":
        return done[m.of[0]] - done[m.of[1]]
    weights = m.weights or (1.0,) * len(m.of)
    return sum(w * done[name] for w, name in zip(weights, m.of))


def _label_index(keypoints: Sequence[object]) -> dict[str, int]:
    return {str(k): i for i, k in enumerate(keypoints)}


def measurement_values(coords: ArrayLike, keypoints: Sequence[object], measurements: Any, *,
                       reported_only: bool = True) -> np.ndarray:
    """Every measurement for every row of coordinates.

    Parameters
    ----------
    coords : ndarray, shape (N, K, 2)
        Keypoint coordinates per row (image); NaN for a missing point, which
        makes every measurement using it NaN.
    keypoints : sequence
        The K keypoint labels of ``coords`` (matched as text, so ``1`` and
        ``"1"`` are the same keypoint).
    measurements : MeasurementSet or anything :func:`load_measurements` takes
    reported_only : bool, default True
        Return only the reported measurements (helpers left out).

    Returns
    -------
    ndarray, shape (N, M)
        One column per (reported) measurement, in definition order.

    Raises
    ------
    InputError
        A measurement uses a keypoint that ``keypoints`` does not have.

    Examples
    --------
    >>> mset = check_measurements([{"name": "a", "kind": "angle", "points": ["p", "o", "q"]}])
    >>> xy = np.array([[[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]])
    >>> measurement_values(xy, ["p", "o", "q"], mset)
    array([[90.]])
    """
    mset = load_measurements(measurements)
    coords = np.asarray(coords, dtype=float)
    if coords.ndim != 3 or coords.shape[1] != len(keypoints) or coords.shape[2] != 2:
        raise InputError(MSG_COORDS.format(k=len(keypoints), shape=coords.shape))
    index = _label_index(keypoints)
    pts = {}
    for m in mset.measurements:
        for p in m.points:
            if str(p) not in index:
                known = ", ".join(map(str, list(keypoints)[:25])) + (", ..." if len(keypoints) > 25 else "")
                raise InputError(MSG_KEYPOINT.format(name=m.name, kp=p, known=known))
            pts[p] = coords[:, index[str(p)], :]
    done: dict = {}

    def compute(name: str) -> np.ndarray:
        if name not in done:
            m = mset.by_name[name]
            for ref in m.of:
                compute(ref)
            with np.errstate(invalid="ignore"):
                done[name] = np.asarray(_values_of(m, pts, done), dtype=float)
        return done[name]

    chosen = mset.reported if reported_only else list(mset.measurements)
    if not chosen:
        return np.empty((coords.shape[0], 0))
    return np.column_stack([compute(m.name) for m in chosen])


def classify(values: ArrayLike, measurement: Measurement) -> np.ndarray:
    """Class index of each value (0 = below the first cut); -1 for NaN.

    A value equal to a cut point falls in the upper class.

    Examples
    --------
    >>> m = Measurement("ANB", "difference", of=("SNA", "SNB"), cuts=(3.2, 5.7))
    >>> classify(np.array([1.0, 3.2, 4.0, 5.7, 9.0, np.nan]), m)
    array([ 0,  1,  1,  2,  2, -1])
    """
    values = np.asarray(values, dtype=float)
    codes = np.searchsorted(np.asarray(measurement.cuts, dtype=float), values, side="right")
    return np.where(np.isnan(values), -1, codes)


# -- presets -------------------------------------------------------------------------------------------------
# ISBI 2015 numbering: 1 sella, 2 nasion, 3 orbitale, 4 porion, 5 subspinale (A), 6 supramentale (B), 7 pogonion,
# 8 menton, 9 gnathion, 10 gonion, 11 lower incisal incision, 12 upper incisal incision, 13 upper lip, 14 lower lip,
# 15 subnasale, 16 soft-tissue pogonion, 17 posterior nasal spine, 18 anterior nasal spine, 19 articulare.
_ISBI2015 = [
    {"name": "ANB", "kind": "difference", "of": ["SNA", "SNB"], "tolerance": 2.0,
     "description": "SNA - SNB (sagittal jaw relation)",
     "cuts": [3.2, 5.7], "classes": ["Class III", "Class I", "Class II"]},
    {"name": "SNB", "kind": "angle", "points": [1, 2, 6], "tolerance": 2.0,
     "description": "angle sella-nasion-B point at nasion",
     "cuts": [74.6, 78.7], "classes": ["retrognathic mandible", "normal mandible", "prognathic mandible"]},
    {"name": "SNA", "kind": "angle", "points": [1, 2, 5], "tolerance": 2.0,
     "description": "angle sella-nasion-A point at nasion",
     "cuts": [79.4, 83.2], "classes": ["retrognathic maxilla", "normal maxilla", "prognathic maxilla"]},
    {"name": "AB-MP", "kind": "line_angle", "points": [8, 10, 6, 5], "report": False,
     "description": "A-B plane to mandibular plane (menton-gonion), unsigned"},
    {"name": "FH-PP", "kind": "line_angle", "points": [4, 3, 17, 18], "signed": True, "report": False,
     "description": "Frankfort horizontal (porion-orbitale) to palatal plane (PNS-ANS), signed"},
    {"name": "ODI", "kind": "sum", "of": ["AB-MP", "FH-PP"], "tolerance": 3.0,
     "description": "overbite depth indicator: AB-MP + FH-PP",
     "cuts": [68.4, 80.5], "classes": ["open bite tendency", "normal", "deep bite tendency"]},
    {"name": "FH-NPog", "kind": "line_angle", "points": [3, 4, 2, 7], "report": False,
     "description": "Frankfort horizontal (orbitale-porion) to facial plane (nasion-pogonion), unsigned"},
    {"name": "AB-NPog", "kind": "line_angle", "points": [5, 6, 2, 7], "signed": True, "report": False,
     "description": "A-B plane to facial plane, signed"},
    {"name": "APDI", "kind": "sum", "of": ["FH-NPog", "AB-NPog", "FH-PP"], "tolerance": 3.0,
     "description": "anteroposterior dysplasia indicator: FH-NPog + AB-NPog + FH-PP",
     "cuts": [77.6, 85.2], "classes": ["Class II tendency", "normal", "Class III tendency"]},
    {"name": "FHI", "kind": "ratio", "points": [1, 10, 2, 8], "tolerance": 0.02,
     "description": "facial height index: posterior (S-Go) / anterior (N-Me) face height",
     "cuts": [0.65, 0.75], "classes": ["long face tendency", "normal", "short face tendency"]},
    {"name": "FMA", "kind": "line_angle", "points": [1, 2, 10, 9], "tolerance": 2.0,
     "description": "angle between sella-nasion and gonion-gnathion (the challenge's 'FMA')",
     "cuts": [26.8, 31.4], "classes": ["low angle tendency", "normal", "high angle tendency"]},
    {"name": "MW", "kind": "distance", "points": [11, 12], "signed": "x", "tolerance": 1.0,
     "description": "modified Wits: |L11 L12|, negative when the upper incisal incision lies behind the lower",
     "cuts": [0.0, 2.0, 4.5], "classes": ["anterior crossbite", "edge to edge", "normal", "large overjet"]},
]
# Digital Hand Atlas, 37 landmarks: 1-18 wrist and carpals (1 and 5 the wrist ends), 19-21 thumb, 22-25 index,
# 26-29 middle, 30-33 ring, 34-37 little finger, each finger from its base towards the tip.
_DHA = [
    {"name": "index length", "kind": "distance", "points": [22, 25], "tolerance": 2.0,
     "description": "index finger, landmark 22 to 25"},
    {"name": "middle length", "kind": "distance", "points": [26, 29], "tolerance": 2.0,
     "description": "middle finger, landmark 26 to 29"},
    {"name": "ring length", "kind": "distance", "points": [30, 33], "tolerance": 2.0,
     "description": "ring finger, landmark 30 to 33"},
    {"name": "little length", "kind": "distance", "points": [34, 37], "tolerance": 2.0,
     "description": "little finger, landmark 34 to 37"},
    {"name": "2D:4D", "kind": "ratio", "of": ["index length", "ring length"], "tolerance": 0.02,
     "description": "index to ring finger length ratio (a skeletal proxy of the digit ratio)",
     "cuts": [1.0], "classes": ["index shorter", "index as long or longer"]},
    {"name": "thumb angle", "kind": "line_angle", "points": [19, 21, 26, 29], "tolerance": 3.0,
     "description": "angle between the thumb axis (19-21) and the middle finger axis (26-29)"},
]

PRESETS: dict[str, dict[str, Any]] = {
    "isbi2015": {"measurements": _ISBI2015, "citation": ISBI2015_CITATION},
    "dha": {"measurements": _DHA, "citation": ""},
}
