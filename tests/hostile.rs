//! Hostile guests: one test per attack of the README's Guarantees table. Each
//! asserts the host-side bound and that a well-behaved neighbour, started
//! alongside, completes normally.

use crate::common::*;
use std::sync::Arc;
use std::time::Duration;
use wasmpool::{
    ContainerId, ContainerState, Error, Outcome, Runtime, ServiceSpec, WasmConfig, WasmRuntime,
    WasmSpec,
};

/// A neighbour that prints one line and exits 0.
fn neighbour(rt: &WasmRuntime, name: &str) -> (ContainerId, wasmpool::WaitHandle) {
    let hello = wasm(&print_module(&[("neighbour ok", 1)], Some(0)));
    launch(rt, name, &ServiceSpec::default(), &hello)
}

fn assert_neighbour_ok(rt: &WasmRuntime, (id, handle): (ContainerId, wasmpool::WaitHandle)) {
    assert_eq!(wait_bounded(&handle), Outcome::Exited(0));
    assert_eq!(stdout_lines(rt, &id), ["neighbour ok"]);
}

fn limits(wasm: WasmSpec) -> ServiceSpec {
    ServiceSpec {
        wasm: Some(wasm),
        ..Default::default()
    }
}

/// `writes` calls of `fd_write`, each of 64 newlines: millions of empty lines.
fn newline_flood(writes: u32) -> String {
    let newlines = "\\0a".repeat(64);
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 1024) "{newlines}")
            (func (export "_start") (local $i i32)
                (i32.store (i32.const 0) (i32.const 1024))
                (i32.store (i32.const 4) (i32.const 64))
                (loop $l
                    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                    (local.set $i (i32.add (local.get $i) (i32.const 1)))
                    (br_if $l (i32.lt_u (local.get $i) (i32.const {writes}))))))"#
    )
}

#[test]
fn a_guest_writing_only_newlines_keeps_the_host_flat() {
    run_alone("hostile::newline_flood_alone");
}

#[test]
#[ignore = "run alone in a child process by a_guest_writing_only_newlines_keeps_the_host_flat"]
fn newline_flood_alone() {
    let limit = 1 << 20;
    let (_dir, rt) = runtime_with(1, |c| c.log_limit_bytes = limit);
    // Warm up: compile and run once, so the figures below count only the flood.
    let flood = wasm(&newline_flood(100_000));
    let (_, warm) = launch(
        &rt,
        "warm",
        &ServiceSpec::default(),
        &wasm(&newline_flood(10)),
    );
    assert_eq!(wait_bounded(&warm), Outcome::Exited(0));
    let before = rss_bytes();
    let (id, handle) = launch(&rt, "flood", &ServiceSpec::default(), &flood);
    let near = neighbour(&rt, "beside-flood");
    assert_eq!(wait_bounded(&handle), Outcome::Exited(0));
    assert_neighbour_ok(&rt, near);
    let grown = rss_bytes().saturating_sub(before);
    // 6.4 million empty lines: the old buffer, counting them as 0 bytes, held ~1 GB.
    assert!(
        grown < 64 << 20,
        "resident memory grew {grown} bytes for a {limit}-byte log"
    );
    let logs = rt.get_logs(&id).unwrap();
    let kept = logs.len() - 1;
    assert!(
        kept * wasmpool::LOG_LINE_OVERHEAD <= limit,
        "{kept} lines kept"
    );
    assert!(logs[0].message.contains("earlier log lines were dropped"));
    let stats = rt.get_container_stats(&id).unwrap();
    assert_eq!(stats.log_lines_dropped as usize + kept, 6_400_000);
}

