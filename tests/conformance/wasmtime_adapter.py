"""The suite's runtime adapter for the wasmtime CLI, to measure wasmpool against it.

WASMTIME names the binary (default: `wasmtime` on the PATH). Use it with
run.py: `WASMPOOL_ADAPTER=tests/conformance/wasmtime_adapter.py python3
tests/conformance/run.py` (known failures then differ: the script reports them).
"""

import os
import subprocess

WASMTIME = os.environ.get("WASMTIME", "wasmtime")


def get_name() -> str:
    return "wasmtime"


def get_version() -> str:
    out = subprocess.run([WASMTIME, "--version"], encoding="UTF-8", check=True,
                         capture_output=True).stdout
    return out.strip().split(" ")[1]


def get_wasi_versions() -> list[str]:
    return ["wasm32-wasip1", "wasm32-wasip3"]


def get_wasi_worlds() -> list[str]:
    return ["wasi:cli/command", "wasi:http/service"]


def get_timeout_seconds() -> float:
    return 30.0


def compute_argv(test_path: str, args_env_root, proposals, wasi_world: str,
                 wasi_version: str) -> list[str]:
    args, env, root = args_env_root
    serve = wasi_world == "wasi:http/service"
    argv = [WASMTIME, "serve", "--addr", "127.0.0.1:0"] if serve else [WASMTIME, "run"]
    if wasi_version == "wasm32-wasip3":
        argv += ["-Sp3,http,inherit-network" if not serve else "-Sp3,cli,inherit-network"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    if root is not None:
        argv += ["--dir", f"{root}::/"]
    argv.append(test_path)
    argv += args
    return argv
