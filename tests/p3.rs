//! WASIp3 (WASI 0.3, the component model's native async): commands exporting
//! `wasi:cli/run@0.3.0` keep every guarantee p1 and p2 have — stop wherever
//! the guest is, deadline, exact fuel, memory budget, no worker held while
//! waiting on the host. The guests are WAT modules with a stackful async
//! `run` export, made components by wit-component.

use crate::common::*;
use std::time::Duration;
use wasmpool::{ContainerState, Outcome, Runtime, ServiceSpec, WasmSpec};

/// A world exporting WASI 0.3's `run`, importing 0.3's `wait-for` and 0.2's stdout.
const P3_WIT: &str = r#"
    package local:p3;
    world command {
        import wasi:clocks/monotonic-clock@0.3.0;
        import wasi:cli/stdout@0.2.0;
        import wasi:cli/stdout@0.3.0;
        export wasi:cli/run@0.3.0;
    }
    package wasi:clocks@0.3.0 {
        interface monotonic-clock {
            type duration = u64;
            wait-for: async func(how-long: duration);
        }
    }
    package wasi:cli@0.3.0 {
        interface run { run: async func() -> result; }
        interface types { enum error-code { io, illegal-byte-sequence, pipe } }
        interface stdout {
            use types.{error-code};
            write-via-stream: func(data: stream<u8>) -> future<result<_, error-code>>;
        }
    }
    package wasi:cli@0.2.0 {
        interface stdout {
            use wasi:io/streams@0.2.0.{output-stream};
            get-stdout: func() -> output-stream;
        }
    }
    package wasi:io@0.2.0 {
        interface error { resource error; }
        interface streams {
            use error.{error};
            variant stream-error { last-operation-failed(error), closed }
            resource output-stream {
                blocking-write-and-flush: func(contents: list<u8>) -> result<_, stream-error>;
            }
        }
    }
"#;

/// A p3 command whose `run` prints "ready", then does `body`, then returns ok
/// (or err when `body` leaves 1 on the stack... it returns through `$done`).
fn p3_command(body: &str) -> Vec<u8> {
    let core = format!(
        r#"(module
            (import "[export]wasi:cli/run@0.3.0" "[task-return]run" (func $done (param i32)))
            (import "wasi:clocks/monotonic-clock@0.3.0" "wait-for" (func $wait_for (param i64)))
            (import "wasi:cli/stdout@0.2.0" "get-stdout" (func $stdout (result i32)))
            (import "wasi:io/streams@0.2.0" "[method]output-stream.blocking-write-and-flush" (func $write (param i32 i32 i32 i32)))
            (import "wasi:io/streams@0.2.0" "[resource-drop]output-stream" (func $drop (param i32)))
            (import "wasi:cli/stdout@0.3.0" "[stream-new-0]write-via-stream" (func $stream_new (result i64)))
            ;; `wait-for` lowered async: returns at once with a live subtask.
            (import "wasi:clocks/monotonic-clock@0.3.0" "[async-lower]wait-for" (func $wait_for_async (param i64) (result i32)))
            (memory (export "memory") 1)
            (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 32768))
            (data (i32.const 100) "ready\0a")
            (func $print_ready (local $out i32)
                (local.set $out (call $stdout))
                (call $write (local.get $out) (i32.const 100) (i32.const 6) (i32.const 16))
                (call $drop (local.get $out)))
            ;; Lifted async with a callback: the body runs in the first call,
            ;; which returns EXIT (0); the callback is never needed.
            (func (export "[async-lift]wasi:cli/run@0.3.0#run") (result i32) (local $i i64)
                (call $print_ready)
                {body}
                (call $done (i32.const 0))
                (i32.const 0))
            (func (export "[callback][async-lift]wasi:cli/run@0.3.0#run") (param i32 i32 i32) (result i32)
                (i32.const 0)))"#
    );
    crate::common::service::component_of(P3_WIT, "command", &core)
}

const SPIN: &str = "(loop $forever (br $forever))";
const SLEEP_A_MINUTE: &str = "(call $wait_for (i64.const 60000000000))";

