"""Pack everything the GPU suite and the GPU benchmarks need for the device machine, and print the calls.

The device tool sends this checkout (tracked files, about 1.5 MB) plus the ignored folders a call names in
``carry``: at most 64 MiB per call. The machine keeps /tmp only while it is warm (about 30 s after a call), so
the calls go back to back. What travels, as blobs cut into pieces and packed into ``.devpack/cNN`` folders of
at most ``--call-mib`` MiB each (so no call carries less than it could):

- ``trt``: the kit's TensorRT 8.5.3 libraries (``../shared/trt-h200/prepare.sh`` lays them in .trt/p0..p5),
  and ``trtpy``: its Python 3.12 bindings and ``setup.sh`` (.trt/py);
- ``assets``: the asset models and images (tar);
- ``whl``: wheels the device lacks (pyclipper, pillow, onnxconverter-common: ``--wheels DIR``);
- ``ort``: onnxruntime-gpu (``--ort-wheel``), re-packed as tar.xz without its TensorRT EP library:
  203 MB instead of the 256 MB wheel, four calls instead of six;
- ``engines``: engines an earlier session built and sent back through ``$OUT`` (``--engines DIR`` of
  ``*.plan`` + ``*.plan.json``), unpacked into the engine folder, where the builds find them up to date
  (trtkit's build cache: the sidecar's key covers the ONNX file's sha256, the options and the TensorRT
  version). The PP-OCRv4 det engine takes 400 s to build on TensorRT 8.5, so it travels.

The first group (TensorRT, bindings, assets, wheels) comes first: the call that completes it unpacks it
(``tests/gpu/device_unpack.sh``) and starts ``tests/gpu/prebuild.py`` in its own process session, so the
engines build while the onnxruntime-gpu calls upload. Then: the ORT-CUDA tests, the rest of the suite once
the builds are done, and the benchmarks on a quiet machine.

    python tests/gpu/device_plan.py --sync --ort-wheel DIR/onnxruntime_gpu-1.31.1-...whl --wheels DIR
    python tests/gpu/device_plan.py           # only print the calls for what is packed
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / ".devpack"
FIRST = ("trt", "trtpy", "assets", "whl", "engines")  # unpacked by the call that completes them; then the builds start
SECOND = ("ort",)
ASSET_ITEMS = ("models", "images", "labels", "truth.json", "README.md")
ENV = ("source /tmp/trtpy/setup.sh >/dev/null && export TRTKIT_SHARED=/tmp/shared TRTKIT_GPU_ENGINES=/tmp/trtkit-gpu-engines "
       "PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PYTHONPATH:$PWD/src:$PWD")
ENGINES = "/tmp/trtkit-gpu-engines"


def _tar(add: list[tuple[Path, str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, arcname in add:
            tar.add(str(path), arcname=arcname, filter=lambda t: None if "__pycache__" in t.name else t)
    return buf.getvalue()


def _ort_blob(wheel: Path, cache: Path) -> Path:
    """onnxruntime-gpu's files as tar.xz (xz -9 beats the wheel's deflate by 20%), less the TensorRT EP."""
    out = cache / (wheel.stem + ".tar.xz")
    if out.exists():
        return out
    raw = io.BytesIO()
    with zipfile.ZipFile(wheel) as zf, tarfile.open(fileobj=raw, mode="w") as tar:
        for info in zf.infolist():
            if info.is_dir() or info.filename.endswith("libonnxruntime_providers_tensorrt.so"):
                continue
            data = zf.read(info)
            entry = tarfile.TarInfo(info.filename)
            entry.size, entry.mode = len(data), 0o755 if info.filename.endswith(".so") or ".so." in info.filename else 0o644
            tar.addfile(entry, io.BytesIO(data))
    xz = shutil.which("xz")
    if xz:  # multi-threaded
        subprocess.run([xz, "-9", "-T0", "-c"], input=raw.getvalue(), stdout=out.open("wb"), check=True)
    else:
        out.write_bytes(lzma.compress(raw.getvalue(), preset=9))
    return out


def sync(*, assets: Path, wheels: Path | None, ort_wheel: Path | None, engines: Path | None, call_mib: int) -> None:
    exclude = ROOT / ".git" / "info" / "exclude"
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if "/.devpack/" not in lines:
        exclude.write_text("\n".join(lines + ["/.devpack/"]) + "\n")
    kit = ROOT / ".trt"
    if not (kit / "py" / "setup.sh").is_file():
        raise SystemExit(f"no TensorRT kit in {kit}: run bash ../shared/trt-h200/prepare.sh first")
    cache = PACK / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    blobs: dict[str, bytes | Path] = {
        "trt": b"".join(p.read_bytes() for p in sorted(kit.glob("p*/part_*"))),
        "trtpy": _tar([(kit / "py", ".")]),
        "assets": _tar([(assets / item, f"assets/{item}") for item in ASSET_ITEMS if (assets / item).exists()]),
        "whl": _tar([(w, w.name) for w in sorted(wheels.glob("*.whl"))]) if wheels else _tar([]),
    }
    if engines:
        blobs["engines"] = _tar([(p, p.name) for p in sorted(engines.glob("*.plan*"))])
    if ort_wheel:
        blobs["ort"] = _ort_blob(ort_wheel, cache)
    for old in PACK.glob("c[0-9]*"):
        shutil.rmtree(old)
    limit = call_mib << 20
    call, used, number = 0, 0, {}
    for group in (FIRST, SECOND):  # the second group fills up the call that completes the first
        for name in group:
            if name not in blobs:
                continue
            data = blobs[name] if isinstance(blobs[name], bytes) else Path(blobs[name]).read_bytes()  # type: ignore[arg-type]
            offset, piece = 0, 0
            while offset < len(data) or (offset == 0 and not data):
                if used >= limit:
                    call, used = call + 1, 0
                take = min(limit - used, len(data) - offset)
                folder = PACK / f"c{call:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{name}.{piece:03d}").write_bytes(data[offset:offset + take])
                offset, used, piece = offset + take, used + take, piece + 1
                number[name] = call
                if not data:
                    break
    (PACK / "groups.json").write_text(json.dumps({"first_done": max(number[n] for n in FIRST if n in number),
                                                  "calls": call + 1, "packed": sorted(number)}))


def calls(*, prebuild: str = "suite,bench,nms,pipelines", budget: int = 900) -> list[dict[str, object]]:
    meta = json.loads((PACK / "groups.json").read_text())
    out: list[dict[str, object]] = []
    for i in range(meta["calls"]):
        cmd = f"mkdir -p /tmp/stash && cp .devpack/c{i:02d}/* /tmp/stash/ && ls /tmp/stash | wc -l"
        first = " ".join(name for name in FIRST if name in meta.get("packed", FIRST))
        no_engine_tests = ("timeout 400 python3 -m pytest tests/gpu/test_cuda_gpu.py tests/gpu/test_ort_cuda_gpu.py "
                           "tests/gpu/test_bench_gpu.py -q -rs -p no:cacheprovider 2>&1 | tail -30; cat /tmp/prebuild-*.log")
        if i == meta["first_done"]:  # TensorRT, bindings, assets, wheels complete: unpack, start the builds
            # one background process per '+'-separated set, each in its own session (it outlives this call)
            starts = " && ".join(
                f"(setsid nohup python3 -m tests.gpu.prebuild --jobs 1 --budget {budget} --only {groups} "
                f"> /tmp/prebuild-{k}.log 2>&1 < /dev/null &)" for k, groups in enumerate(prebuild.split("+")))
            cmd += (f" && bash tests/gpu/device_unpack.sh {first} && {ENV} && nvidia-smi -L && {starts} && "
                    "sleep 20; cat /tmp/prebuild-*.log")
            if i == meta["calls"] - 1:  # no onnxruntime-gpu packed: the engine-free tests run here (ORT-CUDA ones skip)
                cmd += "; " + no_engine_tests
        elif i == meta["calls"] - 1:  # onnxruntime-gpu complete: unpack, run the tests that need no engine
            cmd += f" && bash tests/gpu/device_unpack.sh {' '.join(SECOND)} && {ENV} && " + no_engine_tests
        out.append({"carry": [f".devpack/c{i:02d}"], "command": cmd})
    # [t]: the pattern must not match this loop's own command line
    wait = "while pgrep -f [t]ests.gpu.prebuild >/dev/null; do sleep 5; done; cat /tmp/prebuild-*.log"
    # Round 5's order: the TensorRT suite first (about 9 minutes, its small engines built inside it; the
    # background builds finish meanwhile), then the NMS engines, then the benchmarks on a quiet GPU.
    out.append({"timeout_s": 600, "command": (
        f"set -o pipefail; {ENV} && timeout 580 python3 -m pytest tests/gpu/test_tensorrt_gpu.py -v -rs -p no:cacheprovider "
        "--durations=12 2>&1 | tee $OUT/gpu-tests.log | tail -60")})
    out.append({"timeout_s": 600, "command": (
        f"set -o pipefail; {ENV} && timeout 420 python3 -m pytest tests/gpu/test_nms_engine_gpu.py tests/gpu/test_tensorrt_rtx_gpu.py "
        "-v -rs -p no:cacheprovider 2>&1 | tee $OUT/gpu-tests-nms.log | tail -30; "
        f"pkill -f [t]ests.gpu.prebuild; cat /tmp/prebuild-*.log")})
    out.append({"timeout_s": 600, "command": (  # builds the bench engines the prebuild did not (about 2 min each)
        f"set -o pipefail; {ENV} && timeout 580 python3 benchmarks/trt_vs_ort.py --assets /tmp/shared/assets --out {ENGINES} "
        "--seconds 1.5 2>&1 | tee $OUT/trt_vs_ort.log | grep -v onnx2trt | tail -20")})
    engines = (f"--engine classify={ENGINES}/efficientnet_lite0-fp16-bench.plan --engine detect640={ENGINES}/detect640-fp16-pipe.plan "
               f"--engine detect320={ENGINES}/yolov8n-fp16-bench.plan --engine face={ENGINES}/scrfd-fp16-bench.plan")
    # (no OCR: its rec engine cannot be built with the kit, see REC_NEEDS_CUBLAS)
    common = "--tasks classify,detect640,detect320,face --images 256 --batch 32 --workers 16 --rounds 2 --frame-size 400:600"
    steady = "--tasks detect640 --images 256 --batch 32 --workers 16 --frame-size 400:600 --long 6144 --rounds 2 --graph-preprocess host"
    out.append({"timeout_s": 600, "command": (  # the streams' steady state (YOLOv8n at 640: the hardest target), then engines
        f"set -o pipefail; {ENV} && timeout 300 python3 benchmarks/pipelines.py --backend ort-cuda {steady} 2>&1 | "
        "tee $OUT/pipelines-long-ort.log; "
        f"timeout 280 python3 benchmarks/pipelines.py --backend tensorrt {common} {engines} 2>&1 | tee $OUT/pipelines-trt.log")})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", type=Path, default=ROOT.parent / "shared" / "assets")
    ap.add_argument("--wheels", type=Path, help="folder of extra cp312 wheels for the device (pyclipper, pillow, ...)")
    ap.add_argument("--ort-wheel", type=Path, help="onnxruntime-gpu cp312 manylinux wheel (see ../shared/DEVICE.md)")
    ap.add_argument("--call-mib", type=int, default=60, help="MiB per call (the checkout itself travels too)")
    ap.add_argument("--sync", action="store_true", help="pack into .devpack first")
    ap.add_argument("--engines", type=Path, help="engines built in an earlier session (*.plan + *.plan.json) to carry back")
    ap.add_argument("--prebuild", default="suite,bench,nms,pipelines",
                    help="engine groups tests/gpu/prebuild.py builds in the background (30 device minutes do not cover all; "
                    "'ocr' is the PP-OCRv4 engines alone, 'yolo' YOLOv8n's); '+' starts another background process, e.g. "
                    "'ocr+yolo' (the PP-OCRv4 rec build is bound by one CPU core, so a second build beside it costs little)")
    ap.add_argument("--prebuild-budget", type=int, default=900, help="seconds the background builds may take")
    args = ap.parse_args()
    if args.sync:
        sync(assets=args.assets.resolve(), wheels=args.wheels, ort_wheel=args.ort_wheel, engines=args.engines, call_mib=args.call_mib)
    for number, call in enumerate(calls(prebuild=args.prebuild, budget=args.prebuild_budget), 1):
        print(f"call {number}: {json.dumps(call)}")


if __name__ == "__main__":
    main()