/// Four memories (one page, then none); grows memories 1, 2 and 3 by 15 pages
/// (960 KiB) each, then a table by a million elements; exits with how many
/// grows succeeded.
const FOUR_MEMORIES: &str = r#"(module
    (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
    (memory $m0 (export "memory") 1)
    (memory $m1 0)
    (memory $m2 0)
    (memory $m3 0)
    (table $t 0 funcref)
    (func (export "_start") (local $ok i32)
        (if (i32.ne (memory.grow $m1 (i32.const 15)) (i32.const -1))
            (then (local.set $ok (i32.add (local.get $ok) (i32.const 1)))))
        (if (i32.ne (memory.grow $m2 (i32.const 15)) (i32.const -1))
            (then (local.set $ok (i32.add (local.get $ok) (i32.const 1)))))
        (if (i32.ne (memory.grow $m3 (i32.const 15)) (i32.const -1))
            (then (local.set $ok (i32.add (local.get $ok) (i32.const 1)))))
        (if (i32.ne (table.grow $t (ref.null func) (i32.const 1000000)) (i32.const -1))
            (then (local.set $ok (i32.add (local.get $ok) (i32.const 10)))))
        (call $exit (local.get $ok))))"#;

#[test]
fn the_memory_limit_is_one_budget_for_every_memory_and_table() {
    let (_dir, rt) = runtime(2);
    let capped = limits(WasmSpec {
        max_memory: Some("1Mi".into()),
        ..Default::default()
    });
    let (id, handle) = launch(&rt, "four-memories", &capped, &wasm(FOUR_MEMORIES));
    // Without a limit, every grow succeeds: the guest itself can tell.
    let (_, free) = launch(
        &rt,
        "unlimited",
        &ServiceSpec::default(),
        &wasm(FOUR_MEMORIES),
    );
    let near = neighbour(&rt, "beside-memories");
    assert_eq!(
        wait_bounded(&handle),
        Outcome::Exited(1),
        "only the first 960 KiB fit beside the first page"
    );
    assert_eq!(wait_bounded(&free), Outcome::Exited(13));
    assert_neighbour_ok(&rt, near);
    let stats = rt.get_container_stats(&id).unwrap();
    assert!(stats.memory_peak_bytes <= 1 << 20, "{stats:?}");
}

/// Opens `f.txt` under fd 3 until `path_open` fails, prints "ready", holds
/// every descriptor for `hold_nanos`, then exits with the failing errno.
fn descriptor_hog(hold_nanos: u64) -> String {
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (data (i32.const 512) "f.txt")
            (data (i32.const 600) "ready\0a")
            (func (export "_start") (local $errno i32) (local $n i32)
                (block $done (loop $l
                    (local.set $errno (call $open (i32.const 3) (i32.const 0) (i32.const 512) (i32.const 5)
                        (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 32)))
                    (br_if $done (local.get $errno))
                    (local.set $n (i32.add (local.get $n) (i32.const 1)))
                    (br_if $done (i32.ge_u (local.get $n) (i32.const 1000000)))
                    (br $l)))
                (i32.store (i32.const 0) (i32.const 600))
                (i32.store (i32.const 4) (i32.const 6))
                (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
                (i64.store (i32.const 64) (i64.const 0))
                (i32.store8 (i32.const 72) (i32.const 0))
                (i32.store (i32.const 80) (i32.const 1))
                (i64.store (i32.const 88) (i64.const {hold_nanos}))
                (i64.store (i32.const 96) (i64.const 0))
                (i32.store16 (i32.const 104) (i32.const 0))
                (drop (call $poll (i32.const 64) (i32.const 128) (i32.const 1) (i32.const 192)))
                (call $exit (local.get $errno))))"#
    )
}

#[test]
fn a_guest_opening_files_in_a_loop_gets_emfile_and_the_host_keeps_its_descriptors() {
    run_alone("hostile::descriptor_hog_alone");
}

