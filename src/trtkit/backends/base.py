"""The Backend protocol and the feed normalisation every backend shares.

A backend exposes ``inputs``/``outputs`` (TensorSpec), ``infer(feeds) ->
dict[str, ndarray]`` in output order, ``close()``, and the context-manager
form. ``feeds`` may be a dict (by name), a list (in input order) or a single
array (single-input models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import ClosedError, DTypeError, ShapeError
from ..spec import TensorSpec, suggest_name

__all__ = ["Backend", "Feeds", "BackendBase", "StageTimes", "normalize_feeds"]

Feeds = Mapping[str, Any] | Sequence[Any] | np.ndarray


@dataclass(frozen=True)
class StageTimes:
    """One inference split into trtexec's stages, in milliseconds, measured with CUDA events.

    GPU backends offer ``timed_infer(feeds, *, transfers=True) -> StageTimes``.
    ``enqueue_ms`` is host wall time to launch the work (trtexec's "Enqueue Time").
    ``latency_ms`` is h2d + compute + d2h on the stream (trtexec's "Latency").
    With ``transfers=False`` inputs and outputs stay on the device (trtexec's
    ``--noDataTransfers``) and h2d_ms = d2h_ms = 0.
    """

    h2d_ms: float
    compute_ms: float
    d2h_ms: float
    enqueue_ms: float

    @property
    def latency_ms(self) -> float:
        return self.h2d_ms + self.compute_ms + self.d2h_ms


@runtime_checkable
class Backend(Protocol):
    name: str

    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    def infer(self, feeds: Feeds) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Backend": ...

    def __exit__(self, *exc: object) -> None: ...


class BackendBase:
    """Shared lifetime handling: ``close()`` is idempotent, use after close raises ClosedError."""

    name = "base"
    _closed = False
    _inputs: tuple[TensorSpec, ...] = ()
    _outputs: tuple[TensorSpec, ...] = ()

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def __enter__(self) -> "BackendBase":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    def _release(self) -> None:  # subclasses free their resources here
        pass

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{self.name} backend was used after close(); create a new one with trtkit.load(...)")


def _as_dict(specs: Sequence[TensorSpec], feeds: Feeds) -> dict[str, Any]:
    names = [s.name for s in specs]
    if isinstance(feeds, Mapping):
        return dict(feeds)
    if hasattr(feeds, "shape") and hasattr(feeds, "dtype"):  # one array (numpy, torch, cupy)
        if len(specs) != 1:
            raise ShapeError(
                f"infer() got a single array but the model has {len(specs)} inputs ({', '.join(names)}); "
                "pass a dict {name: array} or a list in input order"
            )
        return {names[0]: feeds}
    if isinstance(feeds, (list, tuple)):
        if len(feeds) != len(specs):
            raise ShapeError(
                f"infer() got a list of {len(feeds)} arrays but the model has {len(specs)} inputs "
                f"({', '.join(names)}); pass one array per input, in that order"
            )
        return dict(zip(names, feeds))
    raise ShapeError(f"infer() takes a dict, a list or an array, got {type(feeds).__name__}")


def normalize_feeds(specs: Sequence[TensorSpec], feeds: Feeds, *, allow_device: bool = False) -> dict[str, Any]:
    """Return ``{name: array}`` in input order, validated; numpy arrays made C-contiguous.

    Raises ShapeError for unknown or missing names, wrong rank or a static dim
    contradicted, and DTypeError for a dtype mismatch (never cast silently).
    Device arrays (``__cuda_array_interface__``) pass through when ``allow_device``.
    """
    given = _as_dict(specs, feeds)
    names = [s.name for s in specs]
    for name in given:
        if name not in names:
            raise ShapeError(
                f"infer() got input {name!r}, which the model does not have. "
                f"Model inputs: {', '.join(repr(n) for n in names)}.{suggest_name(name, names)}"
            )
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.name not in given:
            raise ShapeError(
                f"infer() is missing input {spec.name!r} ({spec.dtype} {spec.display_shape()}); "
                f"pass all of: {', '.join(names)}"
            )
        out[spec.name] = _check_array(spec, given[spec.name], allow_device=allow_device)
    return out


def _check_array(spec: TensorSpec, value: Any, *, allow_device: bool) -> Any:
    if isinstance(value, np.ndarray):  # the hot path: no device probing, no dtype string parsing
        is_device, arr, dtype = False, value, value.dtype
    else:
        is_device = hasattr(value, "__cuda_array_interface__") or (
            hasattr(value, "__dlpack_device__") and value.__dlpack_device__()[0] != 1
        )
        if is_device and not allow_device:
            raise DTypeError(
                f"input {spec.name!r} is a GPU array but this backend runs on the CPU; "
                "pass a numpy array (e.g. tensor.cpu().numpy()) or load the model with device='cuda'"
            )
        arr = value if is_device else np.asarray(value)
        dtype = np.dtype(str(arr.dtype).replace("torch.", ""))
    if dtype != spec.np_dtype:
        raise DTypeError(
            f"input {spec.name!r} expects dtype {spec.dtype} but got {dtype}; "
            f"convert it first, e.g. array.astype(np.{spec.dtype})"
        )
    shape = tuple(int(d) for d in arr.shape)
    if not spec.accepts(shape):
        raise ShapeError(
            f"input {spec.name!r} expects shape {spec.display_shape()} but got "
            f"[{','.join(map(str, shape))}]; "
            + (f"give {spec.rank} dims" if len(shape) != spec.rank else "match the static dims")
        )
    if not is_device and not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr
