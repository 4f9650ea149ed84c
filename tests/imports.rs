//! What services import beyond WASI: wasi:keyvalue on each of the three
//! stores (the same tests for each), wasi:config in both versions, wasi:logging.

use crate::common::imports::*;
use crate::common::redis::RedisServer;
use crate::common::service::{get, keyvalue_counter};
use crate::common::*;
use crate::serving::{serve, service_spec};
use std::collections::HashMap;
use std::sync::Arc;
use wasmpool::{
    ContainerId, KeyValueStore, LogLevel, LogStream, Outcome, Runtime, ServiceSpec, WasmConfig,
    WasmRuntime,
};

fn s(text: &str) -> String {
    text.to_string()
}

/// Runs `steps` as replica `replica` of `service` and returns its stdout lines.
fn run_steps(rt: &WasmRuntime, service: &str, replica: u32, steps: &[Step]) -> Vec<String> {
    run_spec(rt, service, replica, &ServiceSpec::default(), steps)
}

fn run_spec(
    rt: &WasmRuntime,
    service: &str,
    replica: u32,
    spec: &ServiceSpec,
    steps: &[Step],
) -> Vec<String> {
    let id = ContainerId::new(service, replica);
    rt.create_container_from_bytes(&id, spec, imports_program(steps))
        .expect("create");
    let ended = wait_bounded(&rt.start(&id).expect("start"));
    assert_eq!(ended, Outcome::Exited(0), "{:?}", rt.get_logs(&id));
    let lines = stdout_lines(rt, &id);
    rt.remove_container(&id).unwrap();
    lines
}

/// A runtime on `store`, with `tweak` on top.
fn on_store(
    store: KeyValueStore,
    tweak: impl FnOnce(&mut WasmConfig),
) -> (tempfile::TempDir, Arc<WasmRuntime>) {
    runtime_with(2, |config| {
        config.keyvalue = store;
        tweak(config);
    })
}

/// Each test runs on a fresh store of each kind.
enum Kind {
    Memory,
    Folder,
    Redis,
}

struct Fresh {
    store: KeyValueStore,
    _dir: tempfile::TempDir,
    _redis: Option<RedisServer>,
}

fn fresh(kind: Kind) -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let (store, redis) = match kind {
        Kind::Memory => (KeyValueStore::Memory, None),
        Kind::Folder => (KeyValueStore::Folder(dir.path().join("kv")), None),
        Kind::Redis => {
            let redis = RedisServer::start();
            (KeyValueStore::Redis(redis.url()), Some(redis))
        }
    };
    Fresh {
        store,
        _dir: dir,
        _redis: redis,
    }
}

fn shared_within_a_service(kind: Kind) {
    let fresh = fresh(kind);
    let (_cache, rt) = on_store(fresh.store.clone(), |_| {});
    let written = run_steps(
        &rt,
        "shop",
        1,
        &[
            Open(s("cart")),
            Set(s("a"), b"apple".to_vec()),
            Increment(s("n"), 2),
            Increment(s("n"), 3),
            Exists(s("a")),
            Exists(s("b")),
        ],
    );
    assert_eq!(written, ["open ok", "ok", "2", "5", "true", "false"]);
    // Another replica of the service, and another instance: the same bucket.
    let read = run_steps(
        &rt,
        "shop",
        2,
        &[
            Open(s("cart")),
            Get(s("a")),
            Get(s("n")),
            ListKeys,
            Delete(s("a")),
            Get(s("a")),
        ],
    );
    assert_eq!(read, ["open ok", "apple", "5", "a,n", "ok", "none"]);
    // Another bucket of the service is another namespace.
    let other_bucket = run_steps(&rt, "shop", 1, &[Open(s("orders")), Get(s("n"))]);
    assert_eq!(other_bucket, ["open ok", "none"]);
    // Another service never sees it.
    let other = run_steps(
        &rt,
        "intruder",
        1,
        &[Open(s("cart")), Get(s("n")), ListKeys],
    );
    assert_eq!(other, ["open ok", "none", ""]);
}

#[test]
fn a_bucket_is_shared_within_a_service_and_hidden_from_others_in_memory() {
    shared_within_a_service(Kind::Memory);
}

#[test]
fn a_bucket_is_shared_within_a_service_and_hidden_from_others_on_disk() {
    shared_within_a_service(Kind::Folder);
}

#[test]
fn a_bucket_is_shared_within_a_service_and_hidden_from_others_on_redis() {
    shared_within_a_service(Kind::Redis);
}

fn bounds_hold(kind: Kind) {
    let counts_bytes = !matches!(kind, Kind::Redis);
    let fresh = fresh(kind);
    let (_cache, rt) = on_store(fresh.store.clone(), |config| {
        config.keyvalue_max_key_bytes = 16;
        config.keyvalue_max_value_bytes = 1000;
        config.keyvalue_max_keys = 3;
        config.keyvalue_max_service_bytes = 4000;
    });
    let lines = run_steps(
        &rt,
        "greedy",
        1,
        &[
            Open(s("b")),
            Set("k".repeat(17), b"v".to_vec()),
            SetZeros(s("big"), 1001),
            // Far past the bound: refused by its length, never copied.
            SetZeros(s("huge"), 2 << 20),
            SetZeros(s("k1"), 1000),
            SetZeros(s("k2"), 1000),
            SetZeros(s("k3"), 1000),
            Set(s("k4"), b"v".to_vec()),
            // An existing key may be overwritten at the bound.
            Set(s("k1"), b"small".to_vec()),
            Open("b".repeat(17)),
        ],
    );
    assert_eq!(lines[0], "open ok");
    assert!(
        lines[1].starts_with("error: the key is 17 bytes"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("error: the value is 1001 bytes"),
        "{lines:?}"
    );
    assert!(
        lines[3].starts_with("error: the value is 2097152 bytes"),
        "{lines:?}"
    );
    assert_eq!(&lines[4..7], ["ok", "ok", "ok"]);
    assert!(
        lines[7].starts_with("error:") && lines[7].contains("keys"),
        "{lines:?}"
    );
    assert_eq!(lines[8], "ok");
    assert!(
        lines[9].starts_with("error: the key is 17 bytes"),
        "{lines:?}"
    );
    if counts_bytes {
        // k1 small, k2 and k3 ~1 KiB each: two more ~1 KiB values pass 4,000 bytes.
        let more = run_steps(
            &rt,
            "greedy",
            2,
            &[Open(s("c")), SetZeros(s("x"), 1000), SetZeros(s("y"), 1000)],
        );
        assert_eq!(more[1], "ok");
        assert!(
            more[2].contains("over the store's limit of 4000"),
            "{more:?}"
        );
    }
    // The neighbour is unharmed.
    let neighbour = run_steps(
        &rt,
        "neighbour",
        1,
        &[Open(s("b")), SetZeros(s("k1"), 1000), Get(s("k4"))],
    );
    assert_eq!(neighbour, ["open ok", "ok", "none"]);
}

#[test]
fn every_keyvalue_bound_holds_and_a_neighbour_goes_on_in_memory() {
    bounds_hold(Kind::Memory);
}

#[test]
fn every_keyvalue_bound_holds_and_a_neighbour_goes_on_on_disk() {
    bounds_hold(Kind::Folder);
}

#[test]
fn every_keyvalue_bound_holds_and_a_neighbour_goes_on_on_redis() {
    bounds_hold(Kind::Redis);
}

/// `requests` requests from 20 threads to each of `addresses` in turn; all answered 200.
fn hammer(addresses: &[std::net::SocketAddr], requests: usize) {
    let threads = 20;
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                for n in 0..requests / threads {
                    let address = addresses[(t + n) % addresses.len()];
                    let reply = get(address, "/");
                    assert_eq!(reply.status, 200, "{reply:?}");
                }
            });
        }
    });
}

fn increments_are_exact(kind: Kind) {
    let fresh = fresh(kind);
    let (_cache, rt) = on_store(fresh.store.clone(), |_| {});
    let (_, address) = serve(&rt, "counter", &service_spec(), &keyvalue_counter(true));
    hammer(&[address], 1000);
    let read = run_steps(&rt, "counter", 2, &[Open(s("counter")), Get(s("hits"))]);
    assert_eq!(read, ["open ok", "1000"]);
}

