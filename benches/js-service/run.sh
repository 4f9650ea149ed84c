#!/usr/bin/env bash
# A real ComponentizeJS service (npm's @bytecodealliance/componentize-js,
# StarlingMonkey inside, 13 MB): a wasi:http 0.2 handler answering a short
# text, served by wasmpool and by `wasmtime serve` 48 side by side in one
# run: the first request after start (caches warm, 3 runs), then wrk, 64
# connections on loopback, idle, beside 4 busy host loops and beside 4
# requests spinning in the service (`/spin`, both servers with a 5 s
# deadline a request). Needs node and npm, wrk, and a wasmtime 48 CLI as
# $WASMTIME.
#
#   WASMTIME=/path/to/wasmtime bash benches/js-service/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${WORK:-$root/target/js-service}
wasmtime=${WASMTIME:-wasmtime}
duration=${DURATION:-10s}
mkdir -p "$work"
cd "$work"
[ -x node_modules/.bin/componentize-js ] ||
    npm install --no-audit --no-fund @bytecodealliance/componentize-js@0.23.0
. "$here/../common/serve.sh"
http=$(wasi_http_wit "$root/Cargo.toml")
cargo build --release --manifest-path "$root/Cargo.toml" --quiet
wasmpool=$root/target/release/wasmpool
if [ ! -f js.wasm ]; then
    # StarlingMonkey in componentize-js 0.23 exports wasi:http@0.2.10: the
    # WIT wasmtime 48 serves (0.2.12), relabelled.
    rm -rf wit && mkdir wit && cp -r "$http/wit/deps" wit/deps
    sed -i -E 's/@0\.2\.1[12]/@0.2.10/g; s/version = 0\.2\.1[12]/version = 0.2.10/g' wit/deps/*.wit
    printf 'package bench:js;\n\nworld service {\n  include wasi:http/proxy@0.2.10;\n}\n' > wit/world.wit
    node_modules/.bin/componentize-js -w wit -n service -o js.wasm "$here/app.js"
fi
for who in wasmpool wasmtime; do
    if [ $who = wasmpool ]; then cmd=("$wasmpool" -q serve --addr 127.0.0.1:8400 js.wasm)
    else cmd=("$wasmtime" serve -Scli --addr 127.0.0.1:8400 js.wasm); fi
    first_request "${cmd[@]}" >/dev/null # its compiled cache
    echo "== $who: first request, ms: $(for _ in 1 2 3; do first_request "${cmd[@]}"; done)"
    serve_and_load "${cmd[@]}"
    # Both with a 5 s deadline a request, which ends each spinning one.
    if [ $who = wasmpool ]; then cmd=("$wasmpool" -q serve --timeout 5s --addr 127.0.0.1:8400 js.wasm)
    else cmd=("$wasmtime" serve -Scli -W timeout=5s --addr 127.0.0.1:8400 js.wasm); fi
    serve_beside_spinners "${cmd[@]}"
done
