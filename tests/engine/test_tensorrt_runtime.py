"""The TensorRT runtime where no TensorRT engine can run (no GPU here).

Real paths: engines built by tensorrt_rtx here go through trtkit.load up to
deserialization, whose real TensorRT errors become trtkit errors. Every
TensorRT call in backends/trt_api.py is checked against the real binding
classes, found by parsing the module (not a hand-kept list).
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import trtkit
from trtkit.engine.flavor import runtime_only_flavors
from trtkit.engine import trt_api
from trtkit.engine.profiles import choose_profile, chunk_size, engine_profiles, no_profile_error
from trtkit.errors import BackendUnavailable, EngineError, ModelLoadError, ProfileError
from tests.conftest import HAS_GPU
from tests.engine.test_typecheck import _split_params as split_params

trt = pytest.importorskip("tensorrt_rtx")
from trtkit.engine import builder as trt_builder, info as engine_info  # noqa: E402

ROLE_MODULES = (trt_api, trt_builder, engine_info)  # every module of trtkit.engine that holds TensorRT objects
RUNTIME_FILE = Path(trt_api.__file__).parents[1] / "backends" / "tensorrt.py"


@pytest.fixture(scope="module")
def relu_engine(tmp_path_factory):
    from tests.gpu._engines import build_relu_engine

    return build_relu_engine(tmp_path_factory.mktemp("eng") / "relu.engine")


# ---------------------------------------------------------------- real error paths

@pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU path")
def test_valid_engine_without_gpu_is_backend_unavailable(relu_engine):
    with pytest.raises(BackendUnavailable, match="no usable NVIDIA GPU.*TensorRT-RTX.*cudaErrorInsufficientDriver"):
        trtkit.load(relu_engine)


@pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU path")
def test_cuda_is_checked_before_any_tensorrt_runtime(relu_engine, tmp_path):
    """Without a usable driver a TensorRT Runtime segfaults when touched, so CUDA is checked first (any magic)."""
    odd = tmp_path / "other.engine"
    odd.write_bytes(b"xtrt" + relu_engine.read_bytes()[4:])  # unknown magic: tried with what is installed
    with pytest.raises(BackendUnavailable, match="cannot be loaded: no usable NVIDIA GPU"):
        trtkit.load(odd)


def test_explain_failure_on_real_tensorrt_messages():
    """TensorRT's own log lines (8.x and 10.x wording, quoted from their logs) map to the cause."""
    from trtkit.engine.trt_api import explain_failure

    v8 = explain_failure(["1: [stdArchiveReader.cpp::StdArchiveReader::40] Error Code 1: Serialization "
                          "(Serialization assertion stdVersionRead == serializationVersion failed.Version tag does not match)"],
                         what="engine 'a.plan'", version="8.5.3.1", rtx=False)
    assert "serialization version/magic mismatch" in str(v8) and "8.5.3.1" in str(v8)
    lean = explain_failure(["Cannot deserialize engine with lean runtime"], what="engine 'a.plan'", version="11.4.0.106",
                           rtx=False, lean=True)
    assert "--versionCompatible" in str(lean)


@pytest.mark.skipif(bool(runtime_only_flavors()), reason="a lean/dispatch runtime is installed: tests/engine/test_lean_runtime.py")
def test_engine_of_uninstalled_full_tensorrt_names_it(relu_engine, tmp_path):
    full = tmp_path / "full.plan"
    full.write_bytes(b"ftrt" + relu_engine.read_bytes()[4:])
    with pytest.raises(BackendUnavailable, match="was built by TensorRT, which is not installed.*pip install"):
        trtkit.load(full)


def test_truncated_engine_is_caught_from_its_header(relu_engine, tmp_path):
    cut = tmp_path / "cut.trt"
    cut.write_bytes(relu_engine.read_bytes()[:2000])
    with pytest.raises(ModelLoadError, match="truncated: its header declares .* bytes of plan, the file holds 2000"):
        trtkit.load(cut)


def test_non_engine_file_is_a_load_error(tmp_path):
    text = tmp_path / "x.plan"
    text.write_text("hello " * 50)
    with pytest.raises(ModelLoadError, match="not a TensorRT engine"):
        trtkit.load(text)


def test_cli_reports_engine_errors_cleanly(relu_engine, tmp_path, cli):
    from tests.conftest import assert_clean_error

    odd = tmp_path / "other.engine"
    odd.write_bytes(b"xtrt" + relu_engine.read_bytes()[4:])
    result = cli("run", str(odd))
    if "invalid choice" in result.err or "unrecognized" in result.err:
        pytest.skip("trtkit run is not registered in this build")
    assert_clean_error(result, "no usable NVIDIA GPU" if not HAS_GPU else "magic")