#[test]
fn a_thousand_concurrent_increments_add_exactly_a_thousand_in_memory() {
    increments_are_exact(Kind::Memory);
}

#[test]
fn a_thousand_concurrent_increments_add_exactly_a_thousand_on_disk() {
    increments_are_exact(Kind::Folder);
}

#[test]
fn a_thousand_concurrent_increments_add_exactly_a_thousand_on_redis() {
    increments_are_exact(Kind::Redis);
}

#[test]
fn two_runtimes_serve_one_service_on_one_redis() {
    let fresh = fresh(Kind::Redis);
    let (_a, first) = on_store(fresh.store.clone(), |_| {});
    let (_b, second) = on_store(fresh.store.clone(), |_| {});
    let (_, one) = serve(&first, "counter", &service_spec(), &keyvalue_counter(false));
    let (_, two) = serve(
        &second,
        "counter",
        &service_spec(),
        &keyvalue_counter(false),
    );
    hammer(&[one, two], 1000);
    for rt in [&first, &second] {
        let read = run_steps(rt, "counter", 9, &[Open(s("counter")), Get(s("hits"))]);
        assert_eq!(read, ["open ok", "1000"]);
    }
}

#[test]
fn redis_down_gives_the_guest_an_error_and_its_return_recovers() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let (_cache, rt) = on_store(KeyValueStore::Redis(redis.url()), |_| {});
    let before = run_steps(
        &rt,
        "svc",
        1,
        &[Open(s("b")), Set(s("k"), b"v".to_vec()), Get(s("k"))],
    );
    assert_eq!(before, ["open ok", "ok", "v"]);
    redis.stop();
    let down = run_steps(
        &rt,
        "svc",
        1,
        &[
            Open(s("b")),
            Get(s("k")),
            Set(s("k"), b"w".to_vec()),
            Print(s("still here")),
        ],
    );
    assert_eq!(down[0], "open ok");
    assert!(down[1].starts_with("error: redis:"), "{down:?}");
    assert!(down[2].starts_with("error: redis:"), "{down:?}");
    assert_eq!(down[3], "still here");
    // A guest that does not use the store runs as ever meanwhile.
    let (_, ended) = launch(
        &rt,
        "plain",
        &ServiceSpec::default(),
        &wasm(&exit_module(0)),
    );
    assert_eq!(wait_bounded(&ended), Outcome::Exited(0));
    let _back = RedisServer::start_on(port);
    let after = run_steps(
        &rt,
        "svc",
        1,
        &[Open(s("b")), Set(s("k"), b"again".to_vec()), Get(s("k"))],
    );
    assert_eq!(after, ["open ok", "ok", "again"]);
}

#[test]
fn the_folder_store_keeps_its_values_across_a_runtime_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::Folder(dir.path().to_path_buf());
    {
        let (_cache, rt) = on_store(store.clone(), |_| {});
        let lines = run_steps(
            &rt,
            "keeper",
            1,
            &[
                Open(s("b")),
                Set(s("k"), b"kept".to_vec()),
                Increment(s("n"), 7),
            ],
        );
        assert_eq!(lines, ["open ok", "ok", "7"]);
    }
    let (_cache, rt) = on_store(store, |_| {});
    let lines = run_steps(
        &rt,
        "keeper",
        1,
        &[Open(s("b")), Get(s("k")), Increment(s("n"), 1), ListKeys],
    );
    assert_eq!(lines, ["open ok", "kept", "8", "k,n"]);
}

