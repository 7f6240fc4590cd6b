"""Choosing an optimization profile for a call, and splitting batches no profile holds.

Pure shape logic (no TensorRT), so the CPU suite tests it on real shapes.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ..errors import ProfileError
from ..spec import ShapeProfile, ShapeRange, format_shape

__all__ = ["engine_profiles", "choose_profile", "chunk_size", "no_profile_error"]

Shape = tuple[int, ...]


def engine_profiles(inputs: Sequence[tuple[str, Sequence[tuple[Shape, Shape, Shape]]]], count: int) -> tuple[ShapeProfile, ...]:
    """ShapeProfiles from the engine's ``(name, [(min, opt, max) per profile])`` input table."""
    return tuple(
        ShapeProfile(tuple((name, ShapeRange(*ranges[p])) for name, ranges in inputs if ranges))
        for p in range(count)
    )


def choose_profile(profiles: Sequence[ShapeProfile], shapes: Mapping[str, Shape], *, prefer: int) -> int | None:
    """Index of a profile holding every input shape (``prefer``, the context's current one, first)."""
    order = [prefer] + [i for i in range(len(profiles)) if i != prefer] if 0 <= prefer < len(profiles) else range(len(profiles))
    for index in order:
        if profiles[index].contains(shapes):
            return index
    return None


def chunk_size(profiles: Sequence[ShapeProfile], shapes: Mapping[str, Shape]) -> int | None:
    """Largest batch that some profile holds when only axis 0 is too big for it, else None.

    Splitting is safe only when every input shares the same batch dim and the
    rest of each shape fits; then outputs are concatenated along axis 0.
    """
    batches = {s[0] for s in shapes.values() if len(s) > 0}
    if len(batches) != 1 or any(len(s) == 0 for s in shapes.values()):
        return None
    best: int | None = None
    for profile in profiles:
        if not all(name in profile for name in shapes):
            continue
        cap = min(profile[name].max[0] for name in shapes)
        floor = max(profile[name].min[0] for name in shapes)
        if cap < 1 or cap < floor:
            continue
        if all(profile[name].contains((min(cap, shape[0]),) + tuple(shape[1:])) for name, shape in shapes.items()):
            best = max(best or 0, cap)
    return best


def no_profile_error(profiles: Sequence[ShapeProfile], shapes: Mapping[str, Shape], *, what: str) -> ProfileError:
    given = ", ".join(f"{n}: {format_shape(s)}" for n, s in shapes.items())
    listed = "; ".join(f"profile {i}: {p.describe()}" for i, p in enumerate(profiles)) or "(none)"
    return ProfileError(
        f"{what}: no optimization profile accepts the input shapes ({given}). The engine's profiles are {listed}. "
        "Resize the inputs into one of these ranges, or rebuild the engine with a profile that covers them "
        "(trtkit build --minShapes/--optShapes/--maxShapes)"
    )
