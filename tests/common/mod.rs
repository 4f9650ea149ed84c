//! Fixtures shared by the test modules: WAT guests, component building, runtimes.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use wasmpool::{ContainerId, ServiceSpec, WasmConfig, WasmRuntime};

/// `_start` → `proc_exit(code)`.
pub fn exit_module(code: i32) -> String {
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start") (call $exit (i32.const {code}))))"#
    )
}

/// A guest that spins forever without a host call.
pub const SPIN: &str = r#"(module
    (memory (export "memory") 1)
    (func (export "_start") (loop $l (br $l))))"#;

/// A guest that runs `n` loop iterations, then returns.
pub fn count_module(n: u64) -> String {
    format!(
        r#"(module
            (memory (export "memory") 1)
            (func (export "_start") (local $i i64)
                (loop $l
                    (local.set $i (i64.add (local.get $i) (i64.const 1)))
                    (br_if $l (i64.lt_u (local.get $i) (i64.const {n}))))))"#
    )
}

/// A guest that sleeps `nanos` on the monotonic clock through `poll_oneoff`, then exits 0.
pub fn sleep_module(nanos: u64) -> String {
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "_start")
                (i64.store (i32.const 0) (i64.const 7))
                (i32.store8 (i32.const 8) (i32.const 0))
                (i32.store (i32.const 16) (i32.const 1))
                (i64.store (i32.const 24) (i64.const {nanos}))
                (i64.store (i32.const 32) (i64.const 0))
                (i32.store16 (i32.const 40) (i32.const 0))
                (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#
    )
}

/// The WAT of a `write(fd, text)` helper and a data segment, to splice into a module.
/// Memory layout: iovec at 0, scratch at 8, texts from 1024.
pub fn print_module(lines: &[(&str, u32)], exit: Option<i32>) -> String {
    let mut data = String::new();
    let mut body = String::new();
    let mut offset = 1024;
    for (text, fd) in lines {
        let escaped: String = text.bytes().map(|b| format!("\\{b:02x}")).collect();
        data.push_str(&format!("(data (i32.const {offset}) \"{escaped}\")\n"));
        body.push_str(&format!(
            "(call $print (i32.const {fd}) (i32.const {offset}) (i32.const {}))\n",
            text.len()
        ));
        offset += text.len() + 1;
    }
    if let Some(code) = exit {
        body.push_str(&format!("(call $exit (i32.const {code}))\n"));
    }
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            {data}
            (func $print (param $fd i32) (param $ptr i32) (param $len i32)
                (i32.store (i32.const 0) (local.get $ptr))
                (i32.store (i32.const 4) (local.get $len))
                (drop (call $write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
            (func (export "_start") {body}))"#
    )
}

/// A guest that prints its argv then its environment, one entry a line, then exits 0.
pub const PRINT_ARGS_AND_ENV: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))
    (memory (export "memory") 2)
    ;; Turns the NULs of buf[0..len] into newlines and writes it to stdout.
    (func $dump (param $buf i32) (param $len i32) (local $i i32)
        (block $done (loop $l
            (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
            (if (i32.eqz (i32.load8_u (i32.add (local.get $buf) (local.get $i))))
                (then (i32.store8 (i32.add (local.get $buf) (local.get $i)) (i32.const 10))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $l)))
        (i32.store (i32.const 0) (local.get $buf))
        (i32.store (i32.const 4) (local.get $len))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
    (func (export "_start")
        (drop (call $args_sizes (i32.const 16) (i32.const 20)))
        (drop (call $args_get (i32.const 4096) (i32.const 8192)))
        (call $dump (i32.const 8192) (i32.load (i32.const 20)))
        (drop (call $env_sizes (i32.const 16) (i32.const 20)))
        (drop (call $env_get (i32.const 4096) (i32.const 16384)))
        (call $dump (i32.const 16384) (i32.load (i32.const 20)))))"#;

/// The body of a loop that copies stdin to stdout until end of file
/// (iovec at 0, buffer at 1024, counts at 16; needs `$read` and `$write`).
pub const CAT_LOOP: &str = r#"(loop $l
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 4096))
        (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
        (if (i32.gt_u (i32.load (i32.const 16)) (i32.const 0))
            (then
                (i32.store (i32.const 4) (i32.load (i32.const 16)))
                (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
                (br $l))))"#;

/// A guest that copies stdin to stdout until end of file, then exits 0;
/// with `ready`, it first prints "ready".
pub fn cat_module(ready: bool) -> String {
    let ready = if ready {
        r#"(i32.store (i32.const 0) (i32.const 512))
           (i32.store (i32.const 4) (i32.const 6))
           (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))"#
    } else {
        ""
    };
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 512) "ready\0a")
            (func (export "_start") {ready} {CAT_LOOP}))"#
    )
}