#[test]
fn a_p3_command_runs_and_inspect_says_it_is_wasip3() {
    let guest = p3_command("(call $wait_for (i64.const 1000000))");
    let report = wasmpool::inspect(&guest);
    assert_eq!(report.kind, "WASIp3 component", "{report:?}");
    assert_eq!(report.entry.as_deref(), Some("wasi:cli/run@0.3.0#run"));
    assert_eq!(report.problem, None);
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(&rt, "p3", &ServiceSpec::default(), &guest);
    assert_eq!(wait_bounded(&handle), Outcome::Exited(0));
    assert_eq!(stdout_lines(&rt, &id), ["ready"]);
}

#[test]
fn a_spinning_p3_guest_is_stopped_and_its_worker_serves_again() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(&rt, "p3-spin", &ServiceSpec::default(), &p3_command(SPIN));
    until_ready(&rt, &id);
    rt.stop_container(&id, NO_HANG).unwrap();
    assert_eq!(handle.try_wait(), Some(Outcome::Stopped));
    let (_, next) = launch(
        &rt,
        "after",
        &ServiceSpec::default(),
        &wasm(&exit_module(3)),
    );
    assert_eq!(wait_bounded(&next), Outcome::Exited(3));
}

#[test]
fn a_p3_guest_awaiting_the_host_holds_no_worker_and_is_stopped_there() {
    let (_dir, rt) = runtime(1);
    let (id, sleeper) = launch(
        &rt,
        "p3-sleep",
        &ServiceSpec::default(),
        &p3_command(SLEEP_A_MINUTE),
    );
    until_ready(&rt, &id);
    // The one worker is free while the p3 guest awaits its timer.
    let (_, short) = launch(
        &rt,
        "short",
        &ServiceSpec::default(),
        &wasm(&exit_module(4)),
    );
    assert_eq!(short.wait_timeout(NO_HANG), Some(Outcome::Exited(4)));
    assert_eq!(rt.container_state(&id).unwrap(), ContainerState::Running);
    rt.stop_container(&id, NO_HANG).unwrap();
    assert_eq!(sleeper.try_wait(), Some(Outcome::Stopped));
}

