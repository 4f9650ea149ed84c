"""Runs the WASI conformance suite against wasmpool through the suite's own harness.

Usage: python3 tests/conformance/run.py [CONFORMANCE_DIR]   (default: ../shared/conformance)

Each test runs alone, in a private copy of its folder (the filesystem tests
write into the tree they preopen, and some leave a symlink behind that the
next one would list), through `run_suite.py` (the harness, unchanged).
Known failures are listed in `expected-failures.txt` with the reason; the
script fails on any other failure, and on a known one that now passes (so
the list stays true). Without the suite folder it says so and fails unless
WASMPOOL_CONFORMANCE_OPTIONAL=1.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def tests_of(suite: Path):
    for wasm in sorted(suite.glob("*.wasm")):
        yield wasm


def run_one(conformance: Path, suite: Path, wasm: Path, work: Path) -> tuple[bool, str]:
    case = work / wasm.stem
    case.mkdir(parents=True)
    shutil.copy(suite / "manifest.json", case)
    shutil.copy(wasm, case)
    spec = wasm.with_suffix(".json")
    if spec.exists():
        shutil.copy(spec, case)
        root = json.loads(spec.read_text()).get("root")
        if root:
            shutil.copytree(suite / root, case / root, symlinks=True)
            for path in [case / root, *(case / root).rglob("*")]:
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode | 0o200)
    out = subprocess.run(
        [sys.executable, str(HERE / "run_suite.py"), str(conformance), "-t", str(case),
         "-r", os.environ.get("WASMPOOL_ADAPTER", str(HERE / "adapter.py")), "--disable-colors"],
        capture_output=True, text=True, timeout=300, cwd=case)
    return out.returncode == 0, out.stdout + out.stderr


def main() -> int:
    conformance = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared" / "conformance")
    # Absolute: each test's harness runs in a folder of its own.
    conformance = conformance.resolve()
    if not (conformance / "test-runner").is_dir():
        print(f"conformance: the WASI test suite is absent ({conformance}): NOT RUN")
        return 0 if os.environ.get("WASMPOOL_CONFORMANCE_OPTIONAL") == "1" else 1
    expected = {}
    for line in (HERE / "expected-failures.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, why = line.partition(" ")
            expected[name] = why.strip()
    suites = [p.parent for p in conformance.glob("**/manifest.json")]
    passed, failed, unexpected = 0, [], []
    with tempfile.TemporaryDirectory(prefix="wasmpool-conformance-") as work:
        for suite in sorted(suites):
            label = suite.relative_to(conformance)
            for wasm in tests_of(suite):
                name = f"{label}/{wasm.stem}"
                ok, output = run_one(conformance, suite, wasm, Path(work) / str(label).replace("/", "_"))
                if ok:
                    passed += 1
                    if name in expected:
                        unexpected.append(f"{name}: passes now; remove it from expected-failures.txt")
                else:
                    failed.append(name)
                    if name not in expected:
                        detail = "\n    ".join(output.strip().splitlines()[-8:])
                        unexpected.append(f"{name}: failed\n    {detail}")
    for suite in sorted(suites):
        label = str(suite.relative_to(conformance))
        total = len(list(tests_of(suite)))
        bad = [f for f in failed if f.startswith(label + "/")]
        print(f"conformance {label}: {total - len(bad)}/{total} passed"
              + (f" (failed: {', '.join(b.split('/')[-1] for b in bad)})" if bad else ""))
    for line in unexpected:
        print(f"conformance: UNEXPECTED {line}")
    known = len(failed) - len([u for u in unexpected if u.endswith("failed") or "failed\n" in u])
    print(f"conformance: {passed} tests passed; {known} known failures; {len(unexpected)} unexpected")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