# ---------------------------------------------------------------- call sites vs the real bindings

def _call_sites():
    """(module, role, attribute, positional arg count or None, line) for every attribute used on a TensorRT role
    variable in every module of trtkit.engine that declares ROLES."""
    for module in ROLE_MODULES:
        tree = ast.parse(Path(module.__file__).read_text())
        calls = {id(n.func): len(n.args) for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in module.ROLES:
                yield module, node.value.id, node.attr, calls.get(id(node)), node.lineno


def test_every_engine_module_that_touches_tensorrt_declares_roles():
    """A module of trtkit.engine that calls TensorRT but has no ROLES table would escape the call-site check."""
    engine_dir = Path(trt_api.__file__).parent
    for path in engine_dir.glob("*.py"):
        text = path.read_text()
        if "trt." in text or ".deserialize_cuda_engine" in text:
            assert "ROLES: dict[str, str]" in text or path.name in ("flavor.py", "build.py"), path.name
    sites = list(_call_sites())
    by_module = {m.__name__.rsplit(".", 1)[-1]: {site[1] for site in sites if site[0] is m} for m in ROLE_MODULES}
    assert {"builder", "config", "network", "parser"} <= by_module["builder"]
    assert {"engine", "inspector"} <= by_module["info"]


def _arities(func) -> set[int]:
    """Positional arg counts (self excluded) a pybind11 method accepts, read from its docstring signatures."""
    sigs = re.findall(rf"{func.__name__}\(self: [^\n]*?\)\s*->", func.__doc__ or "")
    out = set()
    for sig in sigs:
        params = sig[sig.index("(") + 1 : sig.rindex(")")]
        parts = split_params(params)[1:]  # drop self
        required = sum("=" not in p for p in parts)
        out |= set(range(required, len(parts) + 1))
    return out


# Module attributes used only behind hasattr(trt, ...): present in full TensorRT, absent in RTX.
_VERSION_GUARDED = {"init_libnvinfer_plugins"}


def test_every_tensorrt_call_exists_with_that_arity_in_the_real_bindings():
    sites = list(_call_sites())
    assert len(sites) >= 40  # the parser found the call sites of all three modules (guards a vacuous pass)
    for module, role, attr, nargs, line in sites:
        roles = module.ROLES
        where = f"{Path(module.__file__).name}:{line}"
        owner = trt if roles[role] == "<module>" else getattr(trt, roles[role])
        if roles[role] == "<module>" and attr in _VERSION_GUARDED:
            continue  # looked up with hasattr(); exists only in some TensorRT versions
        assert hasattr(owner, attr), f"{where}: {roles[role]}.{attr} does not exist in tensorrt_rtx"
        member = getattr(owner, attr)
        if nargs is not None and role.endswith("_base"):
            nargs -= 1  # unbound call on the class: self passed explicitly
        if nargs is not None and role != "trt" and callable(member) and not inspect.isclass(member) and member.__doc__:
            arities = _arities(member)
            if arities:
                assert nargs in arities, f"{where}: {attr} takes {arities} args, called with {nargs}"


def test_runtime_module_leaves_tensorrt_calls_to_the_api_module():
    trt_methods = set()
    for cls in ("ICudaEngine", "IExecutionContext", "Runtime", "IPluginRegistry"):
        trt_methods |= {m for m in dir(getattr(trt, cls)) if not m.startswith("_")}
    used = {
        n.attr
        for n in ast.walk(ast.parse(RUNTIME_FILE.read_text()))
        if isinstance(n, ast.Attribute) and not (isinstance(n.value, ast.Name) and n.value.id == "api")
    }
    assert used & trt_methods <= {"name"}, used & trt_methods


def test_output_allocator_and_logger_subclass_the_real_interfaces():
    pool: dict[str, int] = {}
    alloc = trt_api.make_output_allocator(trt, lambda name, n: pool.setdefault(name, 4096 + n))
    assert isinstance(alloc, trt.IOutputAllocator)
    for method in ("reallocate_output", "reallocate_output_async", "notify_shape"):
        assert method in (trt.IOutputAllocator.__doc__ or "")  # the names TensorRT calls back
    assert alloc.reallocate_output_async("y", 0, 100, 256, 0) == 4196
    alloc.notify_shape("y", trt.Dims([2, 3]))
    assert alloc.shapes == {"y": (2, 3)}
    logger = trt_api.shared_logger(trt)
    assert isinstance(logger, trt.ILogger) and logger is trt_api.shared_logger(trt)


def test_io_table_reads_a_real_engine_shape_contract(relu_engine):
    # Without a GPU the engine cannot be deserialized; the builder-side network gives the same contract.
    builder = trt.Builder(trt_api.shared_logger(trt))
    net = builder.create_network(0)
    x = net.add_input("x", trt.float32, (-1, 3, 8))
    assert tuple(x.shape) == (-1, 3, 8) and np.dtype(trt.nptype(x.dtype)) == np.float32


# ---------------------------------------------------------------- profile choice and chunking

PROFILES = engine_profiles(
    [("images", [((1, 3, 320, 320), (4, 3, 640, 640), (8, 3, 640, 640)), ((1, 3, 960, 960), (1, 3, 960, 960), (2, 3, 1280, 1280))])],
    2,
)


def test_choose_profile_prefers_the_current_one_and_finds_others():
    assert choose_profile(PROFILES, {"images": (2, 3, 640, 640)}, prefer=-1) == 0
    assert choose_profile(PROFILES, {"images": (2, 3, 1280, 1280)}, prefer=0) == 1
    assert choose_profile(PROFILES, {"images": (1, 3, 960, 960)}, prefer=1) == 1
    assert choose_profile(PROFILES, {"images": (1, 3, 200, 200)}, prefer=0) is None


def test_large_batches_chunk_to_the_biggest_profile_batch():
    assert chunk_size(PROFILES, {"images": (20, 3, 640, 640)}) == 8
    assert chunk_size(PROFILES, {"images": (5, 3, 1280, 1280)}) == 2
    assert chunk_size(PROFILES, {"images": (20, 3, 2000, 2000)}) is None


def test_no_profile_error_lists_the_profiles():
    err = no_profile_error(PROFILES, {"images": (1, 3, 200, 200)}, what="engine 'm.engine'")
    assert isinstance(err, ProfileError)
    assert "profile 0: images: min 1x3x320x320 opt 4x3x640x640 max 8x3x640x640" in str(err)
    assert "profile 1: images:" in str(err) and "1x3x200x200" in str(err)


# ---------------------------------------------------------------- contexts vs profile sharing (flavor.profile_sharing)

def test_contexts_follow_each_versions_profile_sharing_rule():
    from trtkit.backends.tensorrt import plan_contexts
    from trtkit.engine.flavor import TrtFlavor
    from trtkit.spec import ShapeProfile

    class Mod:  # only what profile_sharing reads: 8.5 has no PROFILE_SHARING_0806 preview feature
        class PreviewFeature:
            FASTER_DYNAMIC_SHAPES_0805 = 0

    v85 = TrtFlavor("tensorrt", Mod, "8.5.3.1")  # type: ignore[arg-type]
    a = ShapeProfile.from_shapes(min={"x": (1, 3)}, opt={"x": (4, 3)}, max={"x": (8, 3)})
    b = ShapeProfile.from_shapes(min={"x": (1, 3)}, opt={"x": (16, 3)}, max={"x": (32, 3)})
    kw = dict(dynamic=True, built_with_sharing=False, what="engine 'e.plan'")
    assert plan_contexts(v85, contexts=1, profiles=(a,), **kw) is None
    assert plan_contexts(v85, contexts=2, profiles=(a, a, b), **kw) == (0, 1)  # context i owns profile i
    assert plan_contexts(v85, contexts=2, profiles=(a,), dynamic=False, built_with_sharing=False, what="e") is None
    with pytest.raises(EngineError, match="cannot share an optimization profile.*1 profile.*2 identical profiles"):
        plan_contexts(v85, contexts=2, profiles=(a,), **kw)
    with pytest.raises(EngineError, match="different ranges"):
        plan_contexts(v85, contexts=2, profiles=(a, b), **kw)
    assert plan_contexts(TrtFlavor("tensorrt", Mod, "10.13.0"), contexts=4, profiles=(a,), **kw) is None  # type: ignore[arg-type]


def test_ctrl_c_inside_a_logger_callback_is_kept_and_re_raised(monkeypatch):
    """Parsing logs on the main thread, where SIGINT lands: the callback must not let KeyboardInterrupt unwind
    through C++, nor swallow it (review finding: `build --verbose` wrote the engine after Ctrl-C)."""
    import logging

    logger = trt_api.shared_logger(trt, verbose=True)
    logger.interrupted = False

    def interrupted_log(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trt_api._LOG, "log", interrupted_log)
    monkeypatch.setattr(trt_api._LOG, "isEnabledFor", lambda level: True)
    logger.log(trt.ILogger.Severity.INFO, "parsing node 1")  # TensorRT's call: must return normally
    with pytest.raises(KeyboardInterrupt):
        logger.check_interrupt()
    logger.check_interrupt()  # reported once, then cleared
    assert logging.getLogger("trtkit.tensorrt") is trt_api._LOG
