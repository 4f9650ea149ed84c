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
    assert_eq!(handle.wait(), Outcome::Exited(0));
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
        let outcome = handle.wait();
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
    assert_eq!(handle.wait(), Outcome::Exited(8));
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
    let outcome = handle.wait();
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
        assert_eq!(next.wait(), Outcome::Exited(i));
    }
    let (spin, spin_handle) = launch(
        &rt,
        "after-panic-spin",
        &ServiceSpec::default(),
        &wasm(SPIN),
    );
    until_running(&rt, &spin);
    rt.stop_container(&spin, Duration::from_secs(5)).unwrap();
    assert_eq!(spin_handle.wait(), Outcome::Stopped);
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
        hog_handle.wait(),
        Outcome::Exited(1),
        "the hog's grow was refused"
    );
    assert_eq!(
        neighbour.wait(),
        Outcome::Exited(0),
        "the unlimited neighbour grew"
    );
    assert!(rt.get_container_stats(&hog).unwrap().memory_peak_bytes <= 1 << 20);
}
