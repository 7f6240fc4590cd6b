"""Tensors in and out of Triton's Python backend without its NumPy bindings.

The Python-backend stub (Triton 2.51, as bundled in ``nvidia-pytriton``) is built
against NumPy 1's C structures. Under NumPy 2 its NumPy paths read the dtype's
item size from the wrong field: ``input.as_numpy()`` returns arrays whose
strides are 0 (every element reads the first one), ``pb_utils.Tensor(name,
array)`` sends an *empty* tensor, and BYTES tensors crash the stub. trtkit must
not force NumPy < 2 on its users, so tensors cross through DLPack, which the
stub implements in C without NumPy, and which NumPy 1.22+ and 2.x both speak:

* in: ``np.from_dlpack(pb_tensor)`` (a zero-copy view of the request tensor);
* out: ``pb_utils.Tensor.from_dlpack(name, capsule)``.

The out path needs one more step. The stub marks a capsule it consumed by
renaming it ``"used_dlpack"`` instead of the DLPack standard's
``"used_dltensor"``; NumPy's capsule destructor then fails to recognise the
capsule as consumed and raises ``PyCapsule_GetPointer called with incorrect
name`` (an exception with NumPy 2.4, a logged warning with older releases).
:func:`to_pb` therefore takes the ``DLManagedTensor`` out of NumPy's capsule,
marks NumPy's capsule consumed under the standard name (so NumPy's destructor
does nothing), and hands the stub a fresh capsule without a destructor. The
stub then owns the tensor and calls its DLPack deleter, which releases the
array, when it is done: no copy, no leak, no double free. Hand-written
(``ctypes`` on the stable CPython capsule API) because no library offers
capsule re-wrapping.
It also clears the exported strides (C-contiguous arrays need none), because
the stub's contiguity check rejects the strides NumPy exports for an empty
array (e.g. zero detections).

Triton's BYTES type cannot cross at all under NumPy 2, so trtkit's
Python-backend models carry encoded images and JSON as UINT8 tensors.

This module imports nothing from Triton: the stub passes ``pb_utils`` in.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from ..errors import DTypeError, TaskError

__all__ = ["from_pb", "to_pb", "json_tensor"]

_DLTENSOR = b"dltensor"
_USED = b"used_dltensor"

_api = ctypes.pythonapi
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_SetName.restype = ctypes.c_int
_api.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_New.restype = ctypes.py_object
_api.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]

# The capsule API keeps the name *pointer*: these module-level bytes outlive every capsule.
_NAME_LIVE = ctypes.c_char_p(_DLTENSOR)
_NAME_USED = ctypes.c_char_p(_USED)

_STRIDES_OFFSET = 32

# dtypes the stub maps from DLPack (bool, ints, uints, float16/32/64)
_KINDS = "biuf"


def from_pb(tensor: Any) -> np.ndarray:
    """A request tensor as a NumPy array (zero-copy, read-only use)."""
    return np.from_dlpack(tensor)


def to_pb(pb_utils: Any, name: str, array: Any) -> Any:
    """A ``pb_utils.Tensor`` named ``name`` holding ``array`` (made C-contiguous)."""
    arr = np.ascontiguousarray(array)
    if not arr.flags.writeable:  # legacy DLPack cannot signal read-only: export a copy
        arr = arr.copy()
    if arr.dtype.kind not in _KINDS:
        raise DTypeError(
            f"output {name!r}: dtype {arr.dtype} cannot be handed to Triton's Python backend (DLPack takes bool, "
            "integer and float arrays); encode text or objects as UTF-8 in a uint8 array, as json_tensor does"
        )
    if arr.ndim == 0:
        arr = arr.reshape(1)
    capsule = arr.__dlpack__()
    managed = _api.PyCapsule_GetPointer(capsule, _NAME_LIVE)
    if _api.PyCapsule_SetName(capsule, _NAME_USED) != 0:  # NumPy's destructor now leaves it alone
        raise TaskError(
            f"output {name!r}: PyCapsule_SetName refused to mark NumPy's DLPack capsule consumed; the tensor was "
            "not sent. This is a trtkit bug: please report it with your NumPy and Python versions"
        )
    # The array is C-contiguous: say so the DLPack way (strides NULL). NumPy exports explicit strides, and
    # the stub's own contiguity check rejects valid ones for empty arrays. DLTensor layout: data (8),
    # device (8), ndim (4), dtype (4), shape (8), strides (8) -> strides at byte 32. NumPy allocates shape
    # and strides inside the managed tensor's own block, so nothing leaks.
    ctypes.c_void_p.from_address(managed + _STRIDES_OFFSET).value = None
    handed = _api.PyCapsule_New(managed, _NAME_LIVE, None)
    return pb_utils.Tensor.from_dlpack(name, handed)


def json_tensor(pb_utils: Any, name: str, document: Any) -> Any:
    """``document`` as UTF-8 JSON in a UINT8 tensor (BYTES cannot cross under NumPy 2, see above)."""
    import json

    data = json.dumps(document, separators=(",", ":")).encode("utf-8")
    return to_pb(pb_utils, name, np.frombuffer(data, np.uint8))
