"""The check both GPU backends' tests run on their page-locked output arrays (PinnedArrayPool)."""

from __future__ import annotations

import numpy as np

from trtkit.backends import cuda


def check_output_recycling(backend, name: str, batches: list[dict], want: list[np.ndarray], close) -> None:
    """numpy outputs of ``backend`` come in page-locked arrays that are reused only once nothing holds them.

    - kept results (more than the pool holds) are all distinct and right; past the pool, new pageable arrays;
    - a loop that drops each result gets a few arrays back, page-locked, each with the right values;
    - a view of a result keeps its memory from reuse: 20 later calls do not change it;
    - after close() the view is still valid, and no longer page-locked.
    ``close(got, ref)`` asserts two outputs agree (each backend's tolerance).
    """
    n = len(batches)
    kept = [out[name] for out in backend.infer_many(batches * 4)]
    for i, got in enumerate(kept):
        close(got, want[i % n])
    assert len({k.ctypes.data for k in kept}) == len(kept)
    assert cuda.is_pinned(kept[0].ctypes.data)
    per_name = backend._out_arrays.per_name
    assert len(kept) > per_name and not cuda.is_pinned(kept[-1].ctypes.data)  # the pool is full: new arrays
    del kept

    seen = set()
    for i, out in enumerate(backend.infer_many(batches * 4)):
        got = out[name]
        close(got, want[i % n])
        assert cuda.is_pinned(got.ctypes.data)
        seen.add(got.ctypes.data)
    assert len(seen) <= per_name

    view = backend.infer(batches[0])[name][:1]
    frozen = view.copy()
    for _ in range(20):
        backend.infer(batches[1 % n])
    np.testing.assert_array_equal(view, frozen)
    backend.close()
    np.testing.assert_array_equal(view, frozen)
    assert not cuda.is_pinned(view.ctypes.data)
