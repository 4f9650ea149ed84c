"""A wasi:http/incoming-handler@0.2.0 handler: answers every request with a short text,
but spins on `/spin` (a request that never ends unless its server ends it)."""

from wit_world import exports
from wit_world.imports.types import (
    IncomingRequest, ResponseOutparam, OutgoingResponse, Fields, OutgoingBody,
)
from componentize_py_types import Ok


def answer(response_out: ResponseOutparam, text: bytes) -> None:
    """Sets a `200 text/plain` response of `text` on `response_out`."""
    response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
    body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    stream = body.write()
    stream.blocking_write_and_flush(text)
    stream.__exit__(None, None, None)
    OutgoingBody.finish(body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        if request.path_with_query() == "/spin":
            while True:
                pass
        answer(response_out, f"hello from python {request.path_with_query()}\n".encode())
