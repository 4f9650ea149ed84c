"""Start-up work a service does once: compiled routes, a word table."""

import decimal
import json
import re

table = None


def start_up() -> None:
    global table
    if table is not None:
        return
    routes = [re.compile(rf"^/items/(\d+)/part{i}(/.*)?$") for i in range(300)]
    words = {f"word{i}": decimal.Decimal(i) / 7 for i in range(40_000)}
    table = (routes, words, json.dumps(sorted(words)[:1000]))


def describe(path: str) -> bytes:
    start_up()
    routes, words, _ = table
    route = next((i for i, r in enumerate(routes) if r.match(path)), None)
    return f"hello from python {path} ({len(words)} words, route {route})\n".encode()
