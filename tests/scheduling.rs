//! Many guests per worker: a guest that waits holds no worker, and CPU-bound
//! guests share a worker one fuel slice at a time.

use crate::common::*;
use std::time::{Duration, Instant};
use wasmpool::{Outcome, Runtime, ServiceSpec, WasmSpec};

#[test]
fn a_short_guest_beside_a_spinner_on_one_worker_finishes_first() {
    let (_dir, rt) = runtime(1);
    let (spinner, spinning) = launch(&rt, "spinner", &ServiceSpec::default(), &wasm(READY_SPIN));
    until_ready(&rt, &spinner);
    for i in 0..20 {
        // Started from another thread, so no waiter runs it: the one worker must share.
        let (_, short) = launch(
            &rt,
            &format!("short-{i}"),
            &ServiceSpec::default(),
            &wasm(&exit_module(i)),
        );
        let waiter = std::thread::spawn(move || short.wait_timeout(NO_HANG));
        assert_eq!(waiter.join().unwrap(), Some(Outcome::Exited(i)));
    }
    assert_eq!(spinning.try_wait(), None, "the spinner still runs");
    rt.stop_container(&spinner, NO_HANG).unwrap();
}

#[test]
fn two_hundred_one_second_sleepers_share_two_workers() {
    let (_dir, rt) = runtime_with(2, |c| c.queue_limit = 1_000);
    let sleeper = wasm(&sleep_module(1_000_000_000));
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let id = wasmpool::ContainerId::new("sleeper", i);
            rt.create_container_from_bytes(&id, &ServiceSpec::default(), &sleeper)
                .unwrap();
            rt.start(&id).unwrap()
        })
        .collect();
    // One guest per worker at a time would take 100 s; parked guests hold no worker.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for handle in &handles {
        assert_eq!(handle.wait_deadline(deadline), Some(Outcome::Exited(0)));
    }
}

