"""Runs the WASI test suite's own harness against wasmpool.

Usage: python3 run_suite.py CONFORMANCE_DIR SUITE [SUITE...] [--expectations FILE]

The harness is written for Python 3.12, where `"x" in SomeEnum` tests the
values; on 3.11 it raises. This wrapper gives 3.11 that meaning, then hands
over to the harness unchanged.
"""

import enum
import sys
from pathlib import Path

_contains = enum.EnumType.__contains__


def _contains_value(cls, value):
    if isinstance(value, cls):
        return True
    try:
        cls(value)
        return True
    except ValueError:
        return False
    except TypeError:
        return _contains(cls, value)


if sys.version_info < (3, 12):
    enum.EnumType.__contains__ = _contains_value

conformance = Path(sys.argv[1])
sys.path.insert(0, str(conformance / "test-runner"))
from wasi_test_runner.__main__ import main  # noqa: E402

sys.argv = ["wasi_test_runner"] + sys.argv[2:]
sys.exit(main())
