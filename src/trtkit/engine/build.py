"""``trtkit.build``: ONNX -> TensorRT / TensorRT-RTX engine, with a sidecar and a cache.

Order of work, cheapest checks first, so bad input fails in milliseconds and
leaves no file: output path writable -> plugin files exist -> ONNX loads ->
every profile validated against the model's inputs -> backend imported ->
precision possible on that backend -> cache lookup -> (only now) TensorRT builder.

Caching: the sidecar stores a ``cache_key`` hashed from the source ONNX sha256,
backend + version, device, precision plan, profiles, workspace, optimization
level, plugins and trtkit version. An identical rebuild finds the engine up to
date and returns at once; ``force=True`` rebuilds.

A dynamic model built without any profile is refused, with the exact flags to
pass: a silent default profile would bake a shape range the user never chose.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from ..atomic import atomic_output, check_output_path, write_text_atomic
from .build_options import decide_builder_options, strongly_typed_request
from .info import NO_GPU, SIDECAR_FORMAT, detect_gpu, file_sha256, read_sidecar, sidecar_path, sidecar_text
from ..errors import BackendUnavailable, BuildError, EngineError, OutputPathError, ProfileError, SpecError
from .precision import KEEP_FP32_OPS, PrecisionPlan, convert_to_fp16, has_qdq, plan_precision
from ..graph.quantize import QuantizeConfig, quantize
from ..spec import BatchProfile, BuildConfig, ShapeProfile, TensorSpec, flags_for, format_shapes

__all__ = ["build", "BuildReport", "quantize", "QuantizeConfig", "default_timing_cache", "batch_profile", "parse_batch_range"]


@dataclass(frozen=True)
class BuildReport:
    """What :func:`build` did."""

    engine: str
    sidecar: str
    cached: bool  # True: an up-to-date engine was already there; nothing was built
    seconds: float  # wall time of this call
    backend: str
    backend_version: str
    precision: str
    profiles: tuple[ShapeProfile, ...]
    device: str
    notes: tuple[str, ...] = ()
    layer_info: str | None = None  # --dumpLayerInfo: one line per layer

    def summary(self) -> str:
        if self.cached:
            return f"engine is up to date (cached): {self.engine} ({self.backend} {self.backend_version}); --force rebuilds"
        return (
            f"built {self.engine} in {self.seconds:.1f} s with {self.backend} {self.backend_version} "
            f"({self.precision}, {self.device}); sidecar {self.sidecar}"
        )


# ------------------------------------------------------------ validation

def _no_profile_error(path: Path, specs: Sequence[TensorSpec]) -> ProfileError:
    dynamic = [s for s in specs if s.is_dynamic]
    fixed = {s.name: tuple(d if isinstance(d, int) else (1 if axis == 0 else 640) for axis, d in enumerate(s.shape)) for s in dynamic}
    batch_only = all(s.dynamic_axes == (0,) for s in dynamic)
    hint = " or --dynamic-batch 1:8:32 (CLI) for the batch axis," if batch_only else ""
    return ProfileError(
        f"{str(path)!r} has dynamic input(s) {', '.join(f'{s.name!r} {s.display_shape()}' for s in dynamic)}, and "
        "no shapes were given: a TensorRT engine needs a min/opt/max range for every dynamic dim. "
        f"Pass a fixed shape: --shapes {format_shapes(fixed)}{hint} or a range: "
        f"{flags_for(dynamic, batch=(1, 8, 32))} (sizes are examples; pick your deployment's)"
    )


def resolve_profiles(path: Path, specs: Sequence[TensorSpec], profiles: Sequence[ShapeProfile | BatchProfile]
                     ) -> tuple[ShapeProfile, ...]:
    """Resolve batch profiles against the model, validate every profile, refuse a dynamic model without one."""
    if not profiles:
        if any(s.is_dynamic for s in specs):
            raise _no_profile_error(path, specs)
        return ()
    profiles = [batch_profile(specs, p.batch, shapes=p.shapes) if isinstance(p, BatchProfile) else p for p in profiles]
    for index, profile in enumerate(profiles):
        profile.validate(specs, index=index)
    return tuple(profiles)


def parse_batch_range(text: str) -> tuple[int, int, int]:
    """``1:8:32`` -> (1, 8, 32), checking 1 <= min <= opt <= max."""
    parts = text.split(":")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise SpecError(f"--dynamic-batch {text!r}: expected MIN:OPT:MAX batch sizes, e.g. 1:8:32")
    lo, mid, hi = (int(p) for p in parts)
    if not 1 <= lo <= mid <= hi:
        raise ProfileError(f"--dynamic-batch {text!r}: needs 1 <= min <= opt <= max, got min {lo}, opt {mid}, max {hi}")
    return lo, mid, hi


def batch_profile(specs: Sequence[TensorSpec], batch: tuple[int, int, int], *,
                  shapes: dict[str, tuple[int, ...]] | None = None) -> ShapeProfile:
    """A profile ranging axis 0 of every input whose batch is dynamic over ``batch`` (min, opt, max).

    Their other dims come from the model when static, else from ``shapes`` (``--shapes`` in the
    same group), whose axis 0 must then be the opt batch (said, not silently overridden).
    Inputs without a dynamic batch are only included when ``shapes`` names them (fixed).
    """
    shapes = dict(shapes or {})
    lo, mid, hi = batch
    by_name = {s.name: s for s in specs}
    for name in shapes:
        if name not in by_name:
            from ..spec import suggest_name

            raise ProfileError(f"--shapes names input {name!r}, which the model does not have; inputs: "
                               f"{', '.join(by_name)}.{suggest_name(name, by_name)}")
    batched = [s for s in specs if s.rank and isinstance(s.shape[0], str)]
    if not batched:
        raise ProfileError(
            f"--dynamic-batch: no model input has a dynamic batch axis (inputs: "
            f"{', '.join(f'{s.name} {s.display_shape()}' for s in specs)}); make it dynamic first with "
            f"`trtkit reshape --dynamic {specs[0].name if specs else 'NAME'}:0`, or use --shapes"
        )
    mins: dict[str, tuple[int, ...]] = {}
    opts: dict[str, tuple[int, ...]] = {}
    maxs: dict[str, tuple[int, ...]] = {}
    for s in batched:
        given = shapes.pop(s.name, None)
        if given is not None and given[:1] != (mid,):
            raise ProfileError(
                f"--shapes gives {s.name!r} batch {given[0] if given else '(none)'}, but --dynamic-batch "
                f"{lo}:{mid}:{hi} has opt batch {mid}; with --dynamic-batch, --shapes sets the other dims and its "
                f"batch must be the opt batch: e.g. {s.name}:{mid}x{'x'.join(str(d) for d in given[1:])}"
            )
        model_rest = given[1:] if given is not None else tuple(s.shape[1:])
        dynamic = [i + 1 for i, d in enumerate(model_rest) if isinstance(d, str)]
        if dynamic:
            example = "x".join(str(d) if isinstance(d, int) else "640" for d in (mid, *model_rest))
            raise ProfileError(
                f"--dynamic-batch covers axis 0 only, but {s.name!r} {s.display_shape()} is also dynamic on "
                f"axis {', '.join(map(str, dynamic))}; give those dims with --shapes, e.g. --shapes {s.name}:{example}"
            )
        rest = tuple(int(d) for d in model_rest)  # all static now
        mins[s.name], opts[s.name], maxs[s.name] = (lo, *rest), (mid, *rest), (hi, *rest)
    for name, shape in shapes.items():  # inputs without a dynamic batch, fixed by --shapes
        mins[name] = opts[name] = maxs[name] = tuple(shape)
    return ShapeProfile.from_shapes(min=mins, opt=opts, max=maxs)


def check_named_dims(model: Any, profiles: Sequence[ShapeProfile]) -> None:
    """Dims sharing one ``dim_param`` name must get equal sizes: TensorRT treats them as one dim.

    Why: e.g. PP-OCR's classifier names both H and W "?", so TensorRT only accepts H == W and
    fails deep in the build with "Input dimensions with this name have different constant values".
    """
    named: dict[str, list[tuple[str, int]]] = {}
    for value in model.graph.input:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_param:
                named.setdefault(dim.dim_param, []).append((value.name, axis))
    for index, profile in enumerate(profiles):
        for dim_name, uses in named.items():
            for which in ("min", "opt", "max"):
                sizes = {(n, a): getattr(profile[n], which)[a] for n, a in uses if n in profile}
                if len(set(sizes.values())) > 1:
                    listing = ", ".join(f"{n} axis {a} = {v}" for (n, a), v in sizes.items())
                    raise ProfileError(
                        f"optimization profile {index} ({which}): {listing}, but the model names all of these dims "
                        f"{dim_name!r}, so TensorRT requires them equal. Give equal sizes, or give the dims distinct "
                        "names first (trtkit reshape, or onnx.tools.update_model_dims)"
                    )


def _check_plugins(plugins: Sequence[str]) -> tuple[Path, ...]:
    out = []
    for lib in plugins:
        p = Path(lib)
        if not p.is_file():
            raise BuildError(
                f"plugin library {lib!r} does not exist{' (it is a directory)' if p.is_dir() else ''}; "
                "give the path of the plugin .so (e.g. --plugins ./build/libmyplugin.so)"
            )
        out.append(p.resolve())
    return tuple(out)


def _check_extra(extra: Sequence[tuple[str, str]]) -> None:
    if extra:
        raise SpecError(
            f"BuildConfig.extra has options trtkit build does not know: {', '.join(k for k, _ in extra)}; "
            "remove them (build takes no pass-through options yet)"
        )


# ----------------------------------------------------------------- cache

def default_timing_cache(backend: str, version: str) -> Path:
    """``$XDG_CACHE_HOME/trtkit/timing-<backend>-<version>.cache`` (``~/.cache`` by default)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "trtkit" / f"timing-{backend}-{version}.cache"