/// A spec with `dir` mounted at `/data`.
pub fn mounted(dir: &std::path::Path, readonly: bool) -> ServiceSpec {
    ServiceSpec {
        storage: vec![wasmpool::StorageSpec::Bind {
            source: dir.into(),
            target: "/data".into(),
            readonly,
        }],
        ..Default::default()
    }
}

/// A guest that opens `path` under the first preopen (fd 3), reads it and prints it;
/// exits 0 if it could, else with the errno of the failing call.
pub fn read_file_module(path: &str) -> String {
    let len = path.len();
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (data (i32.const 512) "{path}")
            (func (export "_start") (local $errno i32)
                (local.set $errno (call $open (i32.const 3) (i32.const 1) (i32.const 512) (i32.const {len})
                    (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 32)))
                (if (local.get $errno) (then (call $exit (local.get $errno))))
                (i32.store (i32.const 0) (i32.const 1024))
                (i32.store (i32.const 4) (i32.const 4096))
                (local.set $errno (call $read (i32.load (i32.const 32)) (i32.const 0) (i32.const 1) (i32.const 16)))
                (if (local.get $errno) (then (call $exit (local.get $errno))))
                (i32.store (i32.const 4) (i32.load (i32.const 16)))
                (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
                (call $exit (i32.const 0))))"#
    )
}

/// A guest that creates and writes `path` under the first preopen (fd 3);
/// exits 0 if it could, else with the errno of the failing call.
pub fn write_file_module(path: &str) -> String {
    let len = path.len();
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (data (i32.const 512) "{path}")
            (data (i32.const 1024) "written")
            (func (export "_start") (local $errno i32)
                ;; oflags: CREAT|TRUNC (1|8); rights: FD_WRITE (1 << 6)
                (local.set $errno (call $open (i32.const 3) (i32.const 0) (i32.const 512) (i32.const {len})
                    (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 32)))
                (if (local.get $errno) (then (call $exit (local.get $errno))))
                (i32.store (i32.const 0) (i32.const 1024))
                (i32.store (i32.const 4) (i32.const 7))
                (local.set $errno (call $write (i32.load (i32.const 32)) (i32.const 0) (i32.const 1) (i32.const 16)))
                (if (local.get $errno) (then (call $exit (local.get $errno))))
                (call $exit (i32.const 0))))"#
    )
}

/// A guest that grows its memory by `pages` and exits 0 if that worked, 1 if refused.
pub fn grow_module(initial: u32, pages: u32) -> String {
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") {initial})
            (func (export "_start")
                (call $exit (i32.eq (memory.grow (i32.const {pages})) (i32.const -1)))))"#
    )
}

/// A guest that executes `unreachable`.
pub const UNREACHABLE: &str = r#"(module
    (memory (export "memory") 1)
    (func (export "_start") unreachable))"#;

pub fn wasm(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).expect("valid WAT")
}

/// Builds a WASIp2 command component from a WASIp1 core module in WAT with the preview1 command adapter.
pub fn component(wat: &str) -> Vec<u8> {
    componentize(&wasm(wat))
}

/// Wraps a core module (binary, possibly with embedded WIT metadata) into a
/// command component with the preview1 command adapter.
pub fn componentize(core: &[u8]) -> Vec<u8> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
    };
    wit_component::ComponentEncoder::default()
        .module(core)
        .expect("core module accepted")
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        )
        .expect("adapter accepted")
        .validate(true)
        .encode()
        .expect("component encodes")
}

/// A runtime on a fresh cache directory with `workers` workers.
pub fn runtime_with(
    workers: usize,
    tweak: impl FnOnce(&mut WasmConfig),
) -> (TempDir, Arc<WasmRuntime>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = WasmConfig {
        cache_dir: dir.path().to_path_buf(),
        workers,
        max_execution_time: Duration::from_secs(60),
        ..Default::default()
    };
    tweak(&mut config);
    let runtime = WasmRuntime::new(config).expect("runtime");
    (dir, Arc::new(runtime))
}

pub fn runtime(workers: usize) -> (TempDir, Arc<WasmRuntime>) {
    runtime_with(workers, |_| {})
}

pub fn id(name: &str) -> ContainerId {
    ContainerId::new(name, 1)
}

