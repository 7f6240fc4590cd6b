"""``trtkit build``: ONNX -> TensorRT / TensorRT-RTX engine (trtexec-style flags).

Several optimization profiles: each ``--profile`` flag starts a new profile, and
the shape flags after it (--shapes, --minShapes/--optShapes/--maxShapes,
--dynamic-batch) fill it. Shape flags before the first ``--profile`` form
profile 0, so one-profile builds need no ``--profile`` at all.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..spec import BatchProfile, BuildConfig, ShapeProfile, parse_shapes

SHAPE_FLAGS = ("shapes", "minShapes", "optShapes", "maxShapes", "dynamic_batch")
_UNITS = {"": 2**20, "K": 2**10, "M": 2**20, "G": 2**30}  # trtexec: a bare number is MiB


class _ShapeFlag(argparse.Action):
    """Stores a shape flag into the current profile group (the last one started by --profile)."""

    def __call__(self, parser: Any, ns: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        groups = ns.profile_groups = ns.profile_groups or [{}]
        if self.dest in groups[-1]:
            ns.profile_dupes = (ns.profile_dupes or []) + [f"{option_string} given twice in profile {len(groups) - 1}"]
        groups[-1][self.dest] = values


class _NewProfile(argparse.Action):
    def __call__(self, parser: Any, ns: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        groups = ns.profile_groups = ns.profile_groups or [{}]
        if groups[-1] or ns.profile_started:  # a leading --profile does not make an empty profile 0
            groups.append({})
        ns.profile_started = True


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "build",
        help="build a TensorRT / TensorRT-RTX engine from ONNX",
        description="Build a TensorRT or TensorRT-RTX engine from an ONNX model, with a JSON sidecar "
        "(MODEL.plan.json) describing it. Identical rebuilds are served from the existing engine.",
        epilog="Several profiles: --profile --minShapes=... --optShapes=... --maxShapes=... --profile --shapes=... "
        "(each --profile starts a new one). Examples: trtkit build yolov8n.onnx -o y.plan --dynamic-batch 1:8:32 "
        "--shapes images:8x3x640x640 ; trtkit build det.onnx --minShapes x:1x3x32x32 --optShapes x:1x3x320x320 "
        "--maxShapes x:1x3x960x960 --fp16",
    )
    p.add_argument("model", nargs="?", help="ONNX model (or --onnx=MODEL)")
    p.add_argument("--onnx", dest="onnx_flag", metavar="MODEL", help="trtexec spelling of the model argument")
    p.add_argument("-o", "--output", "--saveEngine", dest="output", metavar="ENGINE",
                   help="engine path (default: MODEL with .plan); the sidecar is ENGINE.json")
    from ..engine.flavor import TRT_BACKENDS

    p.add_argument("--backend", default="auto", choices=["auto", *TRT_BACKENDS],
                   help="auto prefers full TensorRT when installed, else TensorRT-RTX")
    g = p.add_argument_group("shapes and optimization profiles")
    g.add_argument("--shapes", action=_ShapeFlag, metavar="SPEC", help="fixed shapes, e.g. input:1x3x224x224")
    for flag in ("minShapes", "optShapes", "maxShapes"):
        g.add_argument(f"--{flag}", action=_ShapeFlag, metavar="SPEC", help=f"{flag[:3]} shapes of the profile (trtexec syntax)")
    g.add_argument("--dynamic-batch", dest="dynamic_batch", action=_ShapeFlag, metavar="MIN:OPT:MAX",
                   help="range axis 0 of every input with a dynamic batch, e.g. 1:8:32; other dynamic dims from --shapes")
    g.add_argument("--profile", action=_NewProfile, nargs=0, help="start the next optimization profile")
    q = p.add_argument_group("precision")
    for name in ("fp16", "bf16", "int8", "best"):
        q.add_argument(f"--{name}", action="store_true", help=f"{name} (see docs/build.md for each backend)")
    b = p.add_argument_group("builder")
    b.add_argument("--memPoolSize", metavar="POOL:SIZE", help="workspace limit, e.g. workspace:4096M (units K/M/G, bare = MiB)")
    b.add_argument("--timingCacheFile", metavar="FILE", help="timing cache (default ~/.cache/trtkit/timing-<backend>-<version>.cache)")
    b.add_argument("--builderOptimizationLevel", type=int, metavar="N", help="0 (fastest build) .. 5; TensorRT default 3")
    b.add_argument("--device", type=int, default=0, help="CUDA device to build on (full TensorRT; TensorRT-RTX does not use it and says so)")
    b.add_argument("--plugins", "--staticPlugins", dest="plugins", action="append", default=[], metavar="LIB.so",
                   help="plugin library to load (repeatable)")
    b.add_argument("--force", action="store_true", help="rebuild even when the engine is up to date")
    b.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: only on a terminal)")
    b.add_argument("--verbose", action="store_true", help="show TensorRT's log")
    b.add_argument("--workspace", type=int, metavar="MiB", help="workspace limit in MiB (trtexec's old spelling of --memPoolSize=workspace:N)")
    b.add_argument("--skipInference", action="store_true", help="accepted for trtexec compatibility: trtkit build never runs inference")
    n = p.add_argument_group("numerics and portability (recorded in the sidecar)")
    n.add_argument("--noTF32", action="store_true", help="keep FP32 layers in IEEE FP32 (TensorRT enables TF32 by default on Ampere+)")
    n.add_argument("--tacticSources", metavar="SPEC", help="edit the default tactic sources, trtexec syntax, e.g. -CUBLAS,-CUBLAS_LT,-CUDNN")
    n.add_argument("--stronglyTyped", action="store_true", help="strongly typed network: 9.x/10.x opt in; 11.x/RTX always; 8.x has none (see docs/build.md)")
    n.add_argument("--inputIOFormats", metavar="SPEC", help="input types, e.g. fp16:chw (TensorRT < 11, weakly typed builds)")
    n.add_argument("--outputIOFormats", metavar="SPEC", help="output types, e.g. fp16:chw (TensorRT < 11, weakly typed builds)")
    n.add_argument("--versionCompatible", "--vc", dest="versionCompatible", action="store_true",
                   help="version-compatible engine: runs on later TensorRT and on the lean/dispatch runtimes (8.6+)")
    n.add_argument("--excludeLeanRuntime", action="store_true", help="with --versionCompatible: do not embed the lean runtime (9.0+)")
    n.add_argument("--hardwareCompatibilityLevel", metavar="LEVEL", help="none | ampere+ | sameComputeCapability (8.6+)")
    n.add_argument("--dumpLayerInfo", action="store_true", help="print per-layer information of the built engine (needs a GPU)")
    n.add_argument("--exportLayerInfo", metavar="FILE", help="write per-layer information of the built engine as JSON (needs a GPU)")
    b.add_argument("--explicitBatch", action="store_true", help=argparse.SUPPRESS)
    b.add_argument("--implicitBatch", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(run=run, profile_groups=None, profile_dupes=None, profile_started=False)


def parse_mem_pool(text: str) -> int:
    """``workspace:4096M`` -> bytes. Only the workspace pool applies to GPU builds."""
    sizes = {}
    for item in text.split(","):
        m = re.fullmatch(r"\s*(\w+)\s*:\s*(\d+(?:\.\d+)?)\s*([KMG]?)\s*", item, flags=re.IGNORECASE)
        if not m:
            raise SpecError(f"--memPoolSize {text!r}: expected POOL:SIZE[K|M|G], e.g. workspace:4096M")
        sizes[m.group(1)] = int(float(m.group(2)) * _UNITS[m.group(3).upper()])
    other = [k for k in sizes if k != "workspace"]
    if other:
        raise SpecError(
            f"--memPoolSize: pool(s) {', '.join(other)} are not supported by trtkit build (DLA and tactic pools "
            "keep TensorRT's defaults); only workspace:SIZE is"
        )
    return sizes["workspace"]


def _precision(args: argparse.Namespace) -> str:
    chosen = [n for n in ("fp16", "bf16", "int8", "best") if getattr(args, n)]
    if set(chosen) == {"fp16", "int8"}:
        raise SpecError(
            "--fp16 --int8 together (trtexec's INT8 with FP16 fallback) is --best here: FP16, BF16 and INT8 from the "
            "graph's Q/DQ nodes (run `trtkit quantize` first), with TensorRT choosing per layer; on TensorRT 11/RTX "
            "precision comes from the graph instead"
        )
    if len(chosen) > 1:
        raise SpecError(
            f"{' and '.join('--' + c for c in chosen)} conflict: pick one precision (--best allows every precision "
            "TensorRT 10 can choose; on TensorRT 11/RTX precision comes from the graph)"
        )
    return chosen[0] if chosen else "fp32"


def _group_profile(group: dict[str, str], index: int) -> ShapeProfile | BatchProfile:
    ranges = [group.get(k) for k in ("minShapes", "optShapes", "maxShapes")]
    if group.get("dynamic_batch"):
        if any(ranges):
            raise SpecError(f"profile {index}: --dynamic-batch and --minShapes/--optShapes/--maxShapes conflict; use one")
        from ..engine.build import parse_batch_range

        shapes = parse_shapes(group["shapes"]) if group.get("shapes") else None
        return BatchProfile(parse_batch_range(group["dynamic_batch"]), shapes=shapes)  # resolved by build()
    if group.get("shapes") and any(ranges):
        raise SpecError(f"profile {index}: --shapes and --minShapes/--optShapes/--maxShapes conflict; "
                        "use --shapes for a fixed shape or the three range flags")
    if group.get("shapes"):
        return ShapeProfile.fixed(parse_shapes(group["shapes"]))
    if any(ranges):
        lo, mid, hi = (parse_shapes(r) if r else {} for r in ranges)
        return ShapeProfile.from_shapes(min=lo, opt=mid, max=hi)
    raise SpecError(f"profile {index} is empty: give shape flags after each --profile")


def _profiles(args: argparse.Namespace) -> tuple[ShapeProfile | BatchProfile, ...]:
    if args.profile_dupes:
        raise SpecError(f"{args.profile_dupes[0]}; start another profile with --profile, or give the flag once")
    groups = args.profile_groups or []
    if groups == [{}] and args.profile_started:
        raise SpecError("--profile was given without any shape flags after it")
    return tuple(_group_profile(g, i) for i, g in enumerate(groups))


def _model_and_output(args: argparse.Namespace) -> tuple[str, str]:
    if args.model and args.onnx_flag and args.model != args.onnx_flag:
        raise SpecError(f"two models given: {args.model!r} and --onnx={args.onnx_flag!r}; give one")
    model = args.model or args.onnx_flag
    if not model:
        raise SpecError("no model given: trtkit build MODEL.onnx [-o MODEL.plan] (or --onnx=MODEL.onnx)")
    return model, args.output or str(Path(model).with_suffix(".plan"))


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    if args.implicitBatch:
        raise SpecError(
            "--implicitBatch: implicit batch was removed in TensorRT 10 (and never existed in TensorRT-RTX); "
            "every engine is explicit batch now. For a static engine, build a static ONNX model or pass --shapes "
            "(`trtkit reshape` converts between static and dynamic); for a batch range use --dynamic-batch MIN:OPT:MAX"
        )
    return BuildConfig(
        profiles=_profiles(args),
        precision=_precision(args),
        backend=args.backend,
        workspace_bytes=_workspace(args),
        timing_cache=args.timingCacheFile,
        optimization_level=args.builderOptimizationLevel,
        device=args.device,
        verbose=args.verbose,
        plugins=tuple(args.plugins),
        force=args.force,
        progress=args.progress,
        tf32=not args.noTF32,
        tactic_sources=args.tacticSources,
        strongly_typed=args.stronglyTyped,
        version_compatible=args.versionCompatible,
        exclude_lean_runtime=args.excludeLeanRuntime,
        hardware_compatibility=args.hardwareCompatibilityLevel,
        input_io_formats=args.inputIOFormats,
        output_io_formats=args.outputIOFormats,
        layer_info=args.dumpLayerInfo,
        export_layer_info=args.exportLayerInfo,
    )


def _workspace(args: argparse.Namespace) -> int | None:
    if args.workspace is not None and args.memPoolSize:
        raise SpecError("--workspace and --memPoolSize both set the workspace; give one (--memPoolSize=workspace:N is the current spelling)")
    if args.workspace is not None:
        if args.workspace <= 0:
            raise SpecError(f"--workspace={args.workspace}: give a positive size in MiB, e.g. --workspace=4096")
        return args.workspace * 2**20
    return parse_mem_pool(args.memPoolSize) if args.memPoolSize else None


def run(args: argparse.Namespace) -> int:
    from ..engine.build import build

    model, output = _model_and_output(args)
    config = config_from_args(args)
    if args.explicitBatch:
        print("note: --explicitBatch is the default and only mode since TensorRT 10; the flag is not needed", file=sys.stderr)
    try:
        report = build(model, output, config=config)
    except KeyboardInterrupt:
        # Leave without interpreter finalization, wherever the Ctrl-C landed: TensorRT < 9 cannot cancel a
        # build (it still runs), and TensorRT's own threads may still call back into Python, which aborts a
        # finalizing interpreter (seen when the signal came just as the build thread started). Atomic
        # outputs were already removed as the exception passed through them: nothing was written.
        print("error: interrupted; no partial output was written", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    for index, profile in enumerate(report.profiles):
        print(f"profile {index}: {profile.describe()}")
    if report.layer_info:
        print(report.layer_info.rstrip())
    if config.export_layer_info and not report.cached:
        print(f"wrote layer information to {config.export_layer_info}")
    print(report.summary())
    return 0
