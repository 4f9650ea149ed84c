"""The WASI test suite's runtime adapter for wasmpool (ours, Apache-2.0 like the suite).

The suite's harness (wasi_test_runner) loads this module and asks it how to
run one test: `wasmpool run` for commands, `wasmpool serve` for services.
WASMPOOL names the binary (default: target/release/wasmpool of this repository).
"""

import os
import subprocess
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
WASMPOOL = os.environ.get("WASMPOOL", str(_ROOT / "target" / "release" / "wasmpool"))


def get_name() -> str:
    return "wasmpool"


def get_version() -> str:
    out = subprocess.run([WASMPOOL, "--version"], encoding="UTF-8", check=True,
                         capture_output=True).stdout
    return out.strip().split(" ")[-1]


def get_wasi_versions() -> list[str]:
    return ["wasm32-wasip1", "wasm32-wasip3"]


def get_wasi_worlds() -> list[str]:
    return ["wasi:cli/command", "wasi:http/service"]


def get_timeout_seconds() -> float:
    return 30.0


def compute_argv(test_path: str, args_env_root, proposals, wasi_world: str,
                 wasi_version: str) -> list[str]:
    args, env, root = args_env_root
    if wasi_world == "wasi:http/service":
        argv = [WASMPOOL, "serve", "--addr", "127.0.0.1:0"]
    else:
        argv = [WASMPOOL, "run"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    if root is not None:
        argv += ["--dir", f"{root}::/"]
    # Network as the suite's proposals ask, and for every WASIp3 test, as the
    # wasmtime CLI is measured (`-Sp3,http,inherit-network`): same grants, same tests.
    if "sockets" in proposals or "http" in proposals or wasi_version == "wasm32-wasip3":
        argv += ["--network"]
    argv.append(test_path)
    argv += args
    return argv