def _cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _is_up_to_date(engine: Path, key: str) -> bool:
    """The engine exists, its sidecar matches its bytes, and it was built from identical inputs."""
    if not engine.is_file():
        return False
    side = read_sidecar(engine)  # None when missing or stale (engine sha256 mismatch)
    # A sidecar without "metadata" was written before build recorded the ONNX metadata: reusing it would
    # drop add-nms thresholds, baked preprocessing and labels, so that engine is built again.
    return side is not None and side.get("cache_key") == key and "metadata" in side


# ----------------------------------------------------------------- build

@dataclass(frozen=True)
class _Job:
    """Everything decided before TensorRT is touched."""

    onnx_path: Path
    output: Path
    config: BuildConfig
    flavor: Any
    plan: PrecisionPlan
    profiles: tuple[ShapeProfile, ...]
    plugins: tuple[Path, ...]
    gpu: dict[str, Any] | None
    device_note: str
    source_sha: str
    key: str
    timing_cache: Path | None
    notes: tuple[str, ...]
    builder_options: Any = None  # build_options.BuilderOptions
    metadata: tuple[tuple[str, str], ...] = ()  # the ONNX model's metadata_props, carried into the sidecar


def _timing_cache(config: BuildConfig, flavor: Any) -> tuple[Path | None, tuple[str, ...]]:
    # RTX: timing-cache calls are no-ops since TensorRT-RTX 1.2 (it compiles ahead of time, without timing).
    if flavor.is_rtx:
        if config.timing_cache:
            return None, (f"TensorRT-RTX {flavor.version} has no timing cache (its timing-cache API is a no-op): "
                          f"--timingCacheFile {config.timing_cache} is not used",)
        return None, ()
    return Path(config.timing_cache) if config.timing_cache else default_timing_cache(flavor.backend, flavor.version), ()