#[test]
#[ignore = "run alone in a child process by a_guest_opening_files_in_a_loop_gets_emfile_and_the_host_keeps_its_descriptors"]
fn descriptor_hog_alone() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("f.txt"), "shared\n").unwrap();
    let cap = 64;
    let (_dir, rt) = runtime(2);
    // Warm up wasmtime-wasi's I/O threads and our own, which live on.
    let (_, warm) = launch(
        &rt,
        "warm",
        &mounted(data.path(), true),
        &wasm(&read_file_module("f.txt")),
    );
    assert_eq!(wait_bounded(&warm), Outcome::Exited(0));
    settle(|| false);
    let before = fds_now();
    let mut spec = mounted(data.path(), true);
    spec.wasm = Some(WasmSpec {
        max_open_resources: Some(cap),
        ..Default::default()
    });
    let (hog, held) = launch(&rt, "hog", &spec, &wasm(&descriptor_hog(60_000_000_000)));
    until_ready(&rt, &hog);
    let holding = fds_now() - before;
    assert!(
        (cap / 2..=cap).contains(&holding),
        "the hog holds {holding} descriptors under a cap of {cap}"
    );
    // The host and the neighbours keep working while it holds them.
    std::fs::File::open(data.path().join("f.txt")).expect("the host can still open files");
    let (reader, read) = launch(
        &rt,
        "reader",
        &mounted(data.path(), true),
        &wasm(&read_file_module("f.txt")),
    );
    assert_eq!(wait_bounded(&read), Outcome::Exited(0));
    assert_eq!(stdout_lines(&rt, &reader), ["shared"]);
    rt.stop_container(&hog, NO_HANG).unwrap();
    assert_eq!(held.try_wait(), Some(Outcome::Stopped));
    // Its descriptors close with its store; a few lazily created ones of the
    // runtime's own I/O machinery (an event fd) may stay, not the hog's dozens.
    settle(|| fds_now() <= before + 2);
    assert!(
        fds_now() <= before + 2,
        "the hog's descriptors were closed: {before} before, {} now",
        fds_now()
    );

    // Let it run to its end: it reports EMFILE (33), not a trap.
    let (_, ended) = launch(&rt, "hog-exit", &spec, &wasm(&descriptor_hog(0)));
    assert_eq!(wait_bounded(&ended), Outcome::Exited(33));
}

