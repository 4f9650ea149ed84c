//! Stop and deadlines: a guest ends promptly wherever it is.

use crate::common::*;
use std::sync::Arc;
use std::time::Duration;
use wasmpool::{ContainerState, Outcome, Runtime, ServiceSpec, WasmSpec};

#[test]
fn a_spinning_guest_is_stopped_and_its_worker_serves_again() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(&rt, "spin", &ServiceSpec::default(), &wasm(READY_SPIN));
    until_ready(&rt, &id);
    rt.stop_container(&id, Duration::from_secs(5)).unwrap();
    assert_eq!(wait_bounded(&handle), Outcome::Stopped);
    assert_eq!(
        rt.container_state(&id).unwrap(),
        ContainerState::Failed {
            reason: "stopped".into()
        }
    );
    assert_eq!(rt.wait_container(&id).unwrap(), 137);
    let (_, next) = launch(
        &rt,
        "after-spin",
        &ServiceSpec::default(),
        &wasm(&exit_module(5)),
    );
    assert_eq!(wait_bounded(&next), Outcome::Exited(5));
}

#[test]
fn a_sleeping_guest_is_stopped_within_the_stop_timeout() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(
        &rt,
        "sleep",
        &ServiceSpec::default(),
        &wasm(&ready_sleep_module(3_600_000_000_000)),
    );
    until_ready(&rt, &id);
    assert_eq!(
        handle.wait_timeout(Duration::from_millis(50)),
        None,
        "a one-hour sleep is still sleeping"
    );
    // stop_container returns Ok only once the guest ended, within its timeout.
    rt.stop_container(&id, Duration::from_secs(5)).unwrap();
    assert_eq!(handle.try_wait(), Some(Outcome::Stopped));
    let (_, next) = launch(
        &rt,
        "after-sleep",
        &ServiceSpec::default(),
        &wasm(&exit_module(0)),
    );
    assert_eq!(wait_bounded(&next), Outcome::Exited(0));
}

#[test]
fn a_short_sleep_completes() {
    let (_dir, rt) = runtime(1);
    let (_id, handle) = launch(
        &rt,
        "nap",
        &ServiceSpec::default(),
        &wasm(&sleep_module(10_000_000)),
    );
    assert_eq!(wait_bounded(&handle), Outcome::Exited(0));
}

