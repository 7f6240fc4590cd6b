"""Build times of the asset models with TensorRT-RTX (builds on CPU), the cache, and rebuilds.

For each model: a fresh build at TensorRT's default optimization level (3) and at
level 0, an identical second build (served from trtkit's engine cache; target
< 0.5 s), and a rebuild with a changed profile (which a timing cache would speed
up on full TensorRT; TensorRT-RTX has no timing cache, so this shows its plain
rebuild cost). Run: python benchmarks/build_times.py [--backend tensorrt]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from trtkit import BuildConfig, ShapeProfile
from trtkit.engine.build import build

SHARED = Path(os.environ.get("TRTKIT_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "assets" / "models"


def _range(name: str, lo: tuple[int, ...], mid: tuple[int, ...], hi: tuple[int, ...]) -> ShapeProfile:
    return ShapeProfile.from_shapes(min={name: lo}, opt={name: mid}, max={name: hi})


# model -> (profile, changed profile for the rebuild)
MODELS = {
    "efficientnet_lite0.onnx": (_range("input", (1, 3, 224, 224), (4, 3, 224, 224), (8, 3, 224, 224)),
                                _range("input", (1, 3, 224, 224), (8, 3, 224, 224), (16, 3, 224, 224))),
    "scrfd_2.5g_kps.onnx": (None, None),
    "yolov8n_nudenet_320.onnx": (_range("images", (1, 3, 320, 320), (4, 3, 320, 320), (8, 3, 320, 320)),
                                 _range("images", (1, 3, 320, 320), (1, 3, 320, 320), (4, 3, 320, 320))),
    "ppocr/ch_PP-OCRv4_det_infer.onnx": (_range("x", (1, 3, 32, 32), (1, 3, 320, 320), (1, 3, 960, 960)),
                                         _range("x", (1, 3, 32, 32), (1, 3, 640, 640), (1, 3, 960, 960))),
    "ppocr/ch_PP-OCRv4_rec_infer.onnx": (_range("x", (1, 3, 48, 32), (1, 3, 48, 320), (8, 3, 48, 960)),
                                         _range("x", (1, 3, 48, 32), (4, 3, 48, 320), (8, 3, 48, 960))),
    "ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx": (ShapeProfile.fixed({"x": (1, 3, 48, 48)}),
                                                  ShapeProfile.fixed({"x": (4, 3, 48, 48)})),
}


def _timed(model: Path, out: Path, config: BuildConfig) -> tuple[float, bool]:
    t = time.perf_counter()
    report = build(model, out, config=config)
    return time.perf_counter() - t, report.cached


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="tensorrt-rtx", choices=["tensorrt-rtx", "tensorrt"])
    args = ap.parse_args()
    if not SHARED.is_dir():
        print(f"assets not found at {SHARED}; set TRTKIT_SHARED", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # full TensorRT: a private timing cache, so "rebuild" shows its effect from a warm cache
        cache = str(Path(tmp) / "timing.cache")
        for name, (profile, changed) in MODELS.items():
            model, out = SHARED / name, Path(tmp) / (Path(name).stem + ".plan")
            profiles = (profile,) if profile else ()
            base = BuildConfig(backend=args.backend, profiles=profiles, timing_cache=cache if args.backend == "tensorrt" else None)
            lvl3, _ = _timed(model, out, BuildConfig(**{**base.__dict__, "force": True}))
            cached_s, cached = _timed(model, out, base)
            lvl0, _ = _timed(model, out, BuildConfig(**{**base.__dict__, "optimization_level": 0, "force": True}))
            new_profiles = (changed,) if changed else ()
            rebuild, _ = _timed(model, out, BuildConfig(**{**base.__dict__, "profiles": new_profiles, "force": True}))
            rows.append((name, lvl3, lvl0, cached_s if cached else float("nan"), rebuild, out.stat().st_size / 2**20))
    print(f"backend {args.backend}, {os.cpu_count()} CPU cores; seconds of wall time per build() call")
    print(f"{'model':44} {'build L3':>9} {'build L0':>9} {'cached':>8} {'rebuild*':>9} {'engine MiB':>11}")
    for name, l3, l0, c, rb, size in rows:
        print(f"{name:44} {l3:9.2f} {l0:9.2f} {c:8.3f} {rb:9.2f} {size:11.1f}")
    print("* rebuild: changed profile, level 3." + (
        " TensorRT-RTX has no timing cache (a no-op since 1.2), so this is a plain rebuild."
        if args.backend == "tensorrt-rtx" else " Uses the timing cache written by the first build."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
