"""trtexec's numerics and portability options of ``trtkit build``, checked against the installed TensorRT.

Each option either applies on this version, is explained (a note, never silence), or is refused
before the builder runs, with the version that has it or the alternative. What each one means per
version lives in ``flavor.py``; the builder calls that apply them are in ``builder.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import BuildError, SpecError
from ..spec import BuildConfig
from .flavor import HARDWARE_LEVELS, TrtFlavor

__all__ = ["BuilderOptions", "parse_tactic_sources", "parse_io_formats", "strongly_typed_request", "decide_builder_options"]


@dataclass(frozen=True)
class BuilderOptions:
    """The builder settings decided (and checked against the installed version) before TensorRT builds."""

    flags: tuple[str, ...] = ()  # BuilderFlag names (precision flags of weakly typed builds)
    tf32: bool = True
    tactic_edits: tuple[tuple[str, bool], ...] = ()  # (TacticSource name, enable) applied to the default set
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    hardware_level: str | None = None  # HardwareCompatibilityLevel member name
    profile_sharing: bool = False  # PreviewFeature.PROFILE_SHARING_0806 (8.6/9.x: see flavor.profile_sharing)
    optimization_level: int | None = None  # builder_optimization_level, where the version has levels
    input_formats: tuple[str, ...] = ()  # dtype name per input ("float16"), one entry = all inputs
    output_formats: tuple[str, ...] = ()


_IO_TYPES = {"fp32": "float32", "fp16": "float16"}


def parse_tactic_sources(text: str, available: Sequence[str]) -> tuple[tuple[str, bool], ...]:
    """trtexec's ``--tacticSources=-CUBLAS,+CUDNN`` -> ((CUBLAS, False), (CUDNN, True)); names checked
    against this version's TacticSource members (they differ: 11.x and RTX have no CUBLAS/CUDNN)."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if len(item) < 2 or item[0] not in "+-":
            raise SpecError(f"--tacticSources {text!r}: each item is +NAME or -NAME (trtexec syntax), got {item!r}; "
                            "e.g. --tacticSources=-CUBLAS,-CUBLAS_LT,-CUDNN")
        name = item[1:].upper()
        if name not in available:
            raise SpecError(
                f"--tacticSources: {name} is not a tactic source of this TensorRT (it has: {', '.join(available) or 'none'}); "
                "11.x and TensorRT-RTX dropped CUBLAS, CUBLAS_LT and CUDNN, so there is nothing to turn off there"
            )
        out.append((name, item[0] == "+"))
    return tuple(out)