fn with_deadline(ms: u64) -> ServiceSpec {
    ServiceSpec {
        wasm: Some(WasmSpec {
            max_execution_time: Some(Duration::from_millis(ms)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_deadline_ends_a_spinning_and_a_sleeping_guest() {
    let (_dir, rt) = runtime(2);
    let (spin, spin_handle) = launch(&rt, "deadline-spin", &with_deadline(200), &wasm(READY_SPIN));
    let (sleep, sleep_handle) = launch(
        &rt,
        "deadline-sleep",
        &with_deadline(200),
        &wasm(&ready_sleep_module(3_600_000_000_000)),
    );
    let expected = Outcome::DeadlineExceeded(Duration::from_millis(200));
    assert_eq!(wait_bounded(&spin_handle), expected);
    assert_eq!(wait_bounded(&sleep_handle), expected);
    assert_eq!(rt.wait_container(&spin).unwrap(), 124);
    match rt.container_state(&sleep).unwrap() {
        ContainerState::Failed { reason } => assert!(reason.contains("deadline"), "{reason}"),
        other => panic!("expected a deadline failure, got {other:?}"),
    }
    // The deadline is real: the stats say the guest ran at least that long.
    assert!(rt.get_container_stats(&spin).unwrap().wall_time >= Duration::from_millis(200));
}

#[test]
fn the_runtime_default_deadline_applies_when_the_spec_has_none() {
    let (_dir, rt) = runtime_with(1, |c| c.max_execution_time = Duration::from_millis(100));
    let (_id, handle) = launch(
        &rt,
        "default-deadline",
        &ServiceSpec::default(),
        &wasm(READY_SPIN),
    );
    assert_eq!(
        wait_bounded(&handle),
        Outcome::DeadlineExceeded(Duration::from_millis(100))
    );
}

#[test]
fn stopping_a_queued_or_created_container_ends_it_without_running_it() {
    let (_dir, rt) = runtime(1);
    // The one worker compiles a large module for a while: whatever starts now waits.
    let (busy, busy_handle) = launch(&rt, "busy", &ServiceSpec::default(), &slow_to_compile());
    // Queued behind the compile.
    let (queued, queued_handle) = launch(
        &rt,
        "queued",
        &ServiceSpec::default(),
        &wasm(&print_module(&[("ran\n", 1)], None)),
    );
    assert_eq!(
        rt.container_state(&queued).unwrap(),
        ContainerState::Pending
    );
    rt.stop_container(&queued, Duration::from_secs(1)).unwrap();
    assert_eq!(queued_handle.try_wait(), Some(Outcome::Stopped));
    // Created, never started.
    let created = id("created");
    rt.create_container_from_bytes(&created, &ServiceSpec::default(), wasm(&exit_module(0)))
        .unwrap();
    rt.stop_container(&created, Duration::from_secs(1)).unwrap();
    assert_eq!(
        rt.wait_handle(&created).unwrap().try_wait(),
        Some(Outcome::Stopped)
    );
    assert!(matches!(
        rt.start_container(&created),
        Err(wasmpool::Error::WrongState {
            operation: "start",
            ..
        })
    ));
    rt.stop_container(&busy, Duration::from_secs(5)).unwrap();
    assert_eq!(wait_bounded(&busy_handle), Outcome::Stopped);
    // The queued guest never ran: its output never appeared.
    assert!(stdout_lines(&rt, &queued).is_empty());
}

#[test]
fn removing_a_running_guest_stops_it_and_frees_its_worker() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(
        &rt,
        "remove-spin",
        &ServiceSpec::default(),
        &wasm(READY_SPIN),
    );
    until_ready(&rt, &id);
    rt.remove_container(&id).unwrap();
    assert_eq!(
        wait_bounded(&handle),
        Outcome::Stopped,
        "a waiter on a removed container gets its end"
    );
    assert!(matches!(
        rt.container_state(&id),
        Err(wasmpool::Error::NotFound(_))
    ));
    let (_, next) = launch(
        &rt,
        "after-remove",
        &ServiceSpec::default(),
        &wasm(&exit_module(9)),
    );
    assert_eq!(wait_bounded(&next), Outcome::Exited(9));
}

#[test]
fn dropping_the_runtime_gives_every_waiter_an_outcome() {
    let (_dir, rt) = runtime(2);
    let mut handles = Vec::new();
    for i in 0..2 {
        let (id, handle) = launch(
            &rt,
            &format!("drop-spin-{i}"),
            &ServiceSpec::default(),
            &wasm(READY_SPIN),
        );
        until_ready(&rt, &id);
        handles.push(handle);
    }
    for i in 0..3 {
        let (_, handle) = launch(
            &rt,
            &format!("drop-queued-{i}"),
            &ServiceSpec::default(),
            &wasm(READY_SPIN),
        );
        handles.push(handle);
    }
    let created = id("drop-created");
    rt.create_container_from_bytes(&created, &ServiceSpec::default(), wasm(READY_SPIN))
        .unwrap();
    handles.push(rt.wait_handle(&created).unwrap());
    let waiter = {
        let handle = handles[0].clone();
        std::thread::spawn(move || wait_bounded(&handle))
    };
    drop(
        Arc::try_unwrap(rt)
            .ok()
            .expect("the test holds the only reference"),
    );
    for handle in &handles {
        assert_eq!(handle.try_wait(), Some(Outcome::Stopped));
    }
    assert_eq!(waiter.join().unwrap(), Outcome::Stopped);
}
