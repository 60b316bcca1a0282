"""Working memory of the significance layer, estimated before any resample is drawn.

A request whose arrays cannot fit (say 100,000 keypoints with the default 10,000 permutations and 2,000
bootstrap resamples) used to die half-way with a numpy ``MemoryError``. :func:`fit_batch_size` estimates
the memory up front: the result arrays (which grow with the number of resamples and keypoints) must fit,
and the batch of resamples handled at once is lowered until its working arrays fit as well (the batch size
never changes the draws, nor any number made of hit counts; the last float32 bits of error sums can follow
it on some BLAS builds, see :mod:`fairlandmark.stats.significance`). When even that is not enough it raises
:class:`InputError` with one line saying what to reduce.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fairlandmark.exceptions import InputError

__all__ = ["SignificanceMemory", "available_memory", "fit_batch_size", "MEMORY_SHARE", "MSG_TOO_BIG"]

# Share of the available memory the significance layer may plan to use (the rest: pandas, the study, slack).
MEMORY_SHARE = 0.6
GIB = 1 << 30
MSG_TOO_BIG = ("significance for {n_keypoints} keypoints x {n_attributes} attribute(s) needs about {need:.1f} GiB of "
               "memory, more than the {have:.1f} GiB available; reduce «permutations» ({permutations}), «bootstrap» "
               "({bootstrap}) or «baseline_repeats» ({baseline}), audit fewer attributes or keypoints, or turn "
               "«significance» off")


@dataclass(frozen=True)
class SignificanceMemory:
    """Bytes the significance layer holds: ``fixed`` (results, prepared arrays) plus ``per_resample`` per batch slot."""

    fixed: int
    per_resample: int

    def total(self, batch_size: int) -> int:
        """Bytes at a given batch size."""
        return self.fixed + self.per_resample * batch_size


def available_memory() -> int | None:
    """Bytes of memory available to this process now (Linux ``MemAvailable``), or None when unknown.

    ``FAIRLANDMARK_MEMORY_BYTES`` in the environment overrides it (for tests and for shared machines).
    """
    override = os.environ.get("FAIRLANDMARK_MEMORY_BYTES")
    if override:
        try:
            return int(float(override))
        except ValueError:
            return None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def estimate(*, n_rows: int, max_rows_per_run: int, n_runs: int, n_cells: int, n_columns: int, n_keypoints: int,
             groups: list[int], permutations: int, bootstrap: int, baseline_repeats: int) -> SignificanceMemory:
    """Estimated bytes of :func:`fairlandmark.stats.significance.run_significance` (float64 results).

    ``groups`` holds the number of groups of each audited attribute. Per batch slot: the kernel's sums
    ``(runs, cells, columns)``, per attribute aggregates ``(runs, groups, columns)`` and their SDR/MRE, the
    label comparison ``(cells, rows of a run)`` in float32, and the bootstrap draws (four arrays per row).
    """
    g_max = max(groups) if groups else 1
    per_resample = (8 * n_runs * n_cells * n_columns
                    + 3 * 8 * n_runs * g_max * n_columns
                    + 4 * n_cells * max_rows_per_run
                    + (32 * max_rows_per_run + 8 * n_rows if bootstrap else 0))
    results = 0
    for g in groups:
        results += 8 * n_keypoints * (2 * permutations + bootstrap * (1 + 2 * g) + baseline_repeats)
    prepared = 4 * n_rows * n_columns * 2 + 8 * n_runs * n_cells * n_columns
    return SignificanceMemory(fixed=results + prepared, per_resample=per_resample)


def fit_batch_size(memory: SignificanceMemory, batch_size: int, *, n_keypoints: int, n_attributes: int,
                   permutations: int, bootstrap: int, baseline_repeats: int, available: int | None = None) -> int:
    """The largest batch size up to ``batch_size`` whose working memory fits; InputError when none does.

    Examples
    --------
    >>> mem = SignificanceMemory(fixed=10 * GIB, per_resample=GIB)
    >>> fit_batch_size(mem, 500, n_keypoints=19, n_attributes=1, permutations=1, bootstrap=1, baseline_repeats=1,
    ...                available=40 * GIB)
    14
    """
    have = available_memory() if available is None else available
    if have is None:
        return batch_size
    budget = int(have * MEMORY_SHARE)
    room = budget - memory.fixed
    if room < memory.per_resample:
        raise InputError(MSG_TOO_BIG.format(n_keypoints=n_keypoints, n_attributes=n_attributes,
                                            need=memory.total(1) / MEMORY_SHARE / GIB, have=have / GIB,
                                            permutations=permutations, bootstrap=bootstrap,
                                            baseline=baseline_repeats))
    return max(1, min(batch_size, room // max(memory.per_resample, 1)))
