"""A wasi:http/incoming-handler@0.2 handler whose start-up work is in `wizer-initialize`."""

import wit_world
from wit_world import exports
from wit_world.imports.types import (
    IncomingRequest, ResponseOutparam, OutgoingResponse, Fields, OutgoingBody,
)
from componentize_py_types import Ok
import startup


class WitWorld(wit_world.WitWorld):
    def wizer_initialize(self) -> None:
        startup.start_up()


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        body_text = startup.describe(request.path_with_query() or "/")
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        stream = body.write()
        stream.blocking_write_and_flush(body_text)
        stream.__exit__(None, None, None)
        OutgoingBody.finish(body, None)