/// Creates and starts a container of `wasm` with `spec`.
pub fn launch(
    runtime: &WasmRuntime,
    name: &str,
    spec: &ServiceSpec,
    wasm: &[u8],
) -> (ContainerId, wasmpool::WaitHandle) {
    let id = id(name);
    runtime
        .create_container_from_bytes(&id, spec, wasm)
        .expect("create");
    let handle = runtime.start(&id).expect("start");
    (id, handle)
}

/// The messages of a container's stdout lines.
pub fn stdout_lines(runtime: &WasmRuntime, id: &ContainerId) -> Vec<String> {
    use wasmpool::{LogStream, Runtime};
    runtime
        .get_logs(id)
        .expect("logs")
        .into_iter()
        .filter(|e| e.stream == LogStream::Stdout)
        .map(|e| e.message)
        .collect()
}

/// A guest that writes `line\n` to stdout `n` times, then sleeps `sleep_nanos` (0: no sleep).
pub fn print_loop_module(line: &str, n: u32, sleep_nanos: u64) -> String {
    let len = line.len() + 1;
    let text = format!("{line}\\0a");
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 1024) "{text}")
            (func (export "_start") (local $i i32)
                (block $done (loop $l
                    (br_if $done (i32.ge_u (local.get $i) (i32.const {n})))
                    (i32.store (i32.const 0) (i32.const 1024))
                    (i32.store (i32.const 4) (i32.const {len}))
                    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                    (local.set $i (i32.add (local.get $i) (i32.const 1)))
                    (br $l)))
                (if (i64.ne (i64.const {sleep_nanos}) (i64.const 0)) (then
                    (i64.store (i32.const 64) (i64.const 0))
                    (i32.store8 (i32.const 72) (i32.const 0))
                    (i32.store (i32.const 80) (i32.const 1))
                    (i64.store (i32.const 88) (i64.const {sleep_nanos}))
                    (i64.store (i32.const 96) (i64.const 0))
                    (i32.store16 (i32.const 104) (i32.const 0))
                    (drop (call $poll (i32.const 64) (i32.const 128) (i32.const 1) (i32.const 192)))))))"#
    )
}

/// Blocks until the container is running.
pub fn until_running(runtime: &WasmRuntime, id: &ContainerId) {
    use wasmpool::{ContainerState, Runtime};
    let mut spins = 0u64;
    while runtime.container_state(id).expect("state") == ContainerState::Pending {
        spins += 1;
        assert!(spins < 50_000_000, "container {id} never started");
        std::thread::yield_now();
    }
}

/// A guest that prints "ready" on stdout, then spins forever without a host call.
pub const READY_SPIN: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (data (i32.const 512) "ready\0a")
    (func (export "_start")
        (i32.store (i32.const 0) (i32.const 512))
        (i32.store (i32.const 4) (i32.const 6))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
        (loop $l (br $l))))"#;

/// A guest that prints "ready", then sleeps `nanos` in `poll_oneoff`, then exits 0.
pub fn ready_sleep_module(nanos: u64) -> String {
    print_loop_module("ready", 1, nanos)
}

/// Blocks until the container printed a line "ready" (it has really run), or
/// fails the test after a generous 20 s instead of hanging.
pub fn until_ready(runtime: &WasmRuntime, id: &ContainerId) {
    let follower = runtime.follow_logs(id).expect("follow");
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let ready = follower.into_iter().any(|line| line.message == "ready");
        let _ = tx.send(ready);
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(true) => {}
        Ok(false) => panic!("container {id} ended without printing ready"),
        Err(_) => panic!("container {id} did not print ready within 20 s"),
    }
}

/// A generous upper bound on a wait that must not hang.
pub const NO_HANG: Duration = Duration::from_secs(20);

/// Waits for `handle` at most [`NO_HANG`]; a hang fails the test.
pub fn wait_bounded(handle: &wasmpool::WaitHandle) -> wasmpool::Outcome {
    handle
        .wait_timeout(NO_HANG)
        .expect("the container ended within the generous bound")
}

/// A core module in WAT that imports the interfaces of `world` in `wit`,
/// made into a command component with the preview1 adapter.
pub fn component_with_wit(wit: &str, world: &str, core: &str) -> Vec<u8> {
    componentize(&service::with_wit(wit, world, core))
}

/// Runs the ignored test `name` of this binary alone in a child process, so
/// neighbouring tests cannot disturb what it counts (threads, descriptors, RSS).
pub fn run_alone(name: &str) {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            name,
            "--test-threads=1",
            "--nocapture",
        ])
        .env("WASMPOOL_ALONE", "1")
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{name} failed in its own process: {status}"
    );
}

