"""Input data for `run` and `compare`: generated (seeded, Polygraphy-like) or loaded from .npy/.npz.

Generated data follows Polygraphy's default data loader: floats uniform in
[0, 1), integers uniform in [0, 25), booleans random. Each input gets its own
random stream derived from ``(seed, input name)``, so an input's data does not
change when another input is added or given from a file.

Dynamic dims need a concrete size. The only defaults are a dynamic *batch*
axis (axis 0), which becomes 1, and a dim whose symbolic name is shared with
an input of known shape, which takes that size. :func:`plan_shapes` returns
which inputs were filled in so the caller can announce it ("using shape
input:1x3x224x224"). Any other dynamic dim without a ``--shapes`` entry
raises ShapeError naming the flag to pass.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import DTypeError, ShapeError, SpecError
from ..spec import UNNAMED, Shape, TensorSpec, format_shape, format_shapes, suggest_name, validate_shapes

__all__ = [
    "ShapePlan",
    "PreparedInputs",
    "ArrayStats",
    "plan_shapes",
    "generate_inputs",
    "generate_at_shapes",
    "load_input_files",
    "prepare_inputs",
    "array_stats",
    "check_array_size",
    "MAX_GENERATED_BYTES",
]

# Largest single array trtkit generates. Far above any real model input (a 4K RGB float32 batch of 32
# is 3 GiB), and low enough that a typo like 100000x100000 is refused before numpy tries the allocation.
MAX_GENERATED_BYTES = 16 * 2**30


@dataclass(frozen=True)
class ShapePlan:
    """Concrete shape per input, and the inputs whose dynamic batch axis was defaulted to 1."""

    shapes: dict[str, Shape]
    defaulted: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreparedInputs:
    """Input arrays in model input order, where each came from, and warnings to show the user."""

    arrays: dict[str, np.ndarray]
    origins: dict[str, str]  # name -> "generated (seed 0)" or the file it was read from
    defaulted: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class ArrayStats:
    """Summary of one array. min/max/mean cover finite values only (None when there are none)."""

    shape: tuple[int, ...]
    dtype: str
    min: float | None
    max: float | None
    mean: float | None
    nan: int
    inf: int

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape), "dtype": self.dtype, "min": self.min, "max": self.max,
            "mean": self.mean, "nan": self.nan, "inf": self.inf,
        }


# ------------------------------------------------------------------ shapes

def _example_flag(spec: TensorSpec) -> str:
    dims = [d if isinstance(d, int) else (1 if axis == 0 else 640) for axis, d in enumerate(spec.shape)]
    return f"--shapes {format_shapes({spec.name: dims})}"


def plan_shapes(specs: Sequence[TensorSpec], shapes: Mapping[str, Sequence[int]] | None = None) -> ShapePlan:
    """Concrete shapes for every input: given, static, shared with a given input, or batch set to 1.

    A dynamic dim whose symbolic name (e.g. "batch") also appears in an input
    with a given shape takes that size, so inputs stay consistent. Inputs
    whose shape was filled in either way are listed in ``defaulted``.
    """
    given = {n: tuple(int(d) for d in s) for n, s in (shapes or {}).items()}
    validate_shapes(specs, given, what="--shapes")
    symbols: dict[str, int] = {}
    for spec in specs:
        for dim, size in zip(spec.shape, given.get(spec.name, ())):
            if isinstance(dim, str) and dim != UNNAMED:
                symbols.setdefault(dim, size)
    out: dict[str, Shape] = {}
    defaulted = []
    for spec in specs:
        if spec.name in given or not spec.is_dynamic:
            out[spec.name] = given.get(spec.name) or tuple(int(d) for d in spec.shape)
            continue
        dims = [d if isinstance(d, int) else symbols.get(d) if d != UNNAMED else None for d in spec.shape]
        unresolved = [axis for axis, d in enumerate(dims) if d is None]
        if unresolved not in ([], [0]):
            named = ", ".join(f"axis {a} {spec.shape[a]!r}" for a in unresolved)
            raise ShapeError(
                f"input {spec.name!r} {spec.display_shape()} has dynamic dims ({named}) and no shape was given; "
                f"pass one, e.g. {_example_flag(spec)} (replace the dynamic sizes with ones the model accepts)"
            )
        out[spec.name] = tuple(1 if d is None else int(d) for d in dims)
        defaulted.append(spec.name)
    return ShapePlan(out, tuple(defaulted))


# -------------------------------------------------------------- generation

def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def _size_text(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def check_array_size(name: str, shape: Sequence[int], dtype: Any, *, limit: int = MAX_GENERATED_BYTES) -> int:
    """Bytes of an array of ``shape``/``dtype``; ShapeError naming the size when it is above ``limit``.

    Called before generating data, so a huge ``--shapes`` is a clear error, not numpy's
    ArrayMemoryError traceback (or the machine swapping).
    """
    nbytes = int(np.prod([int(d) for d in shape], dtype=object)) * np.dtype(dtype).itemsize
    if nbytes > limit:
        raise ShapeError(
            f"input {name!r} at shape {format_shape(shape)} ({np.dtype(dtype).name}) would need {_size_text(nbytes)}, "
            f"more than the {_size_text(limit)} trtkit generates for one input; choose smaller --shapes "
            "(or give the data from a file with --input)"
        )
    return nbytes


def _uniform(rng: np.random.Generator, shape: Shape, dtype: np.dtype, low: float, high: float) -> np.ndarray:
    """Uniform [low, high), drawn in float32 unless the input is float64 (no float64 temporary: half the memory)."""
    draw = np.float64 if dtype == np.float64 else np.float32
    out = rng.random(size=shape, dtype=draw)
    if high - low != 1.0:
        out *= high - low
    if low:
        out += low
    return out.astype(dtype, copy=False)


def _random_array(
    spec: TensorSpec, shape: Shape, *, seed: int, float_range: tuple[float, float], int_range: tuple[int, int]
) -> np.ndarray:
    try:
        dtype = np.dtype(spec.dtype)
    except TypeError:  # bfloat16, float8, ...: numpy has no such dtype
        dtype = np.dtype(object)
    nbytes = check_array_size(spec.name, shape, dtype)
    try:
        return _draw(spec, shape, dtype, seed=seed, float_range=float_range, int_range=int_range)
    except MemoryError:  # under the limit, but more than this machine has free
        raise ShapeError(
            f"not enough memory to generate input {spec.name!r} at shape {format_shape(shape)} "
            f"({_size_text(nbytes)} of {dtype.name}); choose smaller --shapes"
        ) from None


def _draw(
    spec: TensorSpec, shape: Shape, dtype: np.dtype, *, seed: int, float_range: tuple[float, float], int_range: tuple[int, int]
) -> np.ndarray:
    rng = _rng(seed, spec.name)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape, dtype=np.bool_)
    if np.issubdtype(dtype, np.floating):
        return _uniform(rng, shape, dtype, *float_range)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        lo, hi = max(int_range[0], int(info.min)), min(int_range[1], int(info.max) + 1)
        return rng.integers(lo, hi, size=shape, dtype=dtype)
    raise DTypeError(
        f"cannot generate random data for input {spec.name!r} of dtype {spec.dtype}; "
        f"give it from a file: --input {spec.name}=FILE.npy"
    )


def _check_ranges(seed: int, float_range: tuple[float, float], int_range: tuple[int, int]) -> None:
    if seed < 0:
        raise SpecError(f"seed must be >= 0, got {seed}")
    if not float_range[0] < float_range[1] or not int_range[0] < int_range[1]:
        raise SpecError(
            f"data ranges must be [low, high) with low < high, got float_range={float_range}, int_range={int_range}"
        )


def generate_inputs(
    specs: Sequence[TensorSpec],
    *,
    shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    float_range: tuple[float, float] = (0.0, 1.0),
    int_range: tuple[int, int] = (0, 25),
) -> dict[str, np.ndarray]:
    """Seeded random inputs, in input order. See the module docstring for the batch-axis default."""
    return generate_at_shapes(specs, plan_shapes(specs, shapes).shapes, seed=seed, float_range=float_range,
                              int_range=int_range)


def generate_at_shapes(
    specs: Sequence[TensorSpec],
    shapes: Mapping[str, Sequence[int]],
    *,
    seed: int = 0,
    float_range: tuple[float, float] = (0.0, 1.0),
    int_range: tuple[int, int] = (0, 25),
) -> dict[str, np.ndarray]:
    """:func:`generate_inputs` at exactly ``shapes`` (every input named), unchecked against the specs' own dims:
    export and reshape verify a model at shapes other than those its inputs declare."""
    _check_ranges(seed, float_range, int_range)
    return {
        s.name: _random_array(s, tuple(int(d) for d in shapes[s.name]), seed=seed, float_range=float_range,
                              int_range=int_range)
        for s in specs
    }


# ------------------------------------------------------------------- files

_NUMPY_MAGIC = (b"\x93NUMPY", b"PK\x03\x04", b"PK\x05\x06")  # .npy header; .npz is a zip (empty zip: PK\5\6)


def _read_file(path: Path, *, flag: str) -> Any:
    if path.is_dir():
        raise SpecError(f"{flag}: {str(path)!r} is a directory, not a .npy/.npz file; give the file inside it")
    if not path.is_file():
        raise SpecError(f"{flag}: input file {str(path)!r} does not exist; check the path")
    with path.open("rb") as fh:
        head = fh.read(6)
    if not head.startswith(_NUMPY_MAGIC):
        # np.load would try to unpickle it and say "contains pickled (object) data", which misleads.
        raise SpecError(
            f"{flag}: {str(path)!r} is not a valid .npy/.npz file (it does not start with numpy's header); "
            "save the array with np.save (.npy) or np.savez (.npz)"
        )
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise SpecError(
            f"{flag}: cannot read {str(path)!r} as a numpy .npy/.npz file ({exc}); save it with np.save or np.savez "
            "(object arrays are not loaded, for safety)"
        ) from exc


def _npz_arrays(data: Any, path: Path, names: Sequence[str], *, only: str | None, flag: str) -> dict[str, np.ndarray]:
    keys = list(data.files)
    if only is not None:
        if only in keys:
            return {only: data[only]}
        if len(keys) == 1:
            return {only: data[keys[0]]}
        raise ShapeError(
            f"{flag}: {str(path)!r} holds arrays {keys} but none is named {only!r}; "
            f"save it with that key, or pass the file without NAME= to match keys to inputs.{suggest_name(only, keys)}"
        )
    for key in keys:
        if key not in names:
            raise ShapeError(
                f"{flag}: {str(path)!r} holds array {key!r}, which is not a model input. "
                f"Model inputs: {', '.join(repr(n) for n in names)}.{suggest_name(key, names)} "
                "Rename the key, or use --input NAME=FILE to pick one input"
            )
    return {k: data[k] for k in keys}


def _split_item(item: str) -> tuple[str | None, Path]:
    """``NAME=FILE`` or a bare ``FILE.npz`` (keys name the inputs)."""
    if Path(item).is_file():
        return None, Path(item)
    if "=" not in item:
        name, sep, file = item.rpartition(":")
        if sep and name and Path(file).suffix.lower() in (".npy", ".npz"):
            # trtexec's --loadInputs spelling; read as a file name it would only say "does not exist"
            raise SpecError(
                f"--input {item!r}: no file has that name, and NAME:FILE is trtexec's --loadInputs spelling; "
                f"trtkit names the input with '=': --input {name}={file}"
            )
        return None, Path(item)
    name, _, file = item.partition("=")
    if not name or not file:
        raise SpecError(f"--input {item!r}: expected NAME=FILE.npy, NAME=FILE.npz or FILE.npz")
    return name, Path(file)


def load_input_files(specs: Sequence[TensorSpec], items: Sequence[str]) -> dict[str, tuple[np.ndarray, str]]:
    """Parse ``--input`` values and load them: ``{input name: (array, file)}``, checked against ``specs``."""
    names = [s.name for s in specs]
    loaded: dict[str, tuple[np.ndarray, str]] = {}
    for item in items:
        name, path = _split_item(item)
        flag = f"--input {item}"
        if name is not None and name not in names:
            raise ShapeError(
                f"{flag}: the model has no input {name!r}. Model inputs: "
                f"{', '.join(repr(n) for n in names)}.{suggest_name(name, names)}"
            )
        data = _read_file(path, flag=flag)
        if isinstance(data, np.ndarray):
            if name is None:
                if len(names) != 1:
                    raise SpecError(f"{flag}: a .npy file holds one array; say which input it is: --input NAME={path}")
                name = names[0]
            arrays = {name: data}
        else:
            arrays = _npz_arrays(data, path, names, only=name, flag=flag)
        for key, arr in arrays.items():
            if key in loaded:
                raise SpecError(f"input {key!r} is given twice (in {loaded[key][1]!r} and {str(path)!r}); give it once")
            loaded[key] = (arr, str(path))
    by_name = {s.name: s for s in specs}
    for key, (arr, file) in loaded.items():
        _check_file_array(by_name[key], arr, file)
    return loaded


def _check_file_array(spec: TensorSpec, arr: np.ndarray, file: str) -> None:
    if arr.dtype != np.dtype(spec.dtype):
        raise DTypeError(
            f"input {spec.name!r} from {file!r} has dtype {arr.dtype} but the model expects {spec.dtype}; "
            f"convert it first (trtkit never casts silently), e.g. array.astype(np.{spec.dtype})"
        )
    if not spec.accepts(arr.shape):
        raise ShapeError(
            f"input {spec.name!r} from {file!r} has shape {list(arr.shape)} but the model expects "
            f"{spec.display_shape()}; give an array of that shape"
        )


# ------------------------------------------------------------ combination

def prepare_inputs(
    specs: Sequence[TensorSpec],
    *,
    files: Sequence[str] = (),
    arrays: Mapping[str, np.ndarray] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
) -> PreparedInputs:
    """Inputs from files or arrays where given, generated (seeded) for the rest.

    A shape in ``shapes`` that contradicts a given array raises: the array wins
    only when nobody said otherwise.
    """
    given = {n: (np.asarray(a), "array") for n, a in (arrays or {}).items()}
    validate_shapes(specs, {n: a.shape for n, (a, _) in given.items()}, what="inputs")
    by_name = {s.name: s for s in specs}
    for name, (arr, origin) in given.items():
        _check_file_array(by_name[name], arr, origin)
    for name, entry in load_input_files(specs, files).items():
        if name in given:
            raise SpecError(f"input {name!r} is given both as an array and in {entry[1]!r}; give it once")
        given[name] = entry
    for name, (arr, origin) in given.items():
        if shapes and name in shapes and tuple(shapes[name]) != arr.shape:
            raise SpecError(
                f"--shapes gives {name!r} shape {format_shape(shapes[name])} but its data from {origin!r} has shape "
                f"{format_shape(arr.shape)}; drop it from --shapes or give matching data"
            )
    plan = plan_shapes(specs, {**(shapes or {}), **{n: a.shape for n, (a, _) in given.items()}})
    missing = [s for s in specs if s.name not in given]
    generated = generate_inputs(missing, shapes={s.name: plan.shapes[s.name] for s in missing}, seed=seed)
    out = {s.name: (given[s.name][0] if s.name in given else generated[s.name]) for s in specs}
    origins = {s.name: (given[s.name][1] if s.name in given else f"generated (seed {seed})") for s in specs}
    warnings = tuple(w for n, (a, origin) in given.items() if (w := _nonfinite_warning(n, a, origin)))
    return PreparedInputs(out, origins, plan.defaulted, warnings)


def _nonfinite_warning(name: str, arr: np.ndarray, origin: str) -> str:
    if not np.issubdtype(arr.dtype, np.floating):
        return ""
    nan, inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
    if not nan and not inf:
        return ""
    return (
        f"input {name!r} from {origin!r} contains {nan} NaN and {inf} Inf of {arr.size} values; "
        "outputs computed from them are not meaningful"
    )


def array_stats(arr: Any) -> ArrayStats:
    """Shape, dtype, finite min/max/mean and NaN/Inf counts of an array."""
    a = np.asarray(arr)
    shape, dtype = tuple(int(d) for d in a.shape), str(a.dtype)
    if a.dtype == np.object_ or a.size == 0:
        return ArrayStats(shape, dtype, None, None, None, 0, 0)
    if np.issubdtype(a.dtype, np.floating):
        nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
        finite = a[np.isfinite(a)] if nan or inf else a
    else:
        nan, inf, finite = 0, 0, a
    if finite.size == 0:
        return ArrayStats(shape, dtype, None, None, None, nan, inf)
    return ArrayStats(shape, dtype, float(finite.min()), float(finite.max()), float(finite.mean(dtype=np.float64)), nan, inf)