def _check_outputs(src: Path, output: str | os.PathLike[str]) -> Path:
    """Engine and sidecar paths writable, and neither is the source model (it would be destroyed)."""
    out = check_output_path(output, what="engine", inputs=(src,))
    side = sidecar_path(out)
    if side.is_dir():  # atomic's generic "give a file path, e.g. DIR/out" hint makes no sense for a derived path
        raise OutputPathError(
            f"engine sidecar path {str(side)!r} is a directory; trtkit build writes the sidecar beside the engine "
            f"as ENGINE.json, so {str(out)!r} needs {side.name!r} to be free: rename or remove that directory, "
            "or choose another engine path with -o"
        )
    check_output_path(side, what="engine sidecar", inputs=(src,))
    return out


def _device_notes(config: BuildConfig, flavor: Any, gpu: dict[str, Any] | None) -> tuple[str, ...]:
    """A note when --device is not used (never silently), saying what the sidecar records instead."""
    if flavor.is_rtx and config.device != 0:
        recorded = f"the sidecar records device 0 ({gpu['name']})" if gpu else "the sidecar records no device (no GPU is usable here)"
        return (f"TensorRT-RTX {flavor.version} does not build on a chosen CUDA device (trtkit does not select "
                f"one for it): --device {config.device} is not used; {recorded}",)
    return ()