/// Open descriptors of this process.
pub fn fds_now() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Resident memory of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Waits up to 5 s for `done`, for work wasmtime-wasi finishes on its own
/// threads (closes on its blocking pool are slow on a loaded host).
pub fn settle(done: impl Fn() -> bool) {
    settle_within(Duration::from_secs(5), done)
}

/// Waits up to `limit` for `done`: a bound that turns a hang into a failure.
pub fn settle_within(limit: Duration, done: impl Fn() -> bool) {
    let until = std::time::Instant::now() + limit;
    while !done() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// 4,000 functions of arithmetic: a module that takes a while to compile.
pub fn slow_to_compile() -> Vec<u8> {
    let mut text = String::from("(module (memory (export \"memory\") 1)\n");
    for f in 0..4_000 {
        text.push_str(&format!(
            "(func $f{f} (param $x i32) (result i32) (local.get $x)"
        ));
        for k in 0..60 {
            text.push_str(&format!(
                " (i32.add (i32.const {k})) (i32.mul (i32.const 3)) (i32.xor (local.get $x))"
            ));
        }
        text.push_str(")\n");
    }
    text.push_str("(func (export \"_start\")))");
    wasm(&text)
}

/// Enough of wasi:io and wasi:sockets 0.2.0 for TCP guests, as nested
/// packages, under a world `guest` that imports `imports` (WIT import lines).
pub fn sockets_wit(imports: &str) -> String {
    format!(
        r#"
    package local:guest;
    world guest {{ {imports} }}
    {SOCKETS_DEPS}"#
    )
}

const SOCKETS_DEPS: &str = r#"    package wasi:io@0.2.0 {
        interface poll {
            resource pollable { block: func(); }
        }
        interface error { resource error; }
        interface streams {
            use error.{error};
            use poll.{pollable};
            variant stream-error { last-operation-failed(error), closed }
            resource input-stream {
                blocking-read: func(len: u64) -> result<list<u8>, stream-error>;
            }
            resource output-stream;
        }
    }
    package wasi:sockets@0.2.0 {
        interface network {
            resource network;
            enum error-code {
                unknown, access-denied, not-supported, invalid-argument, out-of-memory,
                timeout, concurrency-conflict, not-in-progress, would-block, invalid-state,
                new-socket-limit, address-not-bindable, address-in-use, remote-unreachable,
                connection-refused, connection-reset, connection-aborted, datagram-too-large,
                name-unresolvable, temporary-resolver-failure, permanent-resolver-failure,
            }
            enum ip-address-family { ipv4, ipv6 }
            type ipv4-address = tuple<u8, u8, u8, u8>;
            type ipv6-address = tuple<u16, u16, u16, u16, u16, u16, u16, u16>;
            record ipv4-socket-address { port: u16, address: ipv4-address }
            record ipv6-socket-address { port: u16, flow-info: u32, address: ipv6-address, scope-id: u32 }
            variant ip-socket-address { ipv4(ipv4-socket-address), ipv6(ipv6-socket-address) }
        }
        interface instance-network {
            use network.{network};
            instance-network: func() -> network;
        }
        interface tcp {
            use wasi:io/streams@0.2.0.{input-stream, output-stream};
            use wasi:io/poll@0.2.0.{pollable};
            use network.{network, error-code, ip-socket-address, ip-address-family};
            resource tcp-socket {
                start-connect: func(network: borrow<network>, remote-address: ip-socket-address) -> result<_, error-code>;
                finish-connect: func() -> result<tuple<input-stream, output-stream>, error-code>;
                subscribe: func() -> pollable;
            }
        }
        interface tcp-create-socket {
            use network.{error-code, ip-address-family};
            use tcp.{tcp-socket};
            create-tcp-socket: func(address-family: ip-address-family) -> result<tcp-socket, error-code>;
        }
    }
"#;

/// A core module's `cabi_realloc`: a bump allocator from 64 KiB up (memory
/// must have at least two pages), for guests whose imports return lists.
pub const CABI_REALLOC: &str = r#"
    (global $heap (mut i32) (i32.const 65536))
    (func (export "cabi_realloc") (param i32 i32) (param $align i32) (param $size i32) (result i32)
        (local $at i32)
        (local.set $at (i32.and
            (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
            (i32.sub (i32.const 0) (local.get $align))))
        (global.set $heap (i32.add (local.get $at) (local.get $size)))
        (local.get $at))
"#;
#[cfg(feature = "shim")]
pub mod containerd;
#[cfg(feature = "shim")]
pub mod cri;
pub mod hostile_registry;
pub mod imports;
pub mod redis;
pub mod registry;
pub mod service;
