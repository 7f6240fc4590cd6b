"""Value objects shared by every command: tensor specs, shape specs and profiles.

Shape specs use trtexec's syntax: ``input.1:1x3x640x640,other:1x4``. Names may
contain dots, slashes and colons; the shape is whatever follows the *last*
colon, so ``input:0:1x3x128x128`` names ``input:0``. A name that contains a
comma must be quoted as trtexec does: ``'a,b':1x3``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .errors import ProfileError, ShapeError, SpecError

__all__ = [
    "Dim",
    "Shape",
    "TensorSpec",
    "ShapeRange",
    "ShapeProfile",
    "RuntimeConfig",
    "BuildConfig",
    "parse_shapes",
    "parse_axes",
    "format_shape",
    "format_shapes",
    "validate_shapes",
    "suggest_name",
]

Dim = int | str  # int: static size; str: dynamic (symbolic name, or "?" when unnamed)
Shape = tuple[int, ...]

UNNAMED = "?"


_INFERRED_DIM = re.compile(r"unk__\d+")  # ONNX shape inference's names for dims it could not name


def _unnamed(dim: Dim) -> bool:
    return isinstance(dim, str) and (
        dim == UNNAMED or len(dim) > 24 or any(c in dim for c in "()+*/ ") or _INFERRED_DIM.fullmatch(dim) is not None
    )


def _dim(value: object) -> Dim:
    if isinstance(value, str):
        return value or UNNAMED
    if value is None or (isinstance(value, int) and value < 0):
        return UNNAMED
    return int(value)  # type: ignore[call-overload,arg-type,unused-ignore]


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, numpy dtype name, and shape.

    Static dims are ints; dynamic dims are strings (the symbolic name, or "?").
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(_dim(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def np_dtype(self) -> Any:
        """``numpy.dtype`` of this tensor (cached: it is on the per-call hot path)."""
        cached = self.__dict__.get("_np_dtype")
        if cached is None:
            import numpy as np

            cached = np.dtype(self.dtype)
            object.__setattr__(self, "_np_dtype", cached)
        return cached

    @property
    def is_dynamic(self) -> bool:
        return any(isinstance(d, str) for d in self.shape)

    @property
    def dynamic_axes(self) -> tuple[int, ...]:
        return tuple(i for i, d in enumerate(self.shape) if isinstance(d, str))

    def json_shape(self) -> list[int]:
        """The shape as ints, -1 for every dynamic dim."""
        return [d if isinstance(d, int) else -1 for d in self.shape]

    def display_shape(self) -> str:
        """``[batch,3,640,640]``: symbolic names kept; unnamed dynamic dims, and long symbolic
        expressions that exporters write (``floor(height/2 - 1/2)...``), shown as -1."""
        return "[" + ",".join(str(-1 if _unnamed(d) else d) for d in self.shape) + "]"

    def accepts(self, shape: Sequence[int]) -> bool:
        """True when a concrete ``shape`` has this rank and matches every static dim."""
        return len(shape) == self.rank and all(
            isinstance(d, str) or d == s for d, s in zip(self.shape, shape)
        )


# ---------------------------------------------------------------- parsing

def _split_items(text: str) -> list[str]:
    """Split on commas that are not inside quotes or Polygraphy-style ``[...]`` dims."""
    items, buf, quote, depth = [], [], "", 0
    for ch in text:
        if quote:
            buf.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            buf.append(ch)
        elif ch in "[]":
            depth += 1 if ch == "[" else -1
            buf.append(ch)
        elif ch == "," and depth <= 0:
            items.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quote:
        raise SpecError(f"shape spec {text!r} has an unclosed {quote} quote; close it, e.g. 'input:0':1x3x224x224")
    items.append("".join(buf))
    return [i.strip() for i in items]


def _is_dims(text: str) -> bool:
    """``4x3x64x64`` or ``4``: what a shape looks like without its name."""
    return bool(text) and all(p.strip().isdigit() for p in text.lower().split("x"))


def _split_name(item: str, *, full: str, example: str) -> tuple[str, str]:
    """``'in:0':1x3`` or ``in:0:1x3`` -> (name, rest). The rest follows the last colon."""
    if item[:1] in "'\"":
        end = item.find(item[0], 1)
        name, rest = item[1:end], item[end + 1 :]
        if not rest.startswith(":"):
            raise SpecError(f"shape spec item {item!r} in {full!r}: expected NAME:VALUE after the quoted name, e.g. {example}")
        return name, rest[1:]
    if "[" in item and item.endswith("]"):  # Polygraphy's images:[1,3,224,224]: the name ends before the bracket
        name, sep, rest = item[: item.index("[")].rpartition(":")
        rest = item[item.index("[") :] if sep else rest
    else:
        name, sep, rest = item.rpartition(":")
    if not sep and "=" in item:
        left, _, right = item.partition("=")
        if left and (_is_dims(right) or right.startswith("[")):
            raise SpecError(
                f"shape spec item {item!r} in {full!r} puts '=' between the input name and its dims; "
                f"the name ends with ':' (trtexec syntax): {left}:{right}"
            )
    if not sep or not name:
        what = f"gives dims {item!r} without an input name" if _is_dims(item) else "has no input name"
        raise SpecError(f"shape spec item {item!r} in {full!r} {what}; expected NAME:VALUE, e.g. {example}")
    return name, rest


def _parse_dims(text: str, *, item: str, full: str) -> Shape:
    if text.startswith("[") and text.endswith("]"):  # Polygraphy's [1,3,224,224]: the same dims, another spelling
        parts = text[1:-1].split(",")
    else:
        parts = text.lower().split("x")
    dims = []
    for p in parts:
        p = p.strip()
        if not p.isdigit():
            raise SpecError(
                f"shape {text!r} for {item!r} in {full!r} is not a list of non-negative integers "
                "joined by 'x'; expected e.g. 1x3x640x640 (dynamic dims take a concrete size in a shape spec)"
            )
        if int(p) == 0:
            raise SpecError(
                f"shape {text!r} for {item!r} in {full!r} has a 0 dim; dims must be >= 1 "
                "(an empty tensor cannot be run or profiled), e.g. 1x3x640x640"
            )
        dims.append(int(p))
    return tuple(dims)


def _comma_dims(items: Sequence[str], index: int, *, full: str) -> SpecError | None:
    """``images:4,3,64,64``: the comma split the dims of ``items[index - 1]``; name that mistake."""
    if index == 0 or not _is_dims(items[index]):
        return None
    head, sep, first = items[index - 1].rpartition(":")
    if not sep or not _is_dims(first):
        return None
    rest = []
    for later in items[index:]:
        if not _is_dims(later):
            break
        rest.append(later)
    fixed = f"{head}:{'x'.join([first, *rest])}"
    return SpecError(
        f"shape spec {full!r} separates the dims of {head!r} with commas; dims are joined with 'x' and commas "
        f"separate inputs (trtexec syntax): {fixed}"
    )


def parse_shapes(text: str) -> dict[str, Shape]:
    """Parse ``name:1x3x224x224,other:1x4`` (trtexec syntax) into ``{name: shape}``.

    Polygraphy's spelling of the dims, ``name:[1,3,224,224]``, is read too.
    """
    if not text or not text.strip():
        raise SpecError("shape spec is empty; expected NAME:DIMS[,NAME:DIMS...], e.g. input.1:1x3x640x640")
    shapes: dict[str, Shape] = {}
    items = _split_items(text.strip())
    for index, item in enumerate(items):
        if not item:
            raise SpecError(f"shape spec {text!r} has an empty item (a stray comma?); expected NAME:DIMS[,NAME:DIMS...]")
        mistake = _comma_dims(items, index, full=text)
        if mistake is not None:
            raise mistake
        name, dims = _split_name(item, full=text, example="input.1:1x3x640x640")
        if name in shapes:
            raise SpecError(f"shape spec {text!r} gives input {name!r} twice; give each input once")
        shapes[name] = _parse_dims(dims, item=item, full=text)
    return shapes


def parse_axes(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``images:0,2,3`` (one ``--dynamic`` flag) into ``("images", (0, 2, 3))``."""
    item = text.strip()
    name, axes = _split_name(item, full=text, example="images:0,2,3")
    try:
        parsed = tuple(int(a) for a in axes.split(","))
    except ValueError:
        raise SpecError(f"--dynamic {text!r}: axes {axes!r} must be comma-separated integers, e.g. images:0,2,3") from None
    if len(set(parsed)) != len(parsed):
        raise SpecError(f"--dynamic {text!r} repeats an axis; give each axis once")
    return name, parsed


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


