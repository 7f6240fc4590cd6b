"""``trtkit triton``: write a Triton model repository for models and task pipelines.

Layouts (``NAME`` defaults to the model file's stem)::

    REPO/NAME/config.pbtxt            platform tensorrt_plan | onnxruntime_onnx   (--backend native)
    REPO/NAME/1/model.plan|model.onnx
                                      backend python: model.py + the model + trtkit_step.json (--backend python)

    --task T:  REPO/NAME        ensemble: image (UINT8 encoded bytes) -> tensors + json
               REPO/NAME_pre    Python backend: decode, the task's own preprocess
               REPO/NAME_model  the model (native or Python backend, as above)
               REPO/NAME_post   Python backend: the task's own postprocess (OCR: + recognition)

Every ``config.pbtxt`` is rendered from Triton's proto and parsed back before
anything is written; the model directories are staged beside the repository
and renamed into place, so a failure or Ctrl-C leaves no half-written model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import OutputPathError, SpecError
from ..spec import TensorSpec
from . import config as cfgmod
from .config import TritonOptions
from .facts import ModelFacts, read_facts
from .steps import IMAGE, JSON_OUT, META, STEP_FILE, TASK_OUTPUTS

__all__ = ["RepositoryReport", "write_repository", "TASKS"]

TASKS = ("classify", "detect", "face", "ocr")

SHIM = '''"""Triton Python-backend model written by `trtkit triton`: {role}.