#[test]
fn a_value_acknowledged_on_disk_survives_a_sigkilled_process() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("writer.wasm");
    std::fs::write(
        &program,
        imports_program(&[
            Open(s("b")),
            Set(s("k"), b"durable".to_vec()),
            Print(s("written")),
            Spin,
        ]),
    )
    .unwrap();
    let store = dir.path().join("kv");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wasmpool"))
        .arg("run")
        .arg("--keyvalue")
        .arg(&store)
        .arg(&program)
        .env("WASMPOOL_CACHE_DIR", dir.path().join("cache"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read on a thread of its own: a child that never writes fails the test
    // (within a bound) instead of hanging it.
    let stdout = child.stdout.take().unwrap();
    let (sent, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if sent.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    let mut said = Vec::new();
    while said.len() < 3 {
        match received.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(line) => said.push(line),
            Err(_) => break,
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(said, ["open ok", "ok", "written"]);
    let (_cache, rt) = on_store(KeyValueStore::Folder(store), |_| {});
    // The CLI names the service after the file.
    let lines = run_steps(&rt, "writer.wasm", 1, &[Open(s("b")), Get(s("k"))]);
    assert_eq!(lines, ["open ok", "durable"]);
}

#[test]
fn config_values_come_from_the_spec_in_both_interface_versions() {
    let (_cache, rt) = runtime(1);
    let spec = ServiceSpec {
        config: HashMap::from([
            (s("greeting"), s("hello")),
            (s("env-is-not-config"), s("no")),
        ]),
        env: HashMap::from([(s("GREETING"), s("from env"))]),
        ..Default::default()
    };
    let lines = run_spec(
        &rt,
        "configured",
        1,
        &spec,
        &[
            Config(s("greeting")),
            SpinConfig(s("greeting")),
            Config(s("GREETING")),
            SpinConfig(s("missing")),
        ],
    );
    assert_eq!(lines, ["hello", "hello", "none", "none"]);
}

#[test]
fn the_cli_passes_config_values() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("config.wasm");
    std::fs::write(
        &program,
        imports_program(&[Config(s("mode")), SpinConfig(s("empty"))]),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmpool"))
        .args(["run", "--config", "mode=fast", "--config", "empty="])
        .arg(&program)
        .env("WASMPOOL_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "fast\n\n");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_wasmpool"))
        .args(["run", "--config", "novalue"])
        .arg(&program)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("KEY=VALUE"));
}

#[test]
fn logged_lines_keep_their_level_within_the_log_bound() {
    let (_cache, rt) = runtime_with(1, |config| config.log_limit_bytes = 64 * 1024);
    let seen = Arc::new(parking_lot::Mutex::new(Vec::<u8>::new()));
    let sink = {
        let seen = seen.clone();
        wasmpool::OutputSink::new(move |stream, bytes| {
            if stream == LogStream::Stderr {
                seen.lock().extend_from_slice(bytes);
            }
        })
    };
    let spec = ServiceSpec {
        output: Some(sink),
        ..Default::default()
    };
    let huge = "x".repeat(100_000);
    let mut steps = vec![
        Log(2, s("checkout"), s("paid")),
        Log(5, s(""), s("on fire")),
        Log(4, s("big"), huge),
    ];
    steps.extend((0..200).map(|n| Log(0, s("spam"), format!("{n:0>400}"))));
    let id = ContainerId::new("logger", 1);
    rt.create_container_from_bytes(&id, &spec, imports_program(&steps))
        .unwrap();
    assert_eq!(wait_bounded(&rt.start(&id).unwrap()), Outcome::Exited(0));
    let logs = rt.get_logs(&id).unwrap();
    let logged: Vec<_> = logs.iter().filter(|e| e.level.is_some()).collect();
    let seen = String::from_utf8_lossy(&seen.lock()).into_owned();
    assert!(
        seen.starts_with("INFO checkout: paid\nCRITICAL on fire\nERROR big: xxx"),
        "{}",
        &seen[..100]
    );
    // The long line is clipped to a line's bound; the log keeps its byte bound.
    let big = seen.lines().nth(2).unwrap();
    assert!(big.len() <= wasmpool::MAX_LINE_BYTES + 20, "{}", big.len());
    let kept: usize = logs
        .iter()
        .map(|e| e.message.len() + wasmpool::LOG_LINE_OVERHEAD)
        .sum();
    assert!(kept <= 64 * 1024 + wasmpool::MAX_LINE_BYTES, "{kept}");
    // The oldest went first, and the log says so.
    assert!(
        logs.iter()
            .any(|e| e.stream == LogStream::Runtime && e.message.contains("dropped")),
        "{:?}",
        &logs[..2]
    );
    let last = logged.last().unwrap();
    assert_eq!(
        (last.level, last.stream),
        (Some(LogLevel::Trace), LogStream::Stderr)
    );
    assert_eq!(last.message, format!("spam: {:0>400}", 199));
}

#[test]
fn a_folder_store_that_cannot_be_opened_fails_the_runtime_clearly() {
    // At the runtime's creation, not at the first guest that uses it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"x").unwrap();
    let config = WasmConfig {
        cache_dir: dir.path().join("cache"),
        keyvalue: KeyValueStore::Folder(file),
        ..Default::default()
    };
    let error = WasmRuntime::new(config).err().expect("refused");
    assert!(error.to_string().contains("key-value folder"), "{error}");
}

/// A command that starts a TLS handshake (`wasi:tls@0.2.0-draft`) to
/// `example.com` over its own stdin and stdout, and prints to stderr how it
/// ended: the error's text and a failing exit (through the adapter, 1) if it
/// failed, 0 if it connected.
fn tls_client() -> Vec<u8> {
    let wit = r#"
        package local:tls;
        world guest {
            import wasi:tls/types@0.2.0-draft;
            import wasi:cli/stdin@0.2.0;
            import wasi:cli/stdout@0.2.0;
        }
        package wasi:io@0.2.0 {
            interface error { resource error { to-debug-string: func() -> string; } }
            interface poll { resource pollable { block: func(); } }
            interface streams {
                resource input-stream;
                resource output-stream;
            }
        }
        package wasi:cli@0.2.0 {
            interface stdin { use wasi:io/streams@0.2.0.{input-stream}; get-stdin: func() -> input-stream; }
            interface stdout { use wasi:io/streams@0.2.0.{output-stream}; get-stdout: func() -> output-stream; }
        }
        package wasi:tls@0.2.0-draft {
            interface types {
                use wasi:io/streams@0.2.0.{input-stream, output-stream};
                use wasi:io/poll@0.2.0.{pollable};
                use wasi:io/error@0.2.0.{error as io-error};
                resource client-handshake {
                    constructor(server-name: string, input: input-stream, output: output-stream);
                    finish: static func(this: client-handshake) -> future-client-streams;
                }
                resource client-connection;
                resource future-client-streams {
                    subscribe: func() -> pollable;
                    get: func() -> option<result<result<tuple<client-connection, input-stream, output-stream>, io-error>>>;
                }
            }
        }
    "#;
    let core = r#"(module
        (import "wasi:cli/stdin@0.2.0" "get-stdin" (func $stdin (result i32)))
        (import "wasi:cli/stdout@0.2.0" "get-stdout" (func $stdout (result i32)))
        (import "wasi:tls/types@0.2.0-draft" "[constructor]client-handshake" (func $handshake (param i32 i32 i32 i32) (result i32)))
        (import "wasi:tls/types@0.2.0-draft" "[static]client-handshake.finish" (func $finish (param i32) (result i32)))
        (import "wasi:tls/types@0.2.0-draft" "[method]future-client-streams.subscribe" (func $subscribe (param i32) (result i32)))
        (import "wasi:tls/types@0.2.0-draft" "[method]future-client-streams.get" (func $get (param i32 i32)))
        (import "wasi:io/poll@0.2.0" "[method]pollable.block" (func $block (param i32)))
        (import "wasi:io/error@0.2.0" "[method]error.to-debug-string" (func $describe (param i32 i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 16)
        (global $heap (mut i32) (i32.const 65536))
        (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
            (local $at i32)
            (local.set $at (i32.and (i32.add (global.get $heap) (i32.const 15)) (i32.const -16)))
            (global.set $heap (i32.add (local.get $at) (local.get 3)))
            (local.get $at))
        (data (i32.const 1024) "example.com")
        (func (export "_start") (local $future i32)
            (local.set $future (call $finish
                (call $handshake (i32.const 1024) (i32.const 11) (call $stdin) (call $stdout))))
            (call $block (call $subscribe (local.get $future)))
            (call $get (local.get $future) (i32.const 256))
            ;; option tag @256, outer result @260, inner result @264, payload @268
            (if (i32.eqz (i32.load8_u (i32.const 256))) (then (call $exit (i32.const 4))))
            (if (i32.load8_u (i32.const 260)) (then (call $exit (i32.const 4))))
            (if (i32.eqz (i32.load8_u (i32.const 264))) (then (call $exit (i32.const 0))))
            (call $describe (i32.load (i32.const 268)) (i32.const 512))
            (i32.store (i32.const 0) (i32.load (i32.const 512)))
            (i32.store (i32.const 4) (i32.load (i32.const 516)))
            (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
            (call $exit (i32.const 3))))"#;
    component_with_wit(wit, "guest", core)
}

#[test]
fn wasi_tls_links_and_handshakes_only_with_the_network() {
    let (_cache, rt) = runtime(1);
    let run = |name: &str, network: bool| {
        let stdout = Arc::new(parking_lot::Mutex::new(Vec::<u8>::new()));
        let sink = {
            let stdout = stdout.clone();
            wasmpool::OutputSink::new(move |stream, bytes| {
                if stream == LogStream::Stdout {
                    stdout.lock().extend_from_slice(bytes);
                }
            })
        };
        let spec = ServiceSpec {
            network,
            output: Some(sink),
            ..Default::default()
        };
        let (id, ended) = launch(&rt, name, &spec, &tls_client());
        let outcome = wait_bounded(&ended);
        let stderr: Vec<String> = rt
            .get_logs(&id)
            .unwrap()
            .into_iter()
            .filter(|e| e.stream == LogStream::Stderr)
            .map(|e| e.message)
            .collect();
        let sent = stdout.lock().clone();
        (outcome, stderr.join("\n"), sent)
    };
    let (outcome, stderr, sent) = run("no-network", false);
    assert_eq!(outcome, Outcome::Exited(1), "{stderr}");
    assert!(stderr.contains("not granted the network"), "{stderr}");
    assert!(sent.is_empty());
    // With the network, rustls really speaks: a ClientHello goes out on the
    // stream (a TLS handshake record), and the empty stdin ends it.
    let (outcome, stderr, sent) = run("network", true);
    assert_eq!(outcome, Outcome::Exited(1), "{stderr}");
    assert!(!stderr.contains("not granted"), "{stderr}");
    assert!(
        sent.len() > 5 && sent[0] == 0x16 && sent[1] == 0x03,
        "{sent:?}"
    );
}

/// Spin's `wasi:keyvalue@0.2.0-draft2` on the same buckets as wasmtime's draft.
fn spin_family_shares_the_buckets(kind: Kind) {
    let fresh = fresh(kind);
    let (_cache, rt) = on_store(fresh.store.clone(), |_| {});
    let lines = run_steps(
        &rt,
        "spin",
        1,
        &[
            Open2(s("default")),
            Set2(s("k"), b"v1".to_vec()),
            Get2(s("k")),
            Increment2(s("n"), 5),
            Increment2(s("n"), -2),
            Cas(s("k"), None, b"v2".to_vec()),
            // Another writer between the cas and its swap: the swap fails and
            // a fresh cas, holding the other writer's value, succeeds.
            Cas(s("k"), Some(b"theirs".to_vec()), b"mine".to_vec()),
            Get2(s("k")),
            ListKeys2,
            Open(s("default")),
            Get(s("k")),
            Get(s("n")),
        ],
    );
    assert_eq!(
        lines,
        [
            "open ok",
            "ok",
            "v1",
            "5",
            "3",
            "swapped",
            "ok",
            "cas-failed",
            "theirs",
            "swapped",
            "mine",
            "k,n",
            "open ok",
            "mine",
            "3"
        ]
    );
}

#[test]
fn spin_keyvalue_draft2_shares_the_buckets_in_memory() {
    spin_family_shares_the_buckets(Kind::Memory);
}

#[test]
fn spin_keyvalue_draft2_shares_the_buckets_on_disk() {
    spin_family_shares_the_buckets(Kind::Folder);
}

#[test]
fn spin_keyvalue_draft2_shares_the_buckets_on_redis() {
    spin_family_shares_the_buckets(Kind::Redis);
}