def _quote(name: str) -> str:
    return f"'{name}'" if "," in name or name[:1] in "'\"" else name


def format_shapes(shapes: Mapping[str, Sequence[int]]) -> str:
    """Inverse of :func:`parse_shapes`."""
    return ",".join(f"{_quote(n)}:{format_shape(s)}" for n, s in shapes.items())


# ------------------------------------------------------------- validation

def suggest_name(name: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` or an empty string."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.4)
    return f" Did you mean {lowered[close[0]]!r}?" if close else ""


def _unknown(name: str, specs: Sequence[TensorSpec], what: str) -> ShapeError:
    names = [s.name for s in specs]
    return ShapeError(
        f"{what} names input {name!r}, which the model does not have. "
        f"Model inputs: {', '.join(repr(n) for n in names) or '(none)'}.{suggest_name(name, names)}"
    )


def validate_shapes(specs: Sequence[TensorSpec], shapes: Mapping[str, Sequence[int]], *, what: str = "shape spec") -> None:
    """Check names, ranks and static dims of concrete ``shapes`` against model inputs."""
    by_name = {s.name: s for s in specs}
    for name, shape in shapes.items():
        spec = by_name.get(name)
        if spec is None:
            raise _unknown(name, specs, what)
        if len(shape) != spec.rank:
            raise ShapeError(
                f"{what} gives {name!r} shape {format_shape(shape)} (rank {len(shape)}), but the model input "
                f"is {spec.display_shape()} (rank {spec.rank}); give {spec.rank} dims"
            )
        for axis, (want, got) in enumerate(zip(spec.shape, shape)):
            if isinstance(want, int) and want != got:
                raise ShapeError(
                    f"{what} gives {name!r} shape {format_shape(shape)}, but axis {axis} of the model input "
                    f"{spec.display_shape()} is static {want}; use {want} there, or make the axis dynamic "
                    f"first with `trtkit reshape --dynamic {name}:{axis}`"
                )


@dataclass(frozen=True)
class ShapeRange:
    """min/opt/max shapes of one input in one optimization profile."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        for attr in ("min", "opt", "max"):
            object.__setattr__(self, attr, tuple(int(d) for d in getattr(self, attr)))

    def check(self, name: str) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ProfileError(
                f"profile for {name!r}: min {format_shape(self.min)}, opt {format_shape(self.opt)} and "
                f"max {format_shape(self.max)} have different ranks; give the same number of dims to each"
            )
        for axis, (lo, mid, hi) in enumerate(zip(self.min, self.opt, self.max)):
            if not lo <= mid <= hi:
                raise ProfileError(
                    f"profile for {name!r}: axis {axis} needs min <= opt <= max, got min {lo}, opt {mid}, max {hi} "
                    f"(min {format_shape(self.min)}, opt {format_shape(self.opt)}, max {format_shape(self.max)}); "
                    "fix the --minShapes/--optShapes/--maxShapes values"
                )

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))

    def describe(self) -> str:
        return f"min {format_shape(self.min)} opt {format_shape(self.opt)} max {format_shape(self.max)}"


@dataclass(frozen=True)
class ShapeProfile:
    """One optimization profile: a ShapeRange per input name (insertion order kept)."""

    ranges: tuple[tuple[str, ShapeRange], ...] = ()

    @classmethod
    def from_shapes(
        cls,
        *,
        min: Mapping[str, Shape] | None = None,
        opt: Mapping[str, Shape] | None = None,
        max: Mapping[str, Shape] | None = None,
    ) -> "ShapeProfile":
        """Build from trtexec's --minShapes/--optShapes/--maxShapes. Each name needs all three."""
        given = {"--minShapes": dict(min or {}), "--optShapes": dict(opt or {}), "--maxShapes": dict(max or {})}
        names: list[str] = []
        for shapes in given.values():
            names += [n for n in shapes if n not in names]
        ranges = []
        for name in names:
            missing = [flag for flag, shapes in given.items() if name not in shapes]
            if missing:
                raise ProfileError(
                    f"input {name!r} is in {', '.join(f for f in given if f not in missing)} but not in "
                    f"{', '.join(missing)}; give all three of --minShapes/--optShapes/--maxShapes for it, "
                    "or --shapes for a fixed shape"
                )
            r = ShapeRange(given["--minShapes"][name], given["--optShapes"][name], given["--maxShapes"][name])
            r.check(name)
            ranges.append((name, r))
        return cls(tuple(ranges))

    @classmethod
    def fixed(cls, shapes: Mapping[str, Shape]) -> "ShapeProfile":
        """A profile where min = opt = max (trtexec's --shapes)."""
        return cls(tuple((n, ShapeRange(s, s, s)) for n, s in shapes.items()))

    def __getitem__(self, name: str) -> ShapeRange:
        for n, r in self.ranges:
            if n == name:
                return r
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(n == name for n, _ in self.ranges)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.ranges)

    def shapes(self, which: str) -> dict[str, Shape]:
        """``which`` is "min", "opt" or "max"."""
        return {n: getattr(r, which) for n, r in self.ranges}

    def contains(self, shapes: Mapping[str, Sequence[int]]) -> bool:
        return all(n in shapes and r.contains(shapes[n]) for n, r in self.ranges)

    def validate(self, specs: Sequence[TensorSpec], *, index: int = 0) -> None:
        """Names, ranks, static dims, min <= opt <= max, and every dynamic input covered."""
        what = f"optimization profile {index}"
        for which in ("min", "opt", "max"):
            validate_shapes(specs, self.shapes(which), what=f"{what} ({which})")
        for name, r in self.ranges:
            r.check(name)
        uncovered = [s for s in specs if s.is_dynamic and s.name not in self]
        if uncovered:
            flags = flags_for(uncovered)
            raise ProfileError(
                f"{what} gives no shapes for dynamic input(s) "
                f"{', '.join(f'{s.name!r} {s.display_shape()}' for s in uncovered)}; add them, e.g. {flags}"
            )

    def describe(self) -> str:
        return "; ".join(f"{n}: {r.describe()}" for n, r in self.ranges) or "(static shapes)"

    def to_json(self) -> dict[str, dict[str, list[int]]]:
        return {n: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)} for n, r in self.ranges}


@dataclass(frozen=True)
class BatchProfile:
    """A profile over the batch axis (axis 0) of every input whose batch is dynamic: ``batch`` is (min, opt, max).

    Resolved into a :class:`ShapeProfile` by ``trtkit.build`` against the model it has already loaded (so
    ``--dynamic-batch`` needs no second read of the ONNX file). The other dims come from the model when static,
    else from ``shapes`` (``--shapes`` in the same group), whose axis 0 must then be the opt batch.
    """

    batch: tuple[int, int, int]
    shapes: Mapping[str, tuple[int, ...]] | None = None

    def __post_init__(self) -> None:
        lo, mid, hi = self.batch
        if not 1 <= lo <= mid <= hi:
            raise ProfileError(f"batch range needs 1 <= min <= opt <= max, got min {lo}, opt {mid}, max {hi}")


def flags_for(specs: Sequence[TensorSpec], *, batch: tuple[int, int, int] = (1, 1, 1), size: int = 640) -> str:
    """Example --minShapes/--optShapes/--maxShapes flags for dynamic inputs.

    Dynamic axis 0 gets ``batch`` (min, opt, max); other dynamic axes get ``size``.
    """
    out = {}
    for k, which in enumerate(("min", "opt", "max")):
        out[which] = {
            s.name: tuple(
                d if isinstance(d, int) else (batch[k] if axis == 0 else size) for axis, d in enumerate(s.shape)
            )
            for s in specs
            if s.is_dynamic
        }
    return (
        f"--minShapes={format_shapes(out['min'])} --optShapes={format_shapes(out['opt'])} "
        f"--maxShapes={format_shapes(out['max'])}"
    )


@dataclass(frozen=True)
class RuntimeConfig:
    """How a backend runs a model. Passed to :func:`trtkit.load`."""

    device: str = "cpu"  # "cpu" or "cuda"
    device_id: int = 0
    threads: int | None = None  # intra-op threads for CPU execution; None = backend default
    plugins: tuple[str, ...] = ()  # TensorRT plugin libraries to load
    cuda_graph: bool = False  # capture a CUDA graph per static shape (TensorRT)
    contexts: int = 1  # execution contexts (and streams) per engine (TensorRT)
    outputs_on_device: bool = False  # return device arrays instead of numpy (GPU backends)
    # GPU backends: numpy outputs of 1 MB or more come in page-locked arrays the GPU writes directly, reused once
    # nothing refers to them (docs/runtime.md, "Inputs and outputs"). False: new pageable arrays, filled by a host
    # copy, e.g. when you start asynchronous copies from outputs (torch non_blocking=True) and drop them before those end.
    pinned_outputs: bool = True
    # apply trtkit's exact graph fusions that ONNX Runtime misses (trtkit.graph.fusion) when opening an ONNX
    # model; False runs the graph exactly as ONNX Runtime alone would. TensorRT fuses by itself.
    fuse: bool = True

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise SpecError(f"RuntimeConfig.device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.contexts < 1:
            raise SpecError(f"RuntimeConfig.contexts must be >= 1, got {self.contexts}")


@dataclass(frozen=True)
class BuildConfig:
    """Everything `trtkit build` needs besides the ONNX file. See :mod:`trtkit.engine.build`."""

    profiles: tuple[ShapeProfile | BatchProfile, ...] = ()
    precision: str = "fp32"  # fp32 | fp16 | bf16 | int8 | best
    backend: str = "auto"  # tensorrt | tensorrt-rtx | auto
    workspace_bytes: int | None = None
    timing_cache: str | None = None  # None: ~/.cache/trtkit/timing-<backend>-<version>.cache
    optimization_level: int | None = None  # builderOptimizationLevel 0..5; None = TensorRT's default (3)
    device: int = 0
    verbose: bool = False
    plugins: tuple[str, ...] = ()
    force: bool = False
    extra: tuple[tuple[str, str], ...] = field(default=())
    progress: bool | None = None  # progress bar on stderr; None = only when stderr is a terminal
    # trtexec's numerics and portability options (see docs/build.md; the sidecar records each one)
    tf32: bool = True  # False = trtexec --noTF32 (clear BuilderFlag.TF32: FP32 layers stay IEEE FP32)
    tactic_sources: str | None = None  # trtexec --tacticSources, e.g. "-CUBLAS,-CUBLAS_LT,-CUDNN"; edits the default set
    strongly_typed: bool = False  # --stronglyTyped (what it means differs per version: docs/build.md)
    version_compatible: bool = False  # --versionCompatible (runs on later TensorRT and the lean runtime)
    exclude_lean_runtime: bool = False  # --excludeLeanRuntime (needs version_compatible)
    hardware_compatibility: str | None = None  # --hardwareCompatibilityLevel: none | ampere+ | sameComputeCapability
    input_io_formats: str | None = None  # --inputIOFormats, e.g. "fp16:chw" (TensorRT < 11, weakly typed)
    output_io_formats: str | None = None  # --outputIOFormats
    layer_info: bool = False  # --dumpLayerInfo: return the per-layer information (needs a GPU to read the engine)
    export_layer_info: str | None = None  # --exportLayerInfo=FILE: write it as JSON

    def __post_init__(self) -> None:
        if self.exclude_lean_runtime and not self.version_compatible:
            raise SpecError(
                "--excludeLeanRuntime applies to version-compatible engines only (the lean runtime is what a "
                "version-compatible plan embeds); add --versionCompatible, or drop --excludeLeanRuntime"
            )
        levels = ("none", "ampere+", "samecomputecapability")
        if self.hardware_compatibility is not None and self.hardware_compatibility.lower() not in levels:
            raise SpecError(
                f"--hardwareCompatibilityLevel {self.hardware_compatibility!r}: expected none, ampere+ or "
                "sameComputeCapability (trtexec spellings)"
            )
        precisions = ("fp32", "fp16", "bf16", "int8", "best")
        if self.precision not in precisions:
            raise SpecError(f"BuildConfig.precision must be one of {', '.join(precisions)}, got {self.precision!r}")
        if self.optimization_level is not None and not 0 <= self.optimization_level <= 5:
            raise SpecError(
                f"builder optimization level must be 0..5 (0 builds fastest, 3 is TensorRT's default), "
                f"got {self.optimization_level}"
            )
        if self.workspace_bytes is not None and self.workspace_bytes <= 0:
            raise SpecError(f"workspace size must be positive, got {self.workspace_bytes} bytes; e.g. --memPoolSize=workspace:4096M")
        if self.device < 0:
            raise SpecError(f"BuildConfig.device must be a GPU index >= 0, got {self.device}")
