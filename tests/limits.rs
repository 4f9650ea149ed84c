//! Fuel and memory limits, stats, admission.

use crate::common::*;
use std::time::Duration;
use wasmpool::{ContainerState, Error, Outcome, Runtime, ServiceSpec, WasmSpec};

fn limited(fuel: Option<u64>, memory: Option<&str>, trap: bool) -> ServiceSpec {
    ServiceSpec {
        wasm: Some(WasmSpec {
            max_fuel: fuel,
            max_memory: memory.map(str::to_string),
            trap_on_grow_failure: trap,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_guest_past_its_fuel_budget_ends_out_of_fuel() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(
        &rt,
        "fuel-out",
        &limited(Some(10_000), None, false),
        &wasm(&count_module(1_000_000)),
    );
    assert_eq!(wait_bounded(&handle), Outcome::OutOfFuel { budget: 10_000 });
    assert_eq!(rt.wait_container(&id).unwrap(), 152);
    assert_eq!(rt.get_container_stats(&id).unwrap().fuel_consumed, 10_000);
}

#[test]
fn a_guest_within_its_fuel_budget_completes_and_reports_its_use() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(
        &rt,
        "fuel-ok",
        &limited(Some(1_000_000), None, false),
        &wasm(&count_module(1_000)),
    );
    assert_eq!(wait_bounded(&handle), Outcome::Exited(0));
    let fuel = rt.get_container_stats(&id).unwrap().fuel_consumed;
    assert!(fuel > 1_000 && fuel < 1_000_000, "fuel consumed: {fuel}");
}

#[test]
fn the_runtime_fuel_default_applies_to_specs_without_one() {
    let (_dir, rt) = runtime_with(1, |c| c.max_fuel = Some(5_000));
    let (_id, handle) = launch(
        &rt,
        "fuel-default",
        &ServiceSpec::default(),
        &wasm(READY_SPIN),
    );
    assert_eq!(wait_bounded(&handle), Outcome::OutOfFuel { budget: 5_000 });
}

#[test]
fn memory_growth_past_the_limit_is_refused() {
    let (_dir, rt) = runtime(1);
    // 1 page + 1 page fits in 2 pages; 1 + 2 does not.
    let (fits, fits_handle) = launch(
        &rt,
        "grow-fits",
        &limited(None, Some("128Ki"), false),
        &wasm(&grow_module(1, 1)),
    );
    let (over, over_handle) = launch(
        &rt,
        "grow-over",
        &limited(None, Some("128Ki"), false),
        &wasm(&grow_module(1, 2)),
    );
    assert_eq!(wait_bounded(&fits_handle), Outcome::Exited(0));
    assert_eq!(
        wait_bounded(&over_handle),
        Outcome::Exited(1),
        "memory.grow returned -1"
    );
    let stats = rt.get_container_stats(&fits).unwrap();
    assert_eq!((stats.memory_bytes, stats.memory_limit), (131_072, 131_072));
    assert_eq!(
        rt.get_container_stats(&over).unwrap().memory_peak_bytes,
        65_536
    );
}

#[test]
fn memory_growth_past_the_limit_traps_when_asked() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(
        &rt,
        "grow-trap",
        &limited(None, Some("64Ki"), true),
        &wasm(&grow_module(1, 1)),
    );
    assert_eq!(
        wait_bounded(&handle),
        Outcome::MemoryLimit { limit: 65_536 }
    );
    assert_eq!(rt.wait_container(&id).unwrap(), 137);
}

#[test]
fn an_initial_memory_above_the_limit_fails_at_start_with_a_reason() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(
        &rt,
        "too-big",
        &limited(None, Some("1Mi"), false),
        &wasm(&grow_module(100, 0)),
    );
    let outcome = wait_bounded(&handle);
    assert!(
        matches!(&outcome, Outcome::Failed(reason) if reason.contains("memory")),
        "{outcome:?}"
    );
    assert!(matches!(rt.wait_container(&id), Err(Error::Failed { .. })));
}

#[test]
fn a_bad_memory_limit_is_refused_at_create_quoting_it() {
    let (_dir, rt) = runtime(1);
    let err = rt
        .create_container_from_bytes(
            &id("bad-mem"),
            &limited(None, Some("lots"), false),
            wasm(READY_SPIN),
        )
        .unwrap_err();
    assert!(err.to_string().contains("'lots'"), "{err}");
}

#[test]
fn stats_change_while_running_and_freeze_after_the_end() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(
        &rt,
        "stats-live",
        &ServiceSpec::default(),
        &wasm(READY_SPIN),
    );
    until_ready(&rt, &id);
    let first = rt.get_container_stats(&id).unwrap();
    // Wait for the guest to burn more fuel: handles do not time out here, they
    // only bound how long the test waits for a change it expects.
    let mut later = first.clone();
    for _ in 0..1000 {
        std::thread::sleep(Duration::from_millis(5));
        later = rt.get_container_stats(&id).unwrap();
        if later.fuel_consumed > first.fuel_consumed && later.cpu_usage_usec > first.cpu_usage_usec
        {
            break;
        }
    }
    assert!(
        later.fuel_consumed > first.fuel_consumed,
        "{first:?} -> {later:?}"
    );
    assert!(
        later.cpu_usage_usec > first.cpu_usage_usec,
        "{first:?} -> {later:?}"
    );
    rt.stop_container(&id, Duration::from_secs(5)).unwrap();
    assert_eq!(wait_bounded(&handle), Outcome::Stopped);
    let ended = rt.get_container_stats(&id).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(rt.get_container_stats(&id).unwrap(), ended);
    assert!(ended.fuel_consumed >= later.fuel_consumed);
}