The logic lives in trtkit ({target}). `trtkit serve` points
TRTKIT_SERVE_PYTHONPATH at the trtkit that started the server; elsewhere
(e.g. the NGC Triton container) install trtkit into the stub's Python.
"""
import os
import sys

_path = os.environ.get("TRTKIT_SERVE_PYTHONPATH")
if _path and _path not in sys.path:
    sys.path.insert(0, _path)

from {module} import {cls} as TritonPythonModel  # noqa: E402,F401
'''


@dataclass(frozen=True)
class RepositoryReport:
    repository: str
    models: tuple[str, ...]  # model names written, entry points first
    entry: tuple[str, ...]  # the models clients call
    notes: tuple[str, ...] = field(default=())

    def render(self) -> str:
        lines = [f"wrote Triton model repository {self.repository}"]
        lines += [f"  {name}{'  (call this)' if name in self.entry else ''}" for name in self.models]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class _Model:
    """One staged model directory: its config and the files of version 1."""

    name: str
    config: Any
    files: dict[str, Path] = field(default_factory=dict)  # name in 1/ -> source file
    texts: dict[str, str] = field(default_factory=dict)  # name in 1/ -> content


def _name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", text) or text in (".", ".."):
        raise SpecError(f"model name {text!r} is not usable as a Triton model directory; use letters, digits, _ . -")
    return text


def _default_name(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_\-]+", "_", path.stem).strip("_") or "model"


def _runtime(options: TritonOptions) -> dict[str, Any]:
    runtime: dict[str, Any] = {"device": options.device}
    if options.threads is not None:
        runtime["threads"] = options.threads
    return runtime


def _model_file(facts: ModelFacts) -> str:
    return "model.onnx" if facts.kind == "onnx" else "model.plan"


def _model_step(facts: ModelFacts, options: TritonOptions, name: str) -> _Model:
    """The model itself: native platform config, or trtkit in the Python backend."""
    if options.backend == "native":
        platform = "tensorrt_plan" if facts.kind == "engine" else "onnxruntime_onnx"
        gpu = facts.kind == "engine" or options.ort_tensorrt or options.device == "cuda"
        config = cfgmod.model_config(facts, options, name=name, platform=platform, gpu=gpu)
        return _Model(name, config, files={_model_file(facts): facts.path})
    config = cfgmod.model_config(facts, options, name=name, backend="python")
    step = {"name": name, "kind": "raw", "max_batch_size": config.max_batch_size,
            "model": {**facts.to_json(), "path": _model_file(facts)}, "runtime": _runtime(options)}
    return _Model(name, config, files={_model_file(facts): facts.path},
                  texts={"model.py": _shim("the model, run by trtkit", "RawModel"), STEP_FILE: _json(step)})


def _shim(role: str, cls: str) -> str:
    return SHIM.format(role=role, target=f"trtkit.serve.steps.{cls}", module="trtkit.serve.steps", cls=cls)


def _json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


def _full(spec: TensorSpec) -> TensorSpec:
    """A model tensor as a non-batching step declares it: the full shape, dynamic dims -1."""
    return TensorSpec(spec.name, spec.dtype, tuple(spec.json_shape()))


def _bytes(name: str) -> TensorSpec:
    return TensorSpec(name, "uint8", (-1,))


def _task_models(task: str, paths: Sequence[Path]) -> dict[str, ModelFacts]:
    if task == "ocr":
        if len(paths) not in (2, 3):
            raise SpecError(
                f"--task ocr takes the detection and recognition models, and optionally the direction "
                f"classifier: trtkit triton --task ocr DET.onnx REC.onnx [CLS.onnx] -o REPO (got {len(paths)} models)"
            )
        return {key: read_facts(p) for key, p in zip(("det", "rec", "cls"), paths)}
    if len(paths) != 1:
        raise SpecError(f"--task {task} takes one model, got {len(paths)}; write one repository entry per task model")
    return {"model": read_facts(paths[0])}


def _task_pipeline(task: str, paths: Sequence[Path], options: TritonOptions, name: str,
                   task_options: Mapping[str, Any]) -> list[_Model]:
    from .steps import build_task

    facts = _task_models(task, paths)
    build_task(task, facts, task_options)  # the task accepts these models and options, or raises now
    main = facts["det" if task == "ocr" else "model"]
    model_name, pre_name, post_name = f"{name}_model", f"{name}_pre", f"{name}_post"
    model = _model_step(main, options, model_name)
    feeds = [_full(s) for s in main.inputs]
    outs = [_full(s) for s in main.outputs]
    results = [TensorSpec(n, d, dims) for n, d, dims in TASK_OUTPUTS[task]] + [_bytes(JSON_OUT)]
    models_json = {key: {**f.to_json(), "path": f.path.name if key in ("rec", "cls") else _model_file(f)}
                   for key, f in facts.items()}
    common = {"task": task, "models": models_json, "options": dict(task_options), "runtime": _runtime(options)}

    pre = _Model(pre_name, cfgmod.step_config(pre_name, inputs=[_bytes(IMAGE)], outputs=[*feeds, _bytes(META)],
                                              backend="python", instances=options.instances),
                 texts={"model.py": _shim(f"{task} preprocess", "TaskPreprocess"),
                        STEP_FILE: _json({"name": pre_name, "kind": "pre", **common})})
    post_inputs = [*outs, _bytes(META)] + ([_bytes(IMAGE)] if task == "ocr" else [])
    post = _Model(post_name, cfgmod.step_config(post_name, inputs=post_inputs, outputs=results, backend="python",
                                                instances=options.instances),
                  files={f.path.name: f.path for key, f in facts.items() if key in ("rec", "cls")},
                  texts={"model.py": _shim(f"{task} postprocess", "TaskPostprocess"),
                         STEP_FILE: _json({"name": post_name, "kind": "post", **common})})

    ensemble = cfgmod.step_config(name, inputs=[_bytes(IMAGE)], outputs=results, platform="ensemble")
    cfgmod.add_ensemble_step(ensemble, pre_name, inputs=[IMAGE], outputs=[s.name for s in feeds] + [META])
    cfgmod.add_ensemble_step(ensemble, model_name, inputs=[s.name for s in feeds], outputs=[s.name for s in outs])
    cfgmod.add_ensemble_step(ensemble, post_name, inputs=[s.name for s in post_inputs], outputs=[s.name for s in results])
    return [_Model(name, ensemble), pre, model, post]


def plan_repository(
    models: Sequence[str | os.PathLike[str]],
    *,
    options: TritonOptions | None = None,
    task: str | None = None,
    task_options: Mapping[str, Any] | None = None,
) -> tuple[list[Any], tuple[str, ...]]:
    """The models a repository would hold (configs validated), and the names clients call. Writes nothing."""
    options = options or TritonOptions()
    paths = [Path(m) for m in models]
    if not paths:
        raise SpecError("no model given; usage: trtkit triton MODEL [MODEL...] -o REPO")
    if task is not None and task not in TASKS:
        raise SpecError(f"--task {task!r} is unknown; choose one of: {', '.join(TASKS)}")
    if task is None and task_options:
        raise SpecError(f"task options ({', '.join(sorted(task_options))}) need --task")
    if task is not None:
        name = _name(options.name or _default_name(paths[0]))
        planned = _task_pipeline(task, paths, options, name, dict(task_options or {}))
        entry: tuple[str, ...] = (name,)
    else:
        if options.name and len(paths) > 1:
            raise SpecError(f"--name names one model but {len(paths)} were given; drop --name or give one model")
        planned = [_model_step(read_facts(p), options, _name(options.name or _default_name(p))) for p in paths]
        entry = tuple(m.name for m in planned)
    names = [m.name for m in planned]
    if len(set(names)) != len(names):
        raise SpecError(f"two models would share a name ({', '.join(names)}); give the files distinct names")
    for model in planned:
        model.texts["config.pbtxt"] = cfgmod.render(model.config)
    return planned, entry


def write_repository(
    models: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    options: TritonOptions | None = None,
    task: str | None = None,
    task_options: Mapping[str, Any] | None = None,
) -> RepositoryReport:
    """Write a Triton model repository at ``output`` (created if missing; existing models are never replaced)."""
    planned, entry = plan_repository(models, options=options, task=task, task_options=task_options)
    repo = Path(output)
    if repo.exists() and not repo.is_dir():
        raise OutputPathError(f"-o {str(repo)!r} exists and is not a directory; give a directory for the repository")
    taken = [m.name for m in planned if (repo / m.name).exists()]
    if taken:
        raise OutputPathError(
            f"repository {str(repo)!r} already has model(s) {', '.join(taken)}; trtkit never replaces a model. "
            "Remove them, choose another --name, or write to a new -o directory"
        )
    created = not repo.exists()
    try:
        repo.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".trtkit-", dir=repo))
    except OSError as exc:
        raise OutputPathError(f"cannot create repository {str(repo)!r}: {exc.strerror or exc}; choose another -o") from exc
    try:
        for model in planned:
            version = staging / model.name / "1"
            version.mkdir(parents=True)
            (staging / model.name / "config.pbtxt").write_text(model.texts.pop("config.pbtxt"), encoding="utf-8")
            for fname, text in model.texts.items():
                (version / fname).write_text(text, encoding="utf-8")
            for fname, source in model.files.items():
                shutil.copyfile(source, version / fname)
        for model in planned:
            os.replace(staging / model.name, repo / model.name)
    except OSError as exc:
        raise OutputPathError(f"writing repository {str(repo)!r} failed ({exc.strerror or exc}); nothing was written") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(repo.iterdir()):
            repo.rmdir()
    return RepositoryReport(str(repo), tuple(m.name for m in planned), entry)