/// A command component that creates TCP sockets in a loop without closing
/// them: it exits 2 if creation ever fails, 0 after a million.
fn socket_hog() -> Vec<u8> {
    let core = r#"(module
        (import "wasi:sockets/tcp-create-socket@0.2.0" "create-tcp-socket" (func $create (param i32 i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (func (export "_start") (local $i i32)
            (loop $l
                (call $create (i32.const 0) (i32.const 256))
                (if (i32.load8_u (i32.const 256)) (then (call $exit (i32.const 2))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get $i) (i32.const 1000000))))
            (call $exit (i32.const 0))))"#;
    let wit = sockets_wit("import wasi:sockets/tcp-create-socket@0.2.0;");
    component_with_wit(&wit, "guest", core)
}

#[test]
fn a_component_piling_up_sockets_is_bounded_by_its_resource_cap() {
    let (_dir, rt) = runtime(2);
    let spec = ServiceSpec {
        network: true,
        wasm: Some(WasmSpec {
            max_open_resources: Some(64),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (_, hog) = launch(&rt, "socket-hog", &spec, &socket_hog());
    let near = neighbour(&rt, "beside-sockets");
    match wait_bounded(&hog) {
        Outcome::Trapped(message) => assert!(message.contains("resource limit"), "{message}"),
        Outcome::Exited(2) => {}
        other => panic!("a million sockets were not refused: {other:?}"),
    }
    assert_neighbour_ok(&rt, near);
}

#[test]
fn any_exit_status_up_to_255_passes_through() {
    let (_dir, rt) = runtime(2);
    for code in [0, 1, 125, 126, 200, 255] {
        let (id, handle) = launch(
            &rt,
            &format!("exit-{code}"),
            &ServiceSpec::default(),
            &wasm(&exit_module(code)),
        );
        assert_eq!(wait_bounded(&handle), Outcome::Exited(code));
        assert_eq!(rt.wait_container(&id).unwrap(), code);
        assert_eq!(
            rt.container_state(&id).unwrap(),
            ContainerState::Exited { code }
        );
    }
}

#[test]
fn stop_while_the_worker_compiles_ends_the_container_at_once() {
    let (_dir, rt) = runtime(1);
    let big = slow_to_compile();
    let id = id("compiling");
    rt.create_container_from_bytes(&id, &ServiceSpec::default(), &big)
        .unwrap();
    let handle = rt.start(&id).unwrap();
    // The worker is compiling (a few seconds for this module): stop must not wait for it.
    rt.stop_container(&id, Duration::from_millis(500))
        .expect("stop returns while the compile goes on");
    assert_eq!(handle.try_wait(), Some(Outcome::Stopped));
    // Remove is as prompt, and a new create of the same bytes runs once compiled.
    rt.remove_container(&id).unwrap();
    let (_, again) = launch(&rt, "compiled", &ServiceSpec::default(), &big);
    assert_eq!(wait_bounded(&again), Outcome::Exited(0));
}

#[test]
fn dropping_the_runtime_while_a_worker_compiles_is_bounded_by_the_stop_timeout() {
    let (dir, rt) = runtime_with(1, |c| c.stop_timeout = Duration::from_millis(100));
    let big = slow_to_compile();
    let id = id("compiling");
    rt.create_container_from_bytes(&id, &ServiceSpec::default(), &big)
        .unwrap();
    let handle = rt.start(&id).unwrap();
    // A timed wait hands the start to the worker (it never runs the guest
    // itself); the worker is compiling (seconds for this module) when it times out.
    assert_eq!(handle.wait_timeout(Duration::from_millis(300)), None);
    drop(
        Arc::try_unwrap(rt)
            .ok()
            .expect("the test holds the only reference"),
    );
    // The drop returned before the compile ended: the worker was left to
    // finish it alone, so no compiled artifact is saved yet.
    let saved = std::fs::read_dir(dir.path().join("compiled"))
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().path().extension() == Some("cwasm".as_ref()))
        .count();
    assert_eq!(saved, 0, "the drop waited for the compile");
    assert_eq!(handle.try_wait(), Some(Outcome::Stopped));
}

#[test]
fn a_stopped_queued_container_gives_its_queue_place_back() {
    let (_dir, rt) = runtime_with(1, |c| c.queue_limit = 2);
    let (hog, hog_handle) = launch(&rt, "hog", &ServiceSpec::default(), &wasm(READY_SPIN));
    until_ready(&rt, &hog);
    let sleeper = wasm(&ready_sleep_module(60_000_000_000));
    let (queued, _) = launch(&rt, "queued", &ServiceSpec::default(), &sleeper);
    let third = id("third");
    rt.create_container_from_bytes(&third, &ServiceSpec::default(), &sleeper)
        .unwrap();
    assert!(matches!(
        rt.start_container(&third),
        Err(Error::QueueFull { limit: 2, .. })
    ));
    rt.stop_container(&queued, NO_HANG).unwrap();
    // Its place is free at once, whatever is still in the run queue.
    rt.start_container(&third)
        .expect("the stopped container's place was given back");
    let fourth = id("fourth");
    rt.create_container_from_bytes(&fourth, &ServiceSpec::default(), &sleeper)
        .unwrap();
    assert!(matches!(
        rt.start_container(&fourth),
        Err(Error::QueueFull { .. })
    ));
    rt.remove_container(&third).unwrap();
    rt.start_container(&fourth)
        .expect("a removed container gives its place back too");
    rt.stop_container(&hog, NO_HANG).unwrap();
    assert_eq!(hog_handle.try_wait(), Some(Outcome::Stopped));
}

#[test]
fn absurd_settings_are_refused_by_name_and_nothing_is_preallocated() {
    let refused = |config: WasmConfig, field: &str| match WasmRuntime::new(config) {
        Err(Error::InvalidSpec { field: f, .. }) => assert_eq!(f, field),
        Err(other) => panic!("expected InvalidSpec for {field}, got {other}"),
        Ok(_) => panic!("{field} was accepted"),
    };
    let dir = tempfile::tempdir().unwrap();
    let base = || WasmConfig {
        cache_dir: dir.path().into(),
        workers: 1,
        ..Default::default()
    };
    refused(
        WasmConfig {
            workers: usize::MAX,
            ..base()
        },
        "workers",
    );
    refused(
        WasmConfig {
            workers: 0,
            ..base()
        },
        "workers",
    );
    refused(
        WasmConfig {
            queue_limit: 0,
            ..base()
        },
        "queue_limit",
    );
    refused(
        WasmConfig {
            fuel_slice: 0,
            ..base()
        },
        "fuel_slice",
    );
    // An unbounded queue is a setting, not an allocation.
    let rt = WasmRuntime::new(WasmConfig {
        queue_limit: usize::MAX,
        ..base()
    })
    .expect("queue_limit usize::MAX is honoured without preallocating");
    let (_, handle) = launch(
        &rt,
        "unbounded",
        &ServiceSpec::default(),
        &wasm(&exit_module(3)),
    );
    assert_eq!(wait_bounded(&handle), Outcome::Exited(3));
    // Unbounded waits are settings too: dropping such a runtime with a guest
    // still running stops it without overflowing a deadline.
    let patient = WasmRuntime::new(WasmConfig {
        stop_timeout: Duration::MAX,
        max_execution_time: Duration::MAX,
        ..base()
    })
    .expect("unbounded timeouts are accepted");
    let (spinner, spinning) = launch(
        &patient,
        "patient",
        &ServiceSpec::default(),
        &wasm(READY_SPIN),
    );
    until_ready(&patient, &spinner);
    drop(patient);
    assert_eq!(spinning.try_wait(), Some(Outcome::Stopped));
    // Per spec, too.
    let bad = limits(WasmSpec {
        max_open_resources: Some(1),
        ..Default::default()
    });
    assert!(matches!(
        rt.create_container_from_bytes(&id("few"), &bad, wasm(&exit_module(0))),
        Err(Error::InvalidSpec {
            field: "wasm.max_open_resources",
            ..
        })
    ));
}

#[test]
fn racing_removes_never_forget_a_running_container() {
    let (_dir, rt) = runtime(2);
    let spin = wasm(READY_SPIN);
    let id = id("raced");
    for round in 0..40 {
        rt.create_container_from_bytes(&id, &ServiceSpec::default(), &spin)
            .unwrap();
        let first = rt.start(&id).unwrap();
        let racer = {
            let (rt, id) = (Arc::clone(&rt), id.clone());
            std::thread::spawn(move || rt.remove_container(&id))
        };
        // Remove, then re-create under the same id while the racer may still act.
        let _ = rt.remove_container(&id);
        let second = match rt.create_container_from_bytes(&id, &ServiceSpec::default(), &spin) {
            Ok(()) => Some(rt.start(&id).unwrap()),
            Err(Error::AlreadyExists(_)) => None, // the racer has not removed it yet
            Err(other) => panic!("round {round}: {other}"),
        };
        let _ = racer.join().unwrap();
        assert_eq!(wait_bounded(&first), Outcome::Stopped, "round {round}");
        let registered = rt.container_ids().contains(&id);
        if let Some(second) = second {
            // Either the new container is registered and running, or it was stopped
            // before it was removed: never unregistered while it runs.
            assert_eq!(
                registered,
                second.try_wait().is_none(),
                "round {round}: registered {registered}, outcome {:?}",
                second.try_wait()
            );
        }
        if registered {
            rt.remove_container(&id).unwrap();
        }
    }
}

/// Writes the hostile guests above as seeds of the fuzz target `run`
/// (`fuzz/seeds/run`); run with `cargo test --release -- --ignored hostile::write_fuzz_seeds`.
#[test]
#[ignore = "a tool: refreshes fuzz/seeds/run from these fixtures"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/run");
    std::fs::create_dir_all(&dir).unwrap();
    let seeds = [
        ("newline-flood.wat", newline_flood(1_000)),
        ("four-memories.wat", FOUR_MEMORIES.to_string()),
        ("descriptor-hog.wat", descriptor_hog(0)),
        ("exit-200.wat", exit_module(200)),
        ("ready-spin.wat", READY_SPIN.to_string()),
        ("sleeper.wat", ready_sleep_module(1_000_000)),
    ];
    for (name, text) in seeds {
        std::fs::write(dir.join(name), text).unwrap();
    }
}
