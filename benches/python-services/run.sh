#!/usr/bin/env bash
# Real Python services (componentize-py from PyPI) served by wasmpool and by
# `wasmtime serve` 48, side by side in one run: wrk, 64 connections on
# loopback, idle and beside 4 busy host loops; and the first request after
# start. Needs: python3 with venv, wrk (Debian's), and a wasmtime 48 CLI
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
# The WIT wasmtime 48 serves: wasmtime-wasi-http's own, from cargo's registry.
cargo fetch --manifest-path "$root/Cargo.toml" --quiet
http=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/wasmtime-wasi-http-48.0.8 | head -1)
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
busy() { for _ in 1 2 3 4; do (while :; do :; done) & done; }
first_request() { # $1: command…; prints ms from start to the first 200
    local start=$(date +%s%N)
    "$@" >/dev/null 2>&1 &
    local pid=$!
    until curl -sf -o /dev/null http://127.0.0.1:8400/; do sleep 0.001; done
    echo $(( ($(date +%s%N) - start) / 1000000 ))
    kill $pid; wait $pid 2>/dev/null || true
}
for world in p2 p3; do
    for who in wasmpool wasmtime; do
        if [ $who = wasmpool ]; then cmd=("$wasmpool" -q serve --addr 127.0.0.1:8400 $world.wasm)
        else cmd=("$wasmtime" serve -Scli --addr 127.0.0.1:8400 $world.wasm); fi
        echo "== $world $who: first request $(first_request "${cmd[@]}") ms"
        "${cmd[@]}" >/dev/null 2>&1 &
        pid=$!
        until curl -sf -o /dev/null http://127.0.0.1:8400/; do sleep 0.01; done
        wrk -t2 -c64 -d2s http://127.0.0.1:8400/ >/dev/null
        echo "-- idle"; wrk -t2 -c64 -d$duration --latency http://127.0.0.1:8400/ | grep -E "Requests/sec|99%|50%|Non-2xx|errors"
        busy; sleep 0.5
        echo "-- beside 4 busy loops"; wrk -t2 -c64 -d$duration --latency http://127.0.0.1:8400/ | grep -E "Requests/sec|99%|50%|Non-2xx|errors"
        kill $(jobs -p | grep -v "^$pid$") 2>/dev/null || true
        kill $pid; wait 2>/dev/null || true
    done
done