def parse_io_formats(text: str, *, flag: str) -> tuple[str, ...]:
    """``fp16:chw,fp32:chw`` -> ("float16", "float32"). Only linear (chw) layouts: trtkit's runtime feeds
    and reads plain C-order buffers, and TensorRT reformats inside the engine at no extra call."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        kind, sep, fmt = item.partition(":")
        if not sep:
            raise SpecError(f"{flag} {text!r}: each item is TYPE:FORMAT (trtexec syntax), e.g. {flag}=fp16:chw")
        if kind.lower() not in _IO_TYPES:
            raise SpecError(
                f"{flag}: type {kind!r} is not supported by trtkit build (fp32 and fp16 are). INT8/BF16/FP8 I/O need "
                "scales or a strongly typed graph: make the ONNX model's own I/O that type instead"
            )
        if fmt.lower() not in ("chw", "linear"):
            raise SpecError(
                f"{flag}: format {fmt!r} is not supported by trtkit build; only chw (linear). trtkit's runtime "
                "passes plain C-order arrays, and TensorRT converts to vectorized layouts (hwc8, chw32...) inside "
                f"the engine by itself. Use {flag}={kind}:chw"
            )
        out.append(_IO_TYPES[kind.lower()])
    return tuple(out)


def strongly_typed_request(config: BuildConfig, flavor: TrtFlavor) -> tuple[bool, tuple[str, ...]]:
    """(build strongly typed?, notes) for ``--stronglyTyped`` on this version."""
    if flavor.strongly_typed_only:
        notes = (f"--stronglyTyped: {flavor.pretty} builds every network strongly typed; the flag changes nothing",) \
            if config.strongly_typed else ()
        return True, notes
    if not config.strongly_typed:
        return False, ()
    if flavor.has_strongly_typed_mode:  # 9.x/10.x: opt-in; precision then comes from the graph (as on 11)
        return True, (f"--stronglyTyped: {flavor.pretty} builds the network strongly typed: every tensor keeps the "
                      "graph's type and precision flags do not apply (--fp16 converts the graph instead)",)
    if config.precision != "fp32":
        raise BuildError(
            f"--stronglyTyped with --{config.precision}: {flavor.pretty} has no strongly typed mode (it came in 9.0), "
            f"so the precision would come from the builder flag, not the graph. Drop --stronglyTyped to build a "
            f"weakly typed --{config.precision} engine, or use TensorRT 10+"
        )
    return False, (f"--stronglyTyped: {flavor.pretty} has no strongly typed mode (it came in 9.0); with no precision "
                   "flag every layer already runs in the graph's own types, which is what strong typing asks for",)


def _hardware_level(config: BuildConfig, flavor: TrtFlavor) -> str | None:
    if config.hardware_compatibility is None:
        return None
    member = HARDWARE_LEVELS[config.hardware_compatibility.lower()]
    if member == "NONE":
        return None
    if flavor.is_rtx:
        raise BuildError(f"--hardwareCompatibilityLevel={config.hardware_compatibility}: {flavor.pretty} does not support "
                         "hardware compatibility levels; its engines target compute capabilities instead (TensorRT-RTX "
                         "compiles for the GPU it runs on). Drop the flag")
    if member not in flavor.hardware_levels:
        have = ", ".join(flavor.hardware_levels) or "none (hardware compatibility came in 8.6)"
        raise BuildError(f"--hardwareCompatibilityLevel={config.hardware_compatibility}: {flavor.pretty} does not "
                         f"offer it (levels here: {have}); build on each target GPU instead, or use a newer TensorRT")
    return member


def _io_formats(config: BuildConfig, flavor: TrtFlavor, strongly_typed: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    formats = []
    for text, flag in ((config.input_io_formats, "--inputIOFormats"), (config.output_io_formats, "--outputIOFormats")):
        if not text:
            formats.append(())
            continue
        types = parse_io_formats(text, flag=flag)
        if strongly_typed and any(t != "float32" for t in types):
            raise BuildError(
                f"{flag}={text}: {flavor.pretty} builds strongly typed, so I/O types come from the ONNX graph and "
                "cannot be set at build time. Make the graph's I/O that type instead: e.g. onnxconverter-common "
                "float16.convert_float_to_float16(model, keep_io_types=False), or export the model with FP16 inputs"
            )
        formats.append(() if strongly_typed else types)
    return formats[0], formats[1]


def decide_builder_options(config: BuildConfig, flavor: TrtFlavor, *, flags: Sequence[str],
                           strongly_typed: bool, gpu: dict[str, Any] | None) -> tuple[BuilderOptions, tuple[str, ...]]:
    """BuilderOptions for this build on this version, or BuildError/SpecError before anything is built."""
    notes: list[str] = []
    if not config.tf32 and not flavor.has_tf32_flag:
        raise BuildError(f"--noTF32: {flavor.pretty} has no TF32 builder flag")
    edits = parse_tactic_sources(config.tactic_sources, flavor.tactic_sources) if config.tactic_sources else ()
    if config.version_compatible and not flavor.has_version_compatibility:
        why = ("TensorRT-RTX engines load only in the RTX release that built them, and it ships no lean runtime"
               if flavor.is_rtx else "TensorRT 8.6 and later can")
        raise BuildError(f"--versionCompatible: {flavor.pretty} cannot build version-compatible engines ({why}); drop the flag")
    if config.exclude_lean_runtime and not flavor.has_exclude_lean_runtime:
        raise BuildError(f"--excludeLeanRuntime: {flavor.pretty} has no such option (9.0 and later have); "
                         "drop it: the engine then embeds the lean runtime")
    if (config.layer_info or config.export_layer_info) and gpu is None:
        raise BuildError(
            "--dumpLayerInfo/--exportLayerInfo read the built engine, which needs a GPU that can run it, and there is "
            "none here; build without them, then run `trtkit inspect ENGINE --json` on the target GPU"
        )
    level = config.optimization_level
    if level is not None and not flavor.has_optimization_levels:
        notes.append(f"--builderOptimizationLevel {level}: {flavor.pretty} has no optimization levels (8.6 added them); "
                     "it builds at its one level")
        level = None
    inputs, outputs = _io_formats(config, flavor, strongly_typed)
    sharing = flavor.profile_sharing == "preview"  # recorded in the sidecar; the runtime relies on it
    options = BuilderOptions(
        flags=tuple(flags), tf32=config.tf32, tactic_edits=edits, version_compatible=config.version_compatible,
        exclude_lean_runtime=config.exclude_lean_runtime, hardware_level=_hardware_level(config, flavor),
        profile_sharing=sharing, optimization_level=level, input_formats=inputs, output_formats=outputs,
    )
    return options, tuple(notes)
