"""The contract of an output layout: how a detector's raw outputs become boxes, on the host and in-graph.

A layout (one module under ``tasks/layouts/`` plus one line in the registry in
``tasks/layouts/__init__.py``) declares:

* ``preprocess``: the preprocessing its models are trained with (a complete
  :class:`~trtkit.tasks.preprocess.Preprocess`), applied when the layout is
  picked unless the user overrides a field;
* ``bind(outputs, size, labels, forced)``: which model output plays which role,
  by name where the layout has names (never by position: engines may reorder
  outputs) and by shape otherwise; ``None`` when the outputs do not fit;
* ``decode(arrays, binding, size)``: batch-1 output arrays -> :class:`Candidates`
  (every box with per-class scores, before thresholding and NMS) or, for graphs
  that already ran NMS, :class:`Selected`;
* ``graph(g, binding, size)``: the same decoding as ONNX nodes for
  ``trtkit add-nms`` (boxes ``[B,N,4]``, scores ``[B,C,N]``, landmarks
  ``[B,N,10]`` or None), so in-graph and host decoding are one definition each,
  side by side in the layout's module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from ...errors import TaskError
from ...spec import TensorSpec
from ..preprocess import Preprocess

__all__ = ["Layout", "Binding", "Candidates", "Selected", "static_size", "by_name"]


@dataclass(frozen=True)
class Binding:
    """role -> output name, plus facts the decoder needs (e.g. anchors per cell)."""

    roles: Mapping[str, str]
    auto: bool = True
    facts: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, role: str) -> str:
        return self.roles[role]


@dataclass(frozen=True)
class Candidates:
    """Every decoded box before thresholding: x1,y1,x2,y2 in model-input pixels."""

    boxes: np.ndarray  # [N, 4] float32
    scores: np.ndarray  # [N, C] float32 (C = 1 for faces)
    landmarks: np.ndarray | None = None  # [N, 5, 2]


@dataclass(frozen=True)
class Selected:
    """What a graph with NMS inside returns: already suppressed, best first or in graph order."""

    boxes: np.ndarray  # [K, 4]
    scores: np.ndarray  # [K]
    classes: np.ndarray  # [K] int64
    landmarks: np.ndarray | None = None  # [K, 5, 2]


def static_size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    h, w = size
    return (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None


class Layout:
    """Base class; see the module docstring. Instances are stateless (one per registry entry)."""

    name: ClassVar[str] = "layout"
    task: ClassVar[str] = "detect"
    has_nms: ClassVar[bool] = False
    needs_size: ClassVar[bool] = False  # decoding places anchors/grids: add-nms needs a static input size
    summary: ClassVar[str] = ""
    preprocess: ClassVar[Preprocess] = Preprocess()

    def defaults(self, metadata: Mapping[str, str]) -> Preprocess:
        """The preprocessing this model wants (the layout's; NMS graphs read what add-nms recorded)."""
        return self.preprocess

    def expected(self, size: tuple[int, int] | None) -> str:
        return self.summary

    def bind(
        self, outputs: Sequence[TensorSpec], size: tuple[int, int] | None, labels: Sequence[str], *, forced: bool
    ) -> Binding | None:
        raise NotImplementedError

    def num_classes(self, outputs: Sequence[TensorSpec], binding: Binding) -> int | None:
        return None

    def decode(self, arrays: Mapping[str, np.ndarray], binding: Binding, size: tuple[int, int]) -> Candidates | Selected:
        raise NotImplementedError

    def graph(self, g: Any, binding: Binding, size: tuple[int, int] | None) -> tuple[str, str, str | None]:
        raise TaskError(f"layout {self.name} has no in-graph decoding")


def by_name(outputs: Sequence[TensorSpec]) -> dict[str, TensorSpec]:
    return {o.name: o for o in outputs}