def _prepare(onnx_path: str | os.PathLike[str], output: str | os.PathLike[str], config: BuildConfig) -> tuple[_Job, Any]:
    from .flavor import trt_flavor
    from ..graph.onnx_io import io_specs, load_onnx

    src = Path(onnx_path)
    out = _check_outputs(src, output)
    _check_extra(config.extra)
    plugins = _check_plugins(config.plugins)
    model = load_onnx(src)
    inputs, _ = io_specs(model)
    profiles = resolve_profiles(src, inputs, config.profiles)
    check_named_dims(model, profiles)
    flavor = trt_flavor(config.backend)
    if not flavor.can_build:
        raise BackendUnavailable(f"{flavor.pretty} only runs engines; building needs full TensorRT or TensorRT-RTX")
    strongly_typed, typed_notes = strongly_typed_request(config, flavor)
    plan = plan_precision(config.precision, backend=f"{flavor.backend} {flavor.version}",
                          strongly_typed_only=strongly_typed, qdq=has_qdq(model))
    gpu, device_note = detect_gpu(0 if flavor.is_rtx else config.device)
    device_notes = _device_notes(config, flavor, gpu)
    if gpu is None and not flavor.is_rtx:
        raise BackendUnavailable(
            f"TensorRT {flavor.version} needs an NVIDIA GPU to build engines, and none is usable here ({device_note}). "
            "Build on the deployment GPU, or use TensorRT-RTX, which builds without a GPU: --backend tensorrt-rtx"
        )
    options, option_notes = decide_builder_options(config, flavor, flags=plan.builder_flags,
                                                   strongly_typed=plan.strongly_typed, gpu=gpu)
    if config.export_layer_info:
        check_output_path(config.export_layer_info, what="--exportLayerInfo", inputs=(src,))
    timing, timing_notes = _timing_cache(config, flavor)
    source_sha = file_sha256(src)
    key = _cache_key({
        "format": SIDECAR_FORMAT, "source": source_sha, "backend": flavor.backend, "version": flavor.version,
        "device": gpu, "plan": [plan.precision, plan.strongly_typed, list(plan.builder_flags), plan.convert],
        "keep_fp32": list(KEEP_FP32_OPS) if plan.convert else None,
        "profiles": [p.to_json() for p in profiles], "workspace": config.workspace_bytes,
        "level": config.optimization_level, "plugins": [[str(p), file_sha256(p)] for p in plugins],
        "builder_options": repr(options), "trtkit": _version(),
    })
    notes = typed_notes + plan.notes + device_notes + option_notes + timing_notes
    job = _Job(src, out, config, flavor, plan, profiles, plugins, gpu, device_note, source_sha, key, timing, notes, options,
               tuple((p.key, p.value) for p in model.metadata_props))
    return job, model


def _version() -> str:
    from .. import __version__

    return __version__


