"""A wasi:http/service@0.3.0 handler whose start-up work is in `wizer-initialize`
(`plain` is p3.py, the plain service, copied beside it by preinit.sh)."""

import wit_world
from wit_world import exports
from wit_world.imports.wasi_http_types import Response, Request
import plain
import startup


class WitWorld(wit_world.WitWorld):
    def wizer_initialize(self) -> None:
        startup.start_up()


class Handler(exports.Handler):
    async def handle(self, request: Request) -> Response:
        return plain.answer(startup.describe(request.get_path_with_query() or "/"))