#[test]
fn a_p3_guest_meets_its_deadline_awaiting_or_spinning() {
    let (_dir, rt) = runtime(1);
    for (name, body) in [
        ("p3-deadline-sleep", SLEEP_A_MINUTE),
        ("p3-deadline-spin", SPIN),
    ] {
        let spec = ServiceSpec {
            wasm: Some(WasmSpec {
                max_execution_time: Some(Duration::from_millis(300)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (_, handle) = launch(&rt, name, &spec, &p3_command(body));
        assert!(
            matches!(wait_bounded(&handle), Outcome::DeadlineExceeded(_)),
            "{name}"
        );
    }
}

#[test]
fn p3_fuel_is_exact_reproducible_and_bounded() {
    let (_dir, rt) = runtime(1);
    let counted = "(local.set $i (i64.const 100000)) (loop $l (local.set $i (i64.sub (local.get $i) (i64.const 1))) (br_if $l (i64.ne (local.get $i) (i64.const 0))))";
    let guest = p3_command(counted);
    let fuel: Vec<u64> = (0..2)
        .map(|n| {
            let (id, handle) = launch(
                &rt,
                &format!("p3-fuel-{n}"),
                &ServiceSpec::default(),
                &guest,
            );
            assert_eq!(wait_bounded(&handle), Outcome::Exited(0));
            rt.get_container_stats(&id).unwrap().fuel_consumed
        })
        .collect();
    assert!(fuel[0] > 100_000, "{fuel:?}");
    assert_eq!(
        fuel[0], fuel[1],
        "fuel of one guest is the same run after run"
    );
    let spec = ServiceSpec {
        wasm: Some(WasmSpec {
            max_fuel: Some(1_000_000),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (id, handle) = launch(&rt, "p3-out-of-fuel", &spec, &p3_command(SPIN));
    assert_eq!(
        wait_bounded(&handle),
        Outcome::OutOfFuel { budget: 1_000_000 }
    );
    let stats = rt.get_container_stats(&id).unwrap();
    assert_eq!(stats.fuel_consumed, 1_000_000);
    assert!(stats.cpu_usage_usec > 0);
}

#[test]
fn a_p3_guest_stays_within_its_memory_budget() {
    let (_dir, rt) = runtime(1);
    // Grows its memory by 64 pages (4 MiB) under a 1 MiB budget: refused, -1.
    let grow = "(if (i32.ne (memory.grow (i32.const 64)) (i32.const -1)) (then unreachable))";
    let spec = ServiceSpec {
        wasm: Some(WasmSpec {
            max_memory: Some("1Mi".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (id, handle) = launch(&rt, "p3-memory", &spec, &p3_command(grow));
    assert_eq!(
        wait_bounded(&handle),
        Outcome::Exited(0),
        "{:?}",
        rt.get_logs(&id)
    );
    assert!(rt.get_container_stats(&id).unwrap().memory_peak_bytes <= 1 << 20);
}

#[test]
fn p3_streams_count_against_the_resource_cap_and_a_neighbour_is_unharmed() {
    let (_dir, rt) = runtime(2);
    let spec = ServiceSpec {
        wasm: Some(WasmSpec {
            max_open_resources: Some(64),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Creates streams (a readable and a writable end each) and never drops them.
    let hoard = "(loop $more (drop (call $stream_new)) (br $more))";
    let (_, hoarder) = launch(&rt, "p3-hoard", &spec, &p3_command(hoard));
    let (_, neighbour) = launch(
        &rt,
        "beside",
        &ServiceSpec::default(),
        &wasm(&exit_module(5)),
    );
    let outcome = wait_bounded(&hoarder);
    assert!(
        matches!(&outcome, Outcome::Trapped(m) if m.contains("resource limit") && m.contains("64")),
        "{outcome:?}"
    );
    assert_eq!(wait_bounded(&neighbour), Outcome::Exited(5));
    // Under the default cap, a guest that holds a few streams is fine.
    let few = "(drop (call $stream_new)) (drop (call $stream_new))";
    let (_, fine) = launch(&rt, "p3-few", &ServiceSpec::default(), &p3_command(few));
    assert_eq!(wait_bounded(&fine), Outcome::Exited(0));
}

#[test]
fn a_p3_guest_with_several_subtasks_live_is_stopped_and_they_end_with_it() {
    let (_dir, rt) = runtime(1);
    // Three minute-long waits in flight as subtasks, then a spin.
    let body = "(drop (call $wait_for_async (i64.const 60000000000)))
                (drop (call $wait_for_async (i64.const 60000000000)))
                (drop (call $wait_for_async (i64.const 60000000000)))
                (loop $forever (br $forever))";
    let (id, handle) = launch(
        &rt,
        "p3-subtasks",
        &ServiceSpec::default(),
        &p3_command(body),
    );
    until_ready(&rt, &id);
    rt.stop_container(&id, NO_HANG).unwrap();
    assert_eq!(handle.try_wait(), Some(Outcome::Stopped));
    // The worker is free and nothing of the stopped guest holds it.
    let (_, next) = launch(
        &rt,
        "after-subtasks",
        &ServiceSpec::default(),
        &wasm(&exit_module(6)),
    );
    assert_eq!(wait_bounded(&next), Outcome::Exited(6));
}

#[test]
fn p3_subtasks_count_against_the_resource_cap() {
    let (_dir, rt) = runtime(1);
    let spec = ServiceSpec {
        wasm: Some(WasmSpec {
            max_open_resources: Some(64),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Starts minute-long waits, one subtask each, and never waits for them.
    let hoard = "(loop $more (drop (call $wait_for_async (i64.const 60000000000))) (br $more))";
    let (_, handle) = launch(&rt, "p3-subtask-hoard", &spec, &p3_command(hoard));
    let outcome = wait_bounded(&handle);
    assert!(
        matches!(&outcome, Outcome::Trapped(m) if m.contains("resource limit")),
        "{outcome:?}"
    );
}
