"""Prepare and print the device-machine calls that run the GPU suite and the TensorRT benchmark on real TensorRT.

The device tool sends one checkout (CHECKOUT, default: this repository) plus the ignored folders a call
names in ``carry``, at most 64 MiB per call, and the machine keeps /tmp only while it is warm (about 30 s
after a call). So: TensorRT travels in the kit's six parts (``../shared/trt-h200/prepare.sh`` lays them in
CHECKOUT/.trt), the assets in two halves, and trtkit itself in CHECKOUT/.devsync (this tree's src, tests,
benchmarks, pyproject.toml, plus wheels of what the device lacks: pyclipper). Make the printed calls back
to back.

    python tests/gpu/device_plan.py [--checkout DIR] [--assets DIR] [--wheels DIR] [--sync]

``--sync`` copies the files into CHECKOUT (ignored there via .git/info/exclude); without it only the
calls are printed. Call 7 runs the GPU tests (log in $OUT/gpu-tests.log), call 8 the benchmark.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRST_HALF = ("models/ppocr", "models/scrfd_2.5g_kps.onnx", "images", "labels", "truth.json", "README.md")
SECOND_HALF = ("models/efficientnet_lite0.onnx", "models/yolov8n_nudenet_320.onnx")
ENV = ("export TRTKIT_SHARED=/tmp/shared TRTKIT_GPU_ENGINES=/tmp/trtkit-gpu-engines PYTHONUNBUFFERED=1 "
       "PYTHONPATH=$PYTHONPATH:/tmp/site:$PWD/.devsync/code/src:$PWD/.devsync/code")
WHEELS = ("python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .devsync/whl/*.whl "
          ">/dev/null 2>&1 || true")


def _copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def sync(checkout: Path, assets: Path, wheels: Path | None) -> None:
    exclude = checkout / ".git" / "info" / "exclude"
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    for entry in ("/.devsync/", "/.devsync_a/", "/.devsync_b/"):
        if entry not in lines:
            lines.append(entry)
    exclude.write_text("\n".join(lines) + "\n")
    for name in (".devsync", ".devsync_a", ".devsync_b"):
        shutil.rmtree(checkout / name, ignore_errors=True)
    for item in ("src", "tests", "benchmarks", "pyproject.toml"):
        _copy(ROOT / item, checkout / ".devsync" / "code" / item)
    if wheels is not None:
        for whl in wheels.glob("*.whl"):
            _copy(whl, checkout / ".devsync" / "whl" / whl.name)
    for half, items in ((".devsync_a", FIRST_HALF), (".devsync_b", SECOND_HALF)):
        for item in items:
            _copy(assets / item, checkout / half / "assets" / item)


def calls() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(5):
        out.append({"carry": [f".trt/p{i}"], "command": f"mkdir -p /tmp/trt && cp .trt/p{i}/* /tmp/trt/"})
    out.append({"carry": [".trt/p5", ".devsync_a"],
                "command": "mkdir -p /tmp/trt /tmp/shared && cp .trt/p5/* /tmp/trt/ && cp -r .devsync_a/assets /tmp/shared/ && ls /tmp/trt | wc -l"})
    out.append({"carry": [".trt/py", ".devsync", ".devsync_b"], "timeout_s": 600,
                "command": "set -o pipefail; cp -r .devsync_b/assets/models/* /tmp/shared/assets/models/ && "
                           f"source .trt/py/setup.sh && {WHEELS}; {ENV} && nvidia-smi -L && cd .devsync/code && "
                           "timeout 570 python3 -m pytest tests/gpu -v -rs -p no:cacheprovider 2>&1 | tee $OUT/gpu-tests.log | tail -80"})
    out.append({"carry": [".trt/py", ".devsync"], "timeout_s": 600,
                "command": f"set -o pipefail; source .trt/py/setup.sh && {WHEELS}; {ENV} && cd .devsync/code && "
                           "timeout 570 python3 benchmarks/trt_vs_ort.py --assets /tmp/shared/assets 2>&1 | tee $OUT/bench.log"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkout", type=Path, default=ROOT, help="the checkout the device tool sends")
    ap.add_argument("--assets", type=Path, default=ROOT.parent / "shared" / "assets")
    ap.add_argument("--wheels", type=Path, help="folder of extra cp312 wheels for the device (e.g. pyclipper)")
    ap.add_argument("--sync", action="store_true", help="copy code, assets and wheels into the checkout first")
    args = ap.parse_args()
    if args.sync:
        sync(args.checkout.resolve(), args.assets.resolve(), args.wheels)
    for number, call in enumerate(calls(), 1):
        print(f"call {number}: {json.dumps(call)}")


if __name__ == "__main__":
    main()
