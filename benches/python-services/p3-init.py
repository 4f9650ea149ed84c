"""A wasi:http/service@0.3.0 handler whose start-up work is in `wizer-initialize`."""

import wit_world
from typing import Optional
from componentize_py_types import Ok, Result
from componentize_py_async_support.futures import FutureReader
from wit_world import exports
from wit_world.imports.wasi_http_types import Response, Fields, ErrorCode, Request

import startup


class WitWorld(wit_world.WitWorld):
    def wizer_initialize(self) -> None:
        startup.start_up()


class Handler(exports.Handler):
    async def handle(self, request: Request) -> Response:
        tx, rx = wit_world.byte_stream()
        body = startup.describe(request.get_path_with_query() or "/")

        async def write() -> None:
            with tx:
                await tx.write_all(body)

        import componentize_py_async_support
        componentize_py_async_support.spawn(write())
        return Response.new(
            Fields.from_list([("content-type", b"text/plain")]), rx, trailers()
        )[0]


def trailers() -> FutureReader[Result[Optional[Fields], ErrorCode]]:
    return wit_world.result_option_wasi_http_types_fields_wasi_http_types_error_code_future(lambda: Ok(None))[1]
