"""A wasi:http/incoming-handler@0.2 handler whose start-up work is in `wizer-initialize`
(`plain` is p2.py, the plain service, copied beside it by preinit.sh)."""

import wit_world
from wit_world import exports
from wit_world.imports.types import IncomingRequest, ResponseOutparam
import plain
import startup


class WitWorld(wit_world.WitWorld):
    def wizer_initialize(self) -> None:
        startup.start_up()


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        plain.answer(response_out, startup.describe(request.path_with_query() or "/"))
