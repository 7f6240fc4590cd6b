"""``trtkit serve MODEL... | --repo REPO``: run a real Triton Inference Server (see trtkit.serve.server)."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from typing import Any

from ..errors import SpecError
from .triton import add_repository_args, options_from_args


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve models or a repository on a real Triton Inference Server (HTTP, gRPC, metrics)",
        description="Start tritonserver on --repo REPO, or on a repository written for MODEL... (trtkit in the "
        "Python backend by default), wait until it is ready, print the endpoints, and run until Ctrl-C.",
    )
    p.add_argument("models", metavar="MODEL", nargs="*", help="models to serve (a repository is written to a temp dir)")
    p.add_argument("--repo", metavar="REPO", help="serve this model repository instead")
    add_repository_args(p, backend_default="python")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP port (0 = any free port)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (0 = any free port)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only; 0.0.0.0 exposes the server)")
    p.add_argument("--log-verbose", type=int, default=0, help="Triton's --log-verbose level (0 = info/warnings/errors)")
    p.add_argument("--quiet", action="store_true", help="do not forward Triton's log lines")
    p.add_argument("--tritonserver", metavar="PATH", help="tritonserver binary (default: nvidia-pytriton's, else PATH)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..serve.server import ServerConfig, TritonServer, find_tritonserver
    from ..serve.steps import IMAGE

    if args.repo and args.models:
        raise SpecError("give MODEL... or --repo REPO, not both")
    if not args.repo and not args.models:
        raise SpecError("nothing to serve: give MODEL... or --repo REPO (write one with trtkit triton)")
    config = ServerConfig(http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                          host=args.host, log_verbose=args.log_verbose, tritonserver=args.tritonserver)
    find_tritonserver(args.tritonserver)  # before writing anything: without the binary, say how to install it
    temp = None
    try:
        if args.repo:
            repo = args.repo
        else:
            from ..serve.repository import write_repository

            options, task_options = options_from_args(args)
            temp = tempfile.mkdtemp(prefix="trtkit-repo-")
            report = write_repository(args.models, f"{temp}/repo", options=options, task=args.task, task_options=task_options)
            repo = report.repository
            print(report.render())
        log = (lambda line: None) if args.quiet else None
        with TritonServer(repo, config=config, log=log) as server:
            ends = server.endpoints()
            print(f"Triton is ready (pid {server.pid}); repository {repo}")
            print(f"  HTTP     {ends['http']}   (KServe v2: {ends['http']}/v2/models/NAME/infer)")
            print(f"  gRPC     {ends['grpc']}")
            print(f"  metrics  {ends['metrics']}")
            if args.task:
                print(f"  input    '{IMAGE}': UINT8 [N], the encoded file's bytes "
                      "(np.frombuffer(open(path, 'rb').read(), np.uint8)); not BYTES")
            print("Ctrl-C stops the server.", flush=True)
            code = server.wait()
            if code:
                print(f"error: tritonserver exited with code {code}", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        print("stopped Triton", file=sys.stderr)
        return 0
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    return 0