#[test]
fn a_thousand_instances_on_two_workers_all_complete() {
    let (_dir, rt) = runtime_with(2, |c| c.queue_limit = 1_000);
    let bytes = wasm(&exit_module(3));
    let handles: Vec<_> = (0..1_000)
        .map(|i| launch(&rt, &format!("many-{i}"), &ServiceSpec::default(), &bytes).1)
        .collect();
    for handle in &handles {
        assert_eq!(wait_bounded(handle), Outcome::Exited(3));
    }
    for i in 0..1_000 {
        rt.remove_container(&id(&format!("many-{i}"))).unwrap();
    }
    assert!(rt.container_ids().is_empty());
}

#[test]
fn starts_beyond_the_queue_bound_are_refused() {
    // The bound counts every live container: the running hog and one more.
    let (_dir, rt) = runtime_with(1, |c| c.queue_limit = 2);
    let (busy, _) = launch(&rt, "hog", &ServiceSpec::default(), &wasm(READY_SPIN));
    until_ready(&rt, &busy);
    let spin = wasm(READY_SPIN);
    let mut refused = 0;
    for i in 0..5 {
        let id = id(&format!("overflow-{i}"));
        rt.create_container_from_bytes(&id, &ServiceSpec::default(), &spin)
            .unwrap();
        match rt.start_container(&id) {
            Ok(()) => {}
            Err(Error::QueueFull { limit: 2, .. }) => {
                refused += 1;
                // Refused starts leave the container created, and startable later.
                assert_eq!(rt.container_state(&id).unwrap(), ContainerState::Pending);
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(refused, 4);
    // Nothing hangs: stopping everything ends every started container.
    for cid in rt.container_ids() {
        rt.stop_container(&cid, Duration::from_secs(5)).unwrap();
    }
}

/// The outcome table of `Outcome`'s docs and the README: every end reads the
/// same through the handle, `container_state` and `wait_container`.
#[test]
fn every_end_reads_the_same_through_handle_state_and_wait() {
    use std::collections::HashMap;
    let (_dir, rt) = runtime(2);
    let with = |wasm_spec: WasmSpec| ServiceSpec {
        wasm: Some(wasm_spec),
        ..Default::default()
    };
    let cases: Vec<(&str, ServiceSpec, Vec<u8>, Option<i32>)> = vec![
        (
            "return",
            ServiceSpec::default(),
            wasm(r#"(module (memory (export "memory") 1) (func (export "_start")))"#),
            Some(0),
        ),
        (
            "proc-exit",
            ServiceSpec::default(),
            wasm(&exit_module(9)),
            Some(9),
        ),
        (
            "unreachable",
            ServiceSpec::default(),
            wasm(UNREACHABLE),
            Some(134),
        ),
        (
            "out-of-bounds",
            ServiceSpec::default(),
            wasm(
                r#"(module (memory (export "memory") 1) (func (export "_start") (drop (i32.load (i32.const 70000)))))"#,
            ),
            Some(134),
        ),
        (
            "stack-overflow",
            ServiceSpec::default(),
            wasm(r#"(module (memory (export "memory") 1) (func $f (export "_start") (call $f)))"#),
            Some(134),
        ),
        (
            "fuel",
            with(WasmSpec {
                max_fuel: Some(1_000),
                ..Default::default()
            }),
            wasm(READY_SPIN),
            Some(152),
        ),
        (
            "memory",
            with(WasmSpec {
                max_memory: Some("64Ki".into()),
                trap_on_grow_failure: true,
                ..Default::default()
            }),
            wasm(&grow_module(1, 1)),
            Some(137),
        ),
        (
            "deadline",
            with(WasmSpec {
                max_execution_time: Some(Duration::from_millis(20)),
                ..Default::default()
            }),
            wasm(READY_SPIN),
            Some(124),
        ),
        (
            "invalid",
            ServiceSpec::default(),
            b"\0asm\x01\0\0\0\x01\xff".to_vec(),
            None,
        ),
        (
            "no-entry",
            ServiceSpec::default(),
            wasm(r#"(module (memory (export "memory") 1))"#),
            None,
        ),
    ];
    let mut reasons = HashMap::new();
    for (name, spec, bytes, code) in cases {
        let (id, handle) = launch(&rt, name, &spec, &bytes);
        let outcome = wait_bounded(&handle);
        assert_eq!(rt.container_state(&id).unwrap(), outcome.state(), "{name}");
        match (code, rt.wait_container(&id)) {
            (Some(expected), Ok(got)) => assert_eq!(
                (got, outcome.exit_code()),
                (expected, expected),
                "{name}: {outcome:?}"
            ),
            (None, Err(Error::Failed { reason, .. })) => {
                assert_eq!(reason, outcome.to_string(), "{name}")
            }
            (expected, got) => panic!("{name}: expected {expected:?}, got {got:?} ({outcome:?})"),
        }
        reasons.insert(name, outcome.to_string());
    }
    assert!(
        reasons["out-of-bounds"].contains("out of bounds"),
        "{}",
        reasons["out-of-bounds"]
    );
    assert!(
        reasons["stack-overflow"].contains("call stack exhausted"),
        "{}",
        reasons["stack-overflow"]
    );
    assert!(
        reasons["no-entry"].contains("_start"),
        "{}",
        reasons["no-entry"]
    );
    // The stopped row: a spinning guest, stopped.
    let (id, handle) = launch(&rt, "stopped", &ServiceSpec::default(), &wasm(READY_SPIN));
    rt.stop_container(&id, Duration::from_secs(5)).unwrap();
    assert_eq!(wait_bounded(&handle), Outcome::Stopped);
    assert_eq!(rt.wait_container(&id).unwrap(), 137);
}
