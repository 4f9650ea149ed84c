//! Logs: live while the guest runs, bounded, and honest about what they dropped.

use crate::common::*;
use std::time::Duration;
use wasmpool::{LogStream, Outcome, Runtime, ServiceSpec};

#[test]
fn logs_are_visible_while_the_guest_runs() {
    let (_dir, rt) = runtime(1);
    let guest = print_loop_module("still going", 3, 3_600_000_000_000);
    let (id, handle) = launch(&rt, "live-logs", &ServiceSpec::default(), &wasm(&guest));
    let mut follower = rt.follow_logs(&id).unwrap();
    for _ in 0..3 {
        assert_eq!(follower.next().unwrap().message, "still going");
    }
    assert_eq!(handle.try_wait(), None, "the guest is still sleeping");
    assert_eq!(rt.container_logs(&id, 2).unwrap().len(), 2);
    rt.stop_container(&id, Duration::from_secs(5)).unwrap();
    assert_eq!(
        follower.next(),
        None,
        "the follower ends with the container"
    );
}

#[test]
fn a_guest_writing_past_the_bound_keeps_the_newest_lines_and_says_so() {
    // Room for exactly ten lines of ten bytes, each with its per-line cost.
    let line_cost = 10 + wasmpool::LOG_LINE_OVERHEAD;
    let (_dir, rt) = runtime_with(1, |c| c.log_limit_bytes = 10 * line_cost);
    let guest = print_loop_module("0123456789", 50, 0);
    let (id, handle) = launch(&rt, "flood", &ServiceSpec::default(), &wasm(&guest));
    assert_eq!(handle.wait(), Outcome::Exited(0));
    let logs = rt.get_logs(&id).unwrap();
    assert_eq!(logs[0].stream, LogStream::Runtime);
    assert!(
        logs[0]
            .message
            .contains("40 earlier log lines were dropped"),
        "{}",
        logs[0].message
    );
    assert_eq!(logs.len(), 11);
    assert!(logs[1..].iter().all(|e| e.message == "0123456789"));
    assert_eq!(rt.get_container_stats(&id).unwrap().log_lines_dropped, 40);
}

#[test]
fn a_long_line_without_newline_is_split_at_the_line_bound() {
    let (_dir, rt) = runtime(1);
    let long = "y".repeat(wasmpool::MAX_LINE_BYTES + 10);
    let guest = print_module(&[(&long, 1)], None);
    let (id, handle) = launch(&rt, "long-line", &ServiceSpec::default(), &wasm(&guest));
    assert_eq!(handle.wait(), Outcome::Exited(0));
    let lines = stdout_lines(&rt, &id);
    assert_eq!(
        lines.iter().map(String::len).collect::<Vec<_>>(),
        [wasmpool::MAX_LINE_BYTES, 10]
    );
}

#[test]
fn two_waiters_on_one_instance_get_the_same_outcome() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(
        &rt,
        "two-waiters",
        &ServiceSpec::default(),
        &wasm(&sleep_module(20_000_000)),
    );
    let other = rt.wait_handle(&id).unwrap();
    let a = std::thread::spawn(move || handle.wait());
    let rt2 = rt.clone();
    let id2 = id.clone();
    let b = std::thread::spawn(move || rt2.wait_container(&id2));
    assert_eq!(a.join().unwrap(), Outcome::Exited(0));
    assert_eq!(b.join().unwrap().unwrap(), 0);
    assert_eq!(other.wait(), Outcome::Exited(0));
}

#[test]
fn wait_on_a_created_container_is_refused_rather_than_hanging() {
    let (_dir, rt) = runtime(1);
    let id = id("never-started");
    rt.create_container_from_bytes(&id, &ServiceSpec::default(), wasm(&exit_module(0)))
        .unwrap();
    let err = rt.wait_container(&id).unwrap_err();
    assert!(err.to_string().contains("not started"), "{err}");
}

#[test]
fn an_output_sink_sees_every_write_as_it_happens() {
    use std::sync::{Arc, Mutex};
    let (_dir, rt) = runtime(1);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink_seen = seen.clone();
    let spec = ServiceSpec {
        output: Some(wasmpool::OutputSink::new(move |stream, bytes| {
            sink_seen.lock().unwrap().push((stream, bytes.to_vec()));
        })),
        ..Default::default()
    };
    let guest = print_module(&[("out\n", 1), ("err\n", 2)], None);
    let (_id, handle) = launch(&rt, "sink", &spec, &wasm(&guest));
    assert_eq!(handle.wait(), Outcome::Exited(0));
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (LogStream::Stdout, b"out\n".to_vec()),
            (LogStream::Stderr, b"err\n".to_vec())
        ]
    );
}