def _run_builder(job: _Job, data: bytes | None) -> tuple[bytes, list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Parse, configure and build; returns (engine bytes, inputs, outputs, recorded builder settings)."""
    from .builder import run_builder

    return run_builder(job.flavor, onnx_path=job.onnx_path, data=data, options=job.config, plan=job.plan,
                       builder_options=job.builder_options, profiles=job.profiles, plugins=job.plugins,
                       timing_cache=job.timing_cache)


def _write(job: _Job, engine: bytes, sidecar: dict[str, Any]) -> None:
    """Engine renamed into place first, sidecar second: in between, the old sidecar's sha256 no
    longer matches, so readers see it as stale rather than trusting it."""
    with atomic_output(sidecar_path(job.output), what="engine sidecar", inputs=(job.onnx_path,)) as side_tmp:
        with atomic_output(job.output, what="engine", inputs=(job.onnx_path,)) as engine_tmp:
            engine_tmp.write_bytes(engine)
            side_tmp.write_text(sidecar_text(sidecar), encoding="utf-8")


def _sidecar(job: _Job, engine: bytes, io: tuple[list[Any], list[Any]], seconds: float,
             record: dict[str, Any]) -> dict[str, Any]:
    flags = {
        **record,  # tf32, tactic_sources, version/hardware compatibility, profile_sharing: what changes numerics or portability
        "io_formats": {"inputs": list(job.builder_options.input_formats), "outputs": list(job.builder_options.output_formats)},
        "strongly_typed": job.plan.strongly_typed,
        "builder_flags": list(job.plan.builder_flags),
        "graph_conversion": job.plan.convert,
        "builder_optimization_level": job.config.optimization_level,
        "workspace_bytes": job.config.workspace_bytes,
        "plugins": [str(p) for p in job.plugins],
    }
    return {
        "format": SIDECAR_FORMAT,
        "trtkit_version": _version(),
        "engine_sha256": hashlib.sha256(engine).hexdigest(),
        "source": {"path": str(job.onnx_path.resolve()), "sha256": job.source_sha},
        "backend": job.flavor.backend,
        "backend_version": job.flavor.version,
        "device": job.gpu,
        "device_note": NO_GPU if job.gpu is None else None,
        "device_detail": job.device_note or None,
        "precision": job.plan.precision,
        "flags": flags,
        "profiles": [p.to_json() for p in job.profiles],
        "inputs": io[0],
        "outputs": io[1],
        # The ONNX model's metadata_props (add-nms thresholds, baked preprocessing, class names): a plan has no
        # metadata of its own, so the runtime reads them from here (TensorRTBackend.metadata).
        "metadata": dict(job.metadata),
        "build_seconds": round(seconds, 3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cache_key": job.key,
    }


def _report(job: _Job, *, cached: bool, seconds: float) -> BuildReport:
    device = job.gpu["name"] if job.gpu else f"{NO_GPU} ({job.device_note})"
    return BuildReport(str(job.output), str(sidecar_path(job.output)), cached, seconds, job.flavor.backend,
                       job.flavor.version, job.plan.precision, job.profiles, device, job.notes)


def build(onnx_path: str | os.PathLike[str], output: str | os.PathLike[str], *, config: BuildConfig | None = None) -> BuildReport:
    """Build a TensorRT (or TensorRT-RTX) engine from an ONNX model and write ``output`` + ``output.json``.

    Every check that can fail on user input runs before the builder is created.
    Raises ProfileError/ShapeError for bad shapes, BuildError for parser/builder
    failures and impossible precision requests, OutputPathError for unwritable paths.
    """
    config = config or BuildConfig()
    start = time.perf_counter()
    job, model = _prepare(onnx_path, output, config)
    wants_layers = config.layer_info or bool(config.export_layer_info)  # read from a fresh build
    if not config.force and not wants_layers and _is_up_to_date(job.output, job.key):
        return _report(job, cached=True, seconds=time.perf_counter() - start)
    data = convert_to_fp16(model).SerializeToString() if job.plan.convert == "fp16" else None
    del model  # the parser reads the file (or the converted bytes) itself
    engine, inputs, outputs, record = _run_builder(job, data)
    layers = _layer_info(job, engine) if config.layer_info or config.export_layer_info else None
    seconds = time.perf_counter() - start
    _write(job, engine, _sidecar(job, engine, (inputs, outputs), seconds, record))
    if config.export_layer_info and layers is not None:
        write_text_atomic(Path(config.export_layer_info), layers[1], what="--exportLayerInfo")
    return replace(_report(job, cached=False, seconds=seconds), layer_info=layers[0] if layers and config.layer_info else None)


def _layer_info(job: _Job, engine: bytes) -> tuple[str, str]:
    """(one line per layer, JSON) read from the built engine, before anything is written."""
    from .info import layer_information

    try:
        return layer_information(job.flavor, engine, what=f"the engine built from {str(job.onnx_path)!r}")
    except (EngineError, BackendUnavailable) as exc:
        raise BuildError(f"--dumpLayerInfo/--exportLayerInfo: the engine was built but cannot be read here, so nothing "
                         f"was written ({exc}); build without them and inspect the engine on its target GPU") from None
