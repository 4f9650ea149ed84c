//! What a guest cannot do: escape its mounts, see the host, hurt the pool.

use crate::common::*;
use std::time::Duration;
use wasmpool::{Outcome, OutputSink, Runtime, ServiceSpec};

#[test]
fn a_guest_cannot_read_outside_its_mount() {
    let outer = tempfile::tempdir().unwrap();
    std::fs::write(outer.path().join("secret.txt"), "host secret\n").unwrap();
    let inner = outer.path().join("mount");
    std::fs::create_dir(&inner).unwrap();
    std::fs::write(inner.join("ok.txt"), "inside\n").unwrap();
    std::os::unix::fs::symlink(outer.path().join("secret.txt"), inner.join("link-out")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", inner.join("relative-link-out")).unwrap();
    let (_dir, rt) = runtime(2);
    // The control: a file inside the mount is readable.
    let (ok, handle) = launch(
        &rt,
        "inside",
        &mounted(&inner, false),
        &wasm(&read_file_module("ok.txt")),
    );
    assert_eq!(wait_bounded(&handle), Outcome::Exited(0));
    assert_eq!(stdout_lines(&rt, &ok), ["inside"]);
    for (name, path) in [
        ("dotdot", "../secret.txt"),
        ("deep-dotdot", "sub/../../secret.txt"),
        ("absolute", "/etc/passwd"),
        ("symlink", "link-out"),
        ("relative-symlink", "relative-link-out"),
    ] {
        let (id, handle) = launch(
            &rt,
            name,
            &mounted(&inner, false),
            &wasm(&read_file_module(path)),
        );
        let outcome = wait_bounded(&handle);
        assert!(
            matches!(outcome, Outcome::Exited(code) if code != 0),
            "{path}: {outcome:?}"
        );
        assert!(
            stdout_lines(&rt, &id).is_empty(),
            "{path} leaked {:?}",
            stdout_lines(&rt, &id)
        );
    }
}

#[test]
fn a_guest_without_mounts_has_no_files_at_all() {
    let (_dir, rt) = runtime(1);
    // fd 3 is not a preopen: opening through it fails with EBADF (8).
    let (_, handle) = launch(
        &rt,
        "no-mounts",
        &ServiceSpec::default(),
        &wasm(&read_file_module("etc/passwd")),
    );
    assert_eq!(wait_bounded(&handle), Outcome::Exited(8));
}

#[test]
fn a_panic_in_a_host_callback_fails_that_guest_only() {
    let (_dir, rt) = runtime(1);
    let spec = ServiceSpec {
        output: Some(OutputSink::new(|_, _| panic!("sink exploded on purpose"))),
        ..Default::default()
    };
    let (id, handle) = launch(
        &rt,
        "panics",
        &spec,
        &wasm(&print_module(&[("boom\n", 1)], None)),
    );
    let outcome = wait_bounded(&handle);
    assert_eq!(
        outcome,
        Outcome::Panicked("sink exploded on purpose".into())
    );
    let err = rt.wait_container(&id).unwrap_err();
    assert!(
        err.to_string()
            .contains("panicked: sink exploded on purpose"),
        "{err}"
    );
    // The only worker keeps serving, and so do stop and logs.
    for i in 0..3 {
        let (_, next) = launch(
            &rt,
            &format!("after-panic-{i}"),
            &ServiceSpec::default(),
            &wasm(&exit_module(i)),
        );
        assert_eq!(wait_bounded(&next), Outcome::Exited(i));
    }
    let (spin, spin_handle) = launch(
        &rt,
        "after-panic-spin",
        &ServiceSpec::default(),
        &wasm(READY_SPIN),
    );
    until_ready(&rt, &spin);
    rt.stop_container(&spin, Duration::from_secs(5)).unwrap();
    assert_eq!(wait_bounded(&spin_handle), Outcome::Stopped);
}

#[test]
fn a_guest_stays_within_its_memory_limit_while_neighbours_run() {
    let (_dir, rt) = runtime(2);
    let limited = ServiceSpec {
        wasm: Some(wasmpool::WasmSpec {
            max_memory: Some("1Mi".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (hog, hog_handle) = launch(&rt, "hog", &limited, &wasm(&grow_module(1, 100)));
    let (_, neighbour) = launch(
        &rt,
        "neighbour",
        &ServiceSpec::default(),
        &wasm(&grow_module(1, 100)),
    );
    assert_eq!(
        wait_bounded(&hog_handle),
        Outcome::Exited(1),
        "the hog's grow was refused"
    );
    assert_eq!(
        wait_bounded(&neighbour),
        Outcome::Exited(0),
        "the unlimited neighbour grew"
    );
    assert!(rt.get_container_stats(&hog).unwrap().memory_peak_bytes <= 1 << 20);
}

/// A WASIp2 command component that tries to create a TCP socket and exits 0
/// if it could, 1 (after printing "denied") if it could not.
fn socket_component() -> Vec<u8> {
    let core = r#"(module
        (import "wasi:sockets/tcp-create-socket@0.2.0" "create-tcp-socket" (func $create (param i32 i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (data (i32.const 512) "denied\0a")
        (func (export "_start")
            ;; ipv4; the result<tcp-socket, error-code> lands at 256.
            (call $create (i32.const 0) (i32.const 256))
            (if (i32.load8_u (i32.const 256)) (then
                (i32.store (i32.const 0) (i32.const 512))
                (i32.store (i32.const 4) (i32.const 7))
                (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
                (call $exit (i32.const 1))))
            (call $exit (i32.const 0))))"#;
    let wit = sockets_wit("import wasi:sockets/tcp-create-socket@0.2.0;");
    component_with_wit(&wit, "guest", core)
}

#[test]
fn a_guest_cannot_open_a_socket_unless_the_spec_grants_network() {
    let guest = socket_component();
    let (_dir, rt) = runtime(1);
    let (denied, handle) = launch(&rt, "no-network", &ServiceSpec::default(), &guest);
    assert_eq!(wait_bounded(&handle), Outcome::Exited(1));
    assert_eq!(stdout_lines(&rt, &denied), ["denied"]);
    let granted = ServiceSpec {
        network: true,
        ..Default::default()
    };
    let (allowed, handle) = launch(&rt, "network", &granted, &guest);
    assert_eq!(
        wait_bounded(&handle),
        Outcome::Exited(0),
        "{:?}",
        stdout_lines(&rt, &allowed)
    );
}
