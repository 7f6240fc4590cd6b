"""The one tolerance rule of trtkit: Polygraphy's elementwise check.

An element of A fails against reference B only when it exceeds *both* tolerances:
``|a - b| > atol`` and ``|a - b| / |b| > rtol`` (a zero in B counts as ``EPSILON``, and a NaN
difference fails). ``compare``, the export parity check and reshape's verification all use
it, so a model that passes one passes the others (numpy's ``allclose`` rule,
``|a - b| <= atol + rtol * |b|``, is stricter where both tolerances matter).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..errors import SpecError

__all__ = ["EPSILON", "check_tolerances", "elementwise_errors"]

EPSILON = 2.220446049250313e-16  # Polygraphy's guard for zeros in the reference (np.finfo(float).eps)


def check_tolerances(values: Iterable[tuple[str, float]]) -> None:
    """Every ``(flag, value)`` must be a number >= 0; a negative (or NaN) tolerance fails every output."""
    for flag, value in values:
        if not value >= 0:  # also catches NaN
            raise SpecError(f"tolerance {flag}={value} must be a number >= 0 (0 means exact); give a non-negative value")


def elementwise_errors(a: np.ndarray, b: np.ndarray, *, atol: float, rtol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(absdiff, reldiff, mismatch) of A against reference B, same shapes; float64, NaN where undefined.

    As in Polygraphy, ``inf - inf`` is NaN, so even identical infinities mismatch; booleans compare by xor.
    """
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if a.dtype == np.bool_ and b.dtype == np.bool_:
            absdiff = np.logical_xor(a, b).astype(np.float64)
        else:
            absdiff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        ref = np.abs(b.astype(np.float64))
        ref[ref == 0] = EPSILON
        reldiff = absdiff / ref
        mismatch = ((absdiff > atol) | np.isnan(absdiff)) & ((reldiff > rtol) | np.isnan(reldiff))
    return absdiff, reldiff, mismatch
