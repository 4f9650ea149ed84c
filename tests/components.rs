//! Real WASIp2 command components, built from WAT with the preview1 command adapter.

use crate::common::*;
use std::collections::HashMap;
use wasmpool::{
    detect_wasm_version_from_binary, CommandSpec, ImageSpec, Outcome, Runtime, ServiceSpec,
    WasiVersion,
};

#[test]
fn a_component_runs_and_prints() {
    let bytes = component(&print_module(
        &[("hello from p2\n", 1), ("to stderr\n", 2)],
        None,
    ));
    assert_eq!(
        detect_wasm_version_from_binary(&bytes),
        WasiVersion::Preview2
    );
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(&rt, "p2-hello", &ServiceSpec::default(), &bytes);
    assert_eq!(wait_bounded(&handle), Outcome::Exited(0));
    assert_eq!(stdout_lines(&rt, &id), ["hello from p2"]);
    let logs = rt.get_logs(&id).unwrap();
    assert_eq!(logs.last().unwrap().stream, wasmpool::LogStream::Stderr);
    assert_eq!(rt.wait_container(&id).unwrap(), 0);
}

#[test]
fn component_exit_codes_are_zero_and_one() {
    // Through the preview1 command adapter a non-zero proc_exit arrives as 1:
    // the adapter only imports wasi:cli/exit.exit(result).
    let (_dir, rt) = runtime(2);
    let (ok, ok_handle) = launch(
        &rt,
        "p2-exit-0",
        &ServiceSpec::default(),
        &component(&exit_module(0)),
    );
    let (bad, bad_handle) = launch(
        &rt,
        "p2-exit-7",
        &ServiceSpec::default(),
        &component(&exit_module(7)),
    );
    assert_eq!(wait_bounded(&ok_handle), Outcome::Exited(0));
    assert_eq!(wait_bounded(&bad_handle), Outcome::Exited(1));
    assert_eq!(rt.wait_container(&ok).unwrap(), 0);
    assert_eq!(rt.wait_container(&bad).unwrap(), 1);
}

#[test]
fn a_component_sees_exactly_the_specs_env_and_args() {
    let (_dir, rt) = runtime(1);
    let spec = ServiceSpec {
        image: ImageSpec::new("p2/args"),
        env: HashMap::from([("GREETING".into(), "hi".into())]),
        command: CommandSpec {
            args: Some(vec!["--flag".into(), "value".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    let (id, handle) = launch(&rt, "p2-args", &spec, &component(PRINT_ARGS_AND_ENV));
    assert_eq!(wait_bounded(&handle), Outcome::Exited(0));
    assert_eq!(
        stdout_lines(&rt, &id),
        ["p2/args", "--flag", "value", "GREETING=hi"]
    );
}

#[test]
fn a_component_reads_a_file_from_a_read_only_mount_and_cannot_write_there() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("note.txt"), "from the host\n").unwrap();
    let spec = mounted(data.path(), true);
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(
        &rt,
        "p2-read",
        &spec,
        &component(&read_file_module("note.txt")),
    );
    assert_eq!(wait_bounded(&handle), Outcome::Exited(0));
    assert_eq!(stdout_lines(&rt, &id), ["from the host"]);
    let (_, write) = launch(
        &rt,
        "p2-write",
        &spec,
        &component(&write_file_module("new.txt")),
    );
    assert_eq!(
        wait_bounded(&write),
        Outcome::Exited(1),
        "the write was refused (non-zero exit)"
    );
    assert!(!data.path().join("new.txt").exists());
}

#[test]
fn a_component_that_traps_fails_with_the_trap() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(
        &rt,
        "p2-trap",
        &ServiceSpec::default(),
        &component(UNREACHABLE),
    );
    let outcome = wait_bounded(&handle);
    assert!(
        matches!(&outcome, Outcome::Trapped(m) if m.contains("unreachable")),
        "{outcome:?}"
    );
    assert_eq!(rt.wait_container(&id).unwrap(), 134);
}

#[test]
fn a_spinning_component_is_stopped() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(
        &rt,
        "p2-spin",
        &ServiceSpec::default(),
        &component(READY_SPIN),
    );
    until_ready(&rt, &id);
    rt.stop_container(&id, std::time::Duration::from_secs(5))
        .unwrap();
    assert_eq!(wait_bounded(&handle), Outcome::Stopped);
}

#[test]
fn a_sleeping_component_is_stopped() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(
        &rt,
        "p2-sleep",
        &ServiceSpec::default(),
        &component(&ready_sleep_module(3_600_000_000_000)),
    );
    until_ready(&rt, &id);
    assert_eq!(
        handle.wait_timeout(std::time::Duration::from_millis(50)),
        None
    );
    rt.stop_container(&id, std::time::Duration::from_secs(5))
        .unwrap();
    assert_eq!(wait_bounded(&handle), Outcome::Stopped);
}

#[test]
fn a_component_without_wasi_cli_run_fails_with_a_reason() {
    let reactor = wat::parse_str("(component)").unwrap();
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(&rt, "p2-none", &ServiceSpec::default(), &reactor);
    let outcome = wait_bounded(&handle);
    assert!(
        matches!(&outcome, Outcome::Failed(r) if r.contains("wasi:cli/run")),
        "{outcome:?}"
    );
    assert!(rt.wait_container(&id).is_err());
}
