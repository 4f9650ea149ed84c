# Shared by the service benches (sourced, not run): a server on
# 127.0.0.1:8400 started, timed to its first answer, and loaded with wrk.
# Each script sets `duration` (wrk's -d) before it loads.

# The WIT wasmtime 48 serves (wasmtime-wasi-http's own, from cargo's
# registry): its folder. $1: the crate's Cargo.toml.
wasi_http_wit() {
    cargo fetch --manifest-path "$1" --quiet
    ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/wasmtime-wasi-http-48.0.8 | head -1
}

# Four host loops, spinning until `stop_all` kills them.
busy() { for _ in 1 2 3 4; do (while :; do :; done) & done; }

# Waits until the server answers a request.
wait_up() { until curl -sf -o /dev/null http://127.0.0.1:8400/; do sleep 0.001; done; }

# Starts `$@`, prints the ms from its start to its first 200 and a space, stops it.
first_request() {
    local start pid
    start=$(date +%s%N)
    "$@" >/dev/null 2>&1 &
    pid=$!
    wait_up
    echo -n "$(( ($(date +%s%N) - start) / 1000000 )) "
    kill $pid; wait $pid 2>/dev/null || true
}

# One wrk row (64 connections, `$duration`; `$@`: more wrk options): its
# requests/s, p50, p99 and any errors.
load() {
    wrk -t2 -c64 -d"$duration" --latency "$@" http://127.0.0.1:8400/ \
        | grep -E "Requests/sec|99%|50%|Non-2xx|errors"
}

# Starts the server `$@` (its pid in `server`) and warms it: 2 s of wrk.
start_warm() {
    "$@" >/dev/null 2>&1 &
    server=$!
    wait_up
    wrk -t2 -c64 -d2s ${wrk_options:-} http://127.0.0.1:8400/ >/dev/null
}

# Stops the server and what else the script runs in the background (busy
# loops, spinning requests).
stop_all() {
    kill $(jobs -p | grep -v "^$server$") 2>/dev/null || true
    kill $server; wait 2>/dev/null || true
}

# Serves with `$@` and loads it after a 2 s warm-up: idle, then, unless
# `idle_only` is set, beside 4 busy loops; `wrk_options` go to every wrk.
serve_and_load() {
    start_warm "$@"
    echo "-- idle"; load ${wrk_options:-}
    if [ -z "${idle_only:-}" ]; then
        busy; sleep 0.5
        echo "-- beside 4 busy loops"; load ${wrk_options:-}
    fi
    stop_all
}

# Four requests to `/spin` (a handler that never returns), each sent again
# as soon as the server's deadline ends it, until `stop_all` kills them.
spinners() {
    for _ in 1 2 3 4; do
        (while :; do curl -s -o /dev/null --max-time 30 http://127.0.0.1:8400/spin; done) &
    done
}

# Serves with `$@` (a command that gives requests a deadline: a spinning
# request holds a worker or an I/O thread until it ends) and loads it beside
# four spinning requests, after a 2 s warm-up.
serve_beside_spinners() {
    start_warm "$@"
    spinners; sleep 1
    echo "-- beside 4 spinning requests"; load ${wrk_options:-}
    stop_all
}
