#!/usr/bin/env bash
# Pre-initialisation on real Python services (componentize-py from PyPI):
# two services whose start-up (300 compiled routes, a 40,000-entry table:
# startup.py) is their `wizer-initialize` export, run on the first request
# when nobody ran it before. Each is served as built and as snapshotted by
# `wasmpool wizer`, by wasmpool and by `wasmtime serve` 48: the first request
# after start (3 runs each), then wrk, 64 connections on loopback. Needs what
# run.sh needs.
#
#   WASMTIME=/path/to/wasmtime bash benches/python-services/preinit.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${WORK:-$root/target/python-services}/init
wasmtime=${WASMTIME:-wasmtime}
duration=${DURATION:-10s}
mkdir -p "$work"
cd "$work"
venv=${VENV:-$work/../venv}
if [ ! -x "$venv/bin/componentize-py" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q componentize-py==0.25.1
fi
. "$here/../common/serve.sh"
http=$(wasi_http_wit "$root/Cargo.toml")
cargo build --release --manifest-path "$root/Cargo.toml" --quiet
wasmpool=$root/target/release/wasmpool
for world in p2 p3; do
    if [ ! -f $world.wasm ]; then
        # The service's world and its WASI, one folder per WASI version.
        rm -rf wit-$world $world && mkdir -p wit-$world $world
        case $world in
            p2) cp -r "$http/wit/deps" wit-$world/deps; w=bench:init/proxy ;;
            p3) cp -r "$http/src/p3/wit/deps" wit-$world/deps; w=bench:init/service ;;
        esac
        awk -v keep=$([ $world = p2 ] && echo proxy || echo service) '
            /^world / { skip = ($2 != keep) } !skip' "$here/init.wit" > wit-$world/world.wit
        # The plain service's answer (plain.py), the start-up, and the handler using both.
        cp "$here/$world-init.py" $world/app.py && cp "$here/startup.py" $world/
        cp "$here/$world.py" $world/plain.py
        (cd $world && "$venv/bin/componentize-py" -q -d ../wit-$world -w $w componentize app -o ../$world.wasm)
    fi
    [ -f $world-snapshot.wasm ] || "$wasmpool" wizer $world.wasm $world-snapshot.wasm
done
idle_only=1 wrk_options="--timeout 10s"
for wasm in p2 p2-snapshot p3 p3-snapshot; do
    for who in wasmpool wasmtime; do
        if [ $who = wasmpool ]; then cmd=("$wasmpool" -q serve --addr 127.0.0.1:8400 $wasm.wasm)
        else cmd=("$wasmtime" serve -Scli --addr 127.0.0.1:8400 $wasm.wasm); fi
        first_request "${cmd[@]}" >/dev/null # its compiled cache
        echo "== $wasm $who: first request, ms: $(for _ in 1 2 3; do first_request "${cmd[@]}"; done)"
        serve_and_load "${cmd[@]}"
    done
done
