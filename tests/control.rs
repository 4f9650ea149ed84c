//! Stop, deadlines, fuel and memory limits.

use crate::common::*;
use std::time::Duration;
use wasmpool::{Outcome, Runtime, ServiceSpec};

#[test]
fn a_spinning_guest_is_stopped_and_its_worker_serves_again() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(&rt, "spin", &ServiceSpec::default(), &wasm(SPIN));
    while rt.container_state(&id).unwrap() != wasmpool::ContainerState::Running {
        std::thread::yield_now();
    }
    rt.stop_container(&id, Duration::from_secs(5)).unwrap();
    assert_eq!(handle.wait(), Outcome::Stopped);
    let (_, next) = launch(&rt, "after-spin", &ServiceSpec::default(), &wasm(&exit_module(5)));
    assert_eq!(next.wait(), Outcome::Exited(5));
}

#[test]
fn a_sleeping_guest_is_stopped() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(&rt, "sleep", &ServiceSpec::default(), &wasm(&sleep_module(3_600_000_000_000)));
    while rt.container_state(&id).unwrap() != wasmpool::ContainerState::Running {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(handle.try_wait(), None, "a one-hour sleep is still sleeping");
    rt.stop_container(&id, Duration::from_secs(5)).unwrap();
    assert_eq!(handle.wait(), Outcome::Stopped);
}

#[test]
fn a_short_sleep_completes() {
    let (_dir, rt) = runtime(1);
    let (_id, handle) = launch(&rt, "nap", &ServiceSpec::default(), &wasm(&sleep_module(10_000_000)));
    assert_eq!(handle.wait(), Outcome::Exited(0));
}