#[test]
fn a_parked_guest_is_stopped_and_meets_its_deadline() {
    let (_dir, rt) = runtime(1);
    let sleeper = wasm(&ready_sleep_module(3_600_000_000_000));
    let (stopped, handle) = launch(&rt, "parked", &ServiceSpec::default(), &sleeper);
    until_ready(&rt, &stopped);
    rt.stop_container(&stopped, NO_HANG).unwrap();
    assert_eq!(handle.try_wait(), Some(Outcome::Stopped));

    let deadline = ServiceSpec {
        wasm: Some(WasmSpec {
            max_execution_time: Some(Duration::from_millis(200)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (late, handle) = launch(&rt, "parked-late", &deadline, &sleeper);
    until_ready(&rt, &late);
    assert_eq!(
        wait_bounded(&handle),
        Outcome::DeadlineExceeded(Duration::from_millis(200))
    );
    // The worker was never held: a neighbour ran meanwhile and after.
    let (_, after) = launch(
        &rt,
        "after",
        &ServiceSpec::default(),
        &wasm(&exit_module(4)),
    );
    assert_eq!(wait_bounded(&after), Outcome::Exited(4));
}

#[test]
fn a_guest_waiting_on_a_socket_holds_no_worker() {
    use std::io::Read;
    // A loopback listener that accepts and never answers: the guest waits for bytes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_dir, rt) = runtime(1);
    let spec = ServiceSpec {
        network: true,
        ..Default::default()
    };
    let (reader, handle) = launch(&rt, "socket-reader", &spec, &socket_reader(port));
    // Accept on a thread, so a guest that never connects fails the test instead of hanging it.
    let (accepted, connection) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = accepted.send(listener.accept().map(|(conn, _)| conn));
    });
    let mut conn = match connection.recv_timeout(NO_HANG) {
        Ok(conn) => conn.unwrap(),
        Err(_) => panic!("the guest never connected: {:?}", handle.try_wait()),
    };
    until_ready(&rt, &reader);
    // The only worker is free while the guest waits for the peer.
    let (_, beside) = launch(
        &rt,
        "beside",
        &ServiceSpec::default(),
        &wasm(&exit_module(5)),
    );
    let waiter = std::thread::spawn(move || beside.wait_timeout(NO_HANG));
    assert_eq!(waiter.join().unwrap(), Some(Outcome::Exited(5)));
    assert_eq!(handle.try_wait(), None, "the reader still waits");
    // Closing the peer ends its wait: it exits by itself.
    let mut scratch = [0u8; 1];
    conn.set_nonblocking(true).unwrap();
    let _ = conn.read(&mut scratch);
    drop(conn);
    assert_eq!(wait_bounded(&handle), Outcome::Exited(0));
}

/// A command component that connects to 127.0.0.1:`port`, prints "ready",
/// blocks until the peer sends a byte or closes, then exits 0.
fn socket_reader(port: u16) -> Vec<u8> {
    let core = format!(
        r#"(module
        (import "wasi:sockets/instance-network@0.2.0" "instance-network" (func $net (result i32)))
        (import "wasi:sockets/tcp-create-socket@0.2.0" "create-tcp-socket" (func $create (param i32 i32)))
        (import "wasi:sockets/tcp@0.2.0" "[method]tcp-socket.start-connect"
            (func $start_connect (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32)))
        (import "wasi:sockets/tcp@0.2.0" "[method]tcp-socket.subscribe" (func $subscribe (param i32) (result i32)))
        (import "wasi:sockets/tcp@0.2.0" "[method]tcp-socket.finish-connect" (func $finish_connect (param i32 i32)))
        (import "wasi:io/poll@0.2.0" "[method]pollable.block" (func $block (param i32)))
        (import "wasi:io/streams@0.2.0" "[method]input-stream.blocking-read" (func $read (param i32 i64 i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 4)
        (data (i32.const 512) "ready\0a")
        {CABI_REALLOC}
        (func (export "_start") (local $net i32) (local $sock i32) (local $input i32)
            (local.set $net (call $net))
            (call $create (i32.const 0) (i32.const 256))
            (if (i32.load8_u (i32.const 256)) (then (call $exit (i32.const 10))))
            (local.set $sock (i32.load (i32.const 260)))
            ;; ipv4 127.0.0.1:{port}: the case, then 11 payload slots (the ipv6 case's width)
            (call $start_connect (local.get $sock) (local.get $net)
                (i32.const 0) (i32.const {port}) (i32.const 127) (i32.const 0) (i32.const 0) (i32.const 1)
                (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                (i32.const 256))
            (if (i32.load8_u (i32.const 256)) (then (call $exit (i32.const 11))))
            (block $connected (loop $wait
                (call $block (call $subscribe (local.get $sock)))
                (call $finish_connect (local.get $sock) (i32.const 256))
                (br_if $connected (i32.eqz (i32.load8_u (i32.const 256))))
                ;; would-block (8): keep waiting; anything else: give up
                (br_if $wait (i32.eq (i32.load8_u (i32.const 260)) (i32.const 8)))
                (call $exit (i32.const 12))))
            (local.set $input (i32.load (i32.const 260)))
            (i32.store (i32.const 0) (i32.const 512))
            (i32.store (i32.const 4) (i32.const 6))
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
            (call $read (local.get $input) (i64.const 1) (i32.const 256))
            (call $exit (i32.const 0))))"#
    );
    let wit = sockets_wit(
        "import wasi:sockets/instance-network@0.2.0;
         import wasi:sockets/tcp-create-socket@0.2.0;
         import wasi:sockets/tcp@0.2.0;
         import wasi:io/poll@0.2.0;
         import wasi:io/streams@0.2.0;",
    );
    component_with_wit(&wit, "guest", &core)
}

#[test]
fn cpu_time_of_interleaved_guests_is_each_ones_own() {
    let (_dir, rt) = runtime(1);
    let work = wasm(&count_module(200_000_000));
    let (a, first) = launch(&rt, "first", &ServiceSpec::default(), &work);
    let (b, second) = launch(&rt, "second", &ServiceSpec::default(), &work);
    // Neither handle is waited on by its starter: the one worker interleaves them.
    let waiters: Vec<_> = [first, second]
        .into_iter()
        .map(|h| std::thread::spawn(move || h.wait_timeout(Duration::from_secs(120))))
        .collect();
    for waiter in waiters {
        assert_eq!(waiter.join().unwrap(), Some(Outcome::Exited(0)));
    }
    let cpu_a = rt.get_container_stats(&a).unwrap().cpu_usage_usec as f64;
    let cpu_b = rt.get_container_stats(&b).unwrap().cpu_usage_usec as f64;
    let total = cpu_a + cpu_b;
    // Equal work: each close to half of the two. Charged over the worker's life,
    // the later one would show nearly all of it.
    for cpu in [cpu_a, cpu_b] {
        assert!(
            (0.25..=0.75).contains(&(cpu / total)),
            "cpu {cpu_a} µs and {cpu_b} µs"
        );
    }
}

#[test]
fn a_guest_blocked_on_stdin_holds_no_worker() {
    use std::process::{Command, Stdio};
    // The child's stdin is a pipe this test keeps open: its guest blocks reading it.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "scheduling::stdin_blocked_alone",
            "--test-threads=1",
            "--nocapture",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let held_open = child.stdin.take();
    let status = child.wait().unwrap();
    drop(held_open);
    assert!(
        status.success(),
        "scheduling::stdin_blocked_alone: {status}"
    );
}

#[test]
#[ignore = "run in a child process with a held-open stdin by a_guest_blocked_on_stdin_holds_no_worker"]
fn stdin_blocked_alone() {
    let (_dir, rt) = runtime(1);
    let spec = ServiceSpec {
        stdin: wasmpool::StdinSpec::Inherit,
        ..Default::default()
    };
    let (reader, handle) = launch(&rt, "stdin-reader", &spec, &wasm(&cat_module(true)));
    until_ready(&rt, &reader);
    // The only worker is free while the guest waits for input.
    let (_, beside) = launch(
        &rt,
        "beside",
        &ServiceSpec::default(),
        &wasm(&exit_module(6)),
    );
    let waiter = std::thread::spawn(move || beside.wait_timeout(NO_HANG));
    assert_eq!(waiter.join().unwrap(), Some(Outcome::Exited(6)));
    assert_eq!(handle.try_wait(), None, "the reader still waits for input");
    rt.stop_container(&reader, NO_HANG).unwrap();
    assert_eq!(handle.try_wait(), Some(Outcome::Stopped));
}

/// Polls `handle` without blocking (`try_wait` neither runs nor queues the
/// guest) until it ends, failing the test after [`NO_HANG`].
fn poll_until_ended(handle: &wasmpool::WaitHandle) -> Outcome {
    let deadline = Instant::now() + NO_HANG;
    loop {
        if let Some(outcome) = handle.try_wait() {
            return outcome;
        }
        assert!(Instant::now() < deadline, "a started guest never ran");
        std::thread::sleep(Duration::from_micros(50));
    }
}

#[test]
fn a_start_no_one_waits_for_runs_whether_the_pool_is_warm_or_cold() {
    // A start-then-wait leaves its guest to the waiter (no worker is woken);
    // a start no one waits for must still run: queued by the watching worker
    // while the pool is warm, or by a woken worker once it went cold (5 ms
    // without starts). The pauses straddle that edge.
    let (_dir, rt) = runtime(2);
    let spec = ServiceSpec::default();
    let (waited, alone) = (wasm(&exit_module(0)), wasm(&exit_module(3)));
    for i in 0..60u32 {
        let (_, handle) = launch(&rt, &format!("waited-{i}"), &spec, &waited);
        assert_eq!(handle.wait(), Outcome::Exited(0));
        std::thread::sleep(Duration::from_micros(u64::from(i) * 150));
        let (_, handle) = launch(&rt, &format!("alone-{i}"), &spec, &alone);
        assert_eq!(poll_until_ended(&handle), Outcome::Exited(3));
    }
    // Several starters at once, mixing the two kinds.
    let starters: Vec<_> = (0..4u32)
        .map(|t| {
            let (rt, waited, alone) = (rt.clone(), waited.clone(), alone.clone());
            std::thread::spawn(move || {
                for i in 0..150u32 {
                    let name = format!("mixed-{t}-{i}");
                    if i % 2 == 0 {
                        let (_, handle) = launch(&rt, &name, &ServiceSpec::default(), &waited);
                        assert_eq!(handle.wait(), Outcome::Exited(0));
                    } else {
                        let (_, handle) = launch(&rt, &name, &ServiceSpec::default(), &alone);
                        assert_eq!(poll_until_ended(&handle), Outcome::Exited(3));
                    }
                }
            })
        })
        .collect();
    for starter in starters {
        starter.join().unwrap();
    }
}

#[test]
fn a_start_left_for_its_waiter_is_stopped_at_once() {
    let (_dir, rt) = runtime(2);
    let spin = wasm(SPIN);
    let (first, _) = launch(&rt, "spin-first", &ServiceSpec::default(), &spin);
    until_running(&rt, &first);
    rt.stop_container(&first, NO_HANG).unwrap();
    for i in 0..30 {
        // Warm, compiled: each start is left for a waiter that never comes.
        let (_, warm) = launch(
            &rt,
            &format!("warm-{i}"),
            &ServiceSpec::default(),
            &wasm(&exit_module(0)),
        );
        assert_eq!(warm.wait(), Outcome::Exited(0));
        let (id, handle) = launch(&rt, &format!("spin-{i}"), &ServiceSpec::default(), &spin);
        rt.stop_container(&id, NO_HANG).unwrap();
        assert_eq!(handle.try_wait(), Some(Outcome::Stopped));
    }
}

#[test]
fn dropping_the_runtime_ends_starts_left_for_waiters() {
    let (_dir, rt) = runtime(2);
    let exit = wasm(&exit_module(0));
    let spin = wasm(SPIN);
    let (_, warm) = launch(&rt, "warm", &ServiceSpec::default(), &exit);
    assert_eq!(warm.wait(), Outcome::Exited(0));
    let (first, _) = launch(&rt, "spin-first", &ServiceSpec::default(), &spin);
    until_running(&rt, &first);
    let handles: Vec<_> = (0..50)
        .map(|i| {
            launch(
                &rt,
                &format!("left-{i}"),
                &ServiceSpec::default(),
                if i % 2 == 0 { &exit } else { &spin },
            )
            .1
        })
        .collect();
    let rt = std::sync::Arc::try_unwrap(rt)
        .ok()
        .expect("the only reference");
    drop(rt);
    for handle in handles {
        assert!(
            matches!(
                handle.try_wait(),
                Some(Outcome::Exited(0) | Outcome::Stopped)
            ),
            "{:?}",
            handle.try_wait()
        );
    }
}
