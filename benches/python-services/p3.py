"""A wasi:http/service@0.3.0 handler: answers every request with a short text,
but spins on `/spin` (a request that never ends unless its server ends it)."""

import wit_world
from typing import Optional
from componentize_py_types import Ok, Result
from componentize_py_async_support.futures import FutureReader
from wit_world import exports
from wit_world.imports.wasi_http_types import Response, Fields, ErrorCode, Request

counter = 0


def answer(text: bytes) -> Response:
    """A `200 text/plain` response of `text`, written by a task of its own."""
    tx, rx = wit_world.byte_stream()

    async def write() -> None:
        with tx:
            await tx.write_all(text)

    import componentize_py_async_support
    componentize_py_async_support.spawn(write())
    return Response.new(
        Fields.from_list([("content-type", b"text/plain")]), rx, trailers()
    )[0]


class Handler(exports.Handler):
    async def handle(self, request: Request) -> Response:
        global counter
        counter += 1
        if request.get_path_with_query() == "/spin":
            while True:
                pass
        return answer(f"hello from python {request.get_path_with_query()}\n".encode())


def trailers() -> FutureReader[Result[Optional[Fields], ErrorCode]]:
    return wit_world.result_option_wasi_http_types_fields_wasi_http_types_error_code_future(lambda: Ok(None))[1]
