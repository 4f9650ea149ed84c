#!/usr/bin/env bash
# Real Python services (componentize-py from PyPI) served by wasmpool and by
# `wasmtime serve` 48, side by side in one run: wrk, 64 connections on
# loopback, idle, beside 4 busy host loops and beside 4 requests spinning in
# the service (`/spin`, both servers with a 5 s deadline a request); and the
# first request after start (caches warm, 3 runs). Needs: python3 with venv, wrk (Debian's), and a wasmtime 48 CLI
# (`cargo install wasmtime-cli --version 48.0.8 --locked`) as $WASMTIME.
#
#   WASMTIME=/path/to/wasmtime bash benches/python-services/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${WORK:-$root/target/python-services}
wasmtime=${WASMTIME:-wasmtime}
duration=${DURATION:-10s}
mkdir -p "$work"
cd "$work"
if [ ! -x venv/bin/componentize-py ]; then
    python3 -m venv venv
    venv/bin/pip install -q componentize-py==0.25.1
fi
. "$here/../common/serve.sh"
http=$(wasi_http_wit "$root/Cargo.toml")
cargo build --release --manifest-path "$root/Cargo.toml" --quiet
wasmpool=$root/target/release/wasmpool
for world in p2 p3; do
    if [ ! -f $world.wasm ]; then
        mkdir -p $world && cp "$here/$world.py" $world/app.py
        case $world in
            p2) wit=$http/wit w=wasi:http/proxy@0.2.12 ;;
            p3) wit=$http/src/p3/wit w=wasi:http/service@0.3.0 ;;
        esac
        (cd $world && ../venv/bin/componentize-py -d "$wit" -w $w componentize app -o ../$world.wasm)
    fi
done
for world in p2 p3; do
    for who in wasmpool wasmtime; do
        if [ $who = wasmpool ]; then cmd=("$wasmpool" -q serve --addr 127.0.0.1:8400 $world.wasm)
        else cmd=("$wasmtime" serve -Scli --addr 127.0.0.1:8400 $world.wasm); fi
        first_request "${cmd[@]}" >/dev/null # its compiled cache
        echo "== $world $who: first request, ms: $(for _ in 1 2 3; do first_request "${cmd[@]}"; done)"
        serve_and_load "${cmd[@]}"
        # Both with a 5 s deadline a request, which ends each spinning one.
        if [ $who = wasmpool ]; then cmd=("$wasmpool" -q serve --timeout 5s --addr 127.0.0.1:8400 $world.wasm)
        else cmd=("$wasmtime" serve -Scli -W timeout=5s --addr 127.0.0.1:8400 $world.wasm); fi
        serve_beside_spinners "${cmd[@]}"
    done
done
