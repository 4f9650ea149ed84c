//! The engine basics: exit codes, output, env, args, stdin, mounts, images.

use crate::common::*;
use std::collections::HashMap;
use wasmpool::{
    ContainerState, Error, ImageSpec, Outcome, PullPolicy, Runtime, ServiceSpec, StdinSpec,
    StorageSpec,
};

#[test]
fn exit_codes_reach_the_waiter() {
    let (_dir, rt) = runtime(2);
    for code in [0, 3, 42] {
        let (id, handle) = launch(
            &rt,
            &format!("exit-{code}"),
            &ServiceSpec::default(),
            &wasm(&exit_module(code)),
        );
        assert_eq!(handle.wait(), Outcome::Exited(code));
        assert_eq!(rt.wait_container(&id).unwrap(), code);
    }
}

#[test]
fn main_returning_a_code_is_an_entry_point_too() {
    let (_dir, rt) = runtime(1);
    let guest = r#"(module (func (export "main") (result i32) (i32.const 12)))"#;
    let (_id, handle) = launch(&rt, "main", &ServiceSpec::default(), &wasm(guest));
    assert_eq!(handle.wait(), Outcome::Exited(12));
}

#[test]
fn stdout_and_stderr_are_captured_as_lines() {
    let (_dir, rt) = runtime(1);
    let guest = print_module(&[("one\ntwo\n", 1), ("oops\n", 2), ("tail", 1)], None);
    let (id, handle) = launch(&rt, "print", &ServiceSpec::default(), &wasm(&guest));
    assert_eq!(handle.wait(), Outcome::Exited(0));
    let logs = rt.get_logs(&id).unwrap();
    let got: Vec<_> = logs
        .iter()
        .map(|e| (e.stream, e.message.as_str()))
        .collect();
    use wasmpool::LogStream::*;
    assert_eq!(
        got,
        [
            (Stdout, "one"),
            (Stdout, "two"),
            (Stderr, "oops"),
            (Stdout, "tail")
        ]
    );
}

#[test]
fn env_and_args_are_exactly_the_specs() {
    // The host's environment has PATH and HOME; the guest must see only MY_VAR.
    assert!(std::env::var_os("PATH").is_some());
    let (_dir, rt) = runtime(1);
    let spec = ServiceSpec {
        image: ImageSpec::new("localhost/args:1"),
        env: HashMap::from([("MY_VAR".into(), "my_value".into())]),
        command: wasmpool::CommandSpec {
            entrypoint: Some(vec!["--entry".into()]),
            args: Some(vec!["arg1".into(), "two words".into()]),
            workdir: None,
        },
        ..Default::default()
    };
    let (id, handle) = launch(&rt, "args", &spec, &wasm(PRINT_ARGS_AND_ENV));
    assert_eq!(handle.wait(), Outcome::Exited(0));
    assert_eq!(
        stdout_lines(&rt, &id),
        [
            "localhost/args:1",
            "--entry",
            "arg1",
            "two words",
            "MY_VAR=my_value"
        ]
    );
}

#[test]
fn stdin_bytes_are_read_then_end_of_file() {
    let (_dir, rt) = runtime(1);
    let spec = ServiceSpec {
        stdin: StdinSpec::Bytes(b"first\nsecond\n".to_vec()),
        ..Default::default()
    };
    let (id, handle) = launch(&rt, "cat", &spec, &wasm(&cat_module(false)));
    assert_eq!(handle.wait(), Outcome::Exited(0));
    assert_eq!(stdout_lines(&rt, &id), ["first", "second"]);
}

#[test]
fn stdin_is_empty_by_default() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(
        &rt,
        "cat-empty",
        &ServiceSpec::default(),
        &wasm(&cat_module(false)),
    );
    assert_eq!(handle.wait(), Outcome::Exited(0));
    assert!(stdout_lines(&rt, &id).is_empty());
}

#[test]
fn a_bind_mount_is_readable_and_writable_unless_read_only() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in.txt"), "hello mount\n").unwrap();
    let (_dir, rt) = runtime(1);
    let (id, read) = launch(
        &rt,
        "mount-read",
        &mounted(data.path(), true),
        &wasm(&read_file_module("in.txt")),
    );
    assert_eq!(read.wait(), Outcome::Exited(0));
    assert_eq!(stdout_lines(&rt, &id), ["hello mount"]);

    let (_, refused) = launch(
        &rt,
        "mount-ro",
        &mounted(data.path(), true),
        &wasm(&write_file_module("out.txt")),
    );
    // errno 63 is EPERM in WASIp1: the read-only mount refused the open for writing.
    assert_eq!(refused.wait(), Outcome::Exited(63));
    assert!(!data.path().join("out.txt").exists());

    let (_, allowed) = launch(
        &rt,
        "mount-rw",
        &mounted(data.path(), false),
        &wasm(&write_file_module("out.txt")),
    );
    assert_eq!(allowed.wait(), Outcome::Exited(0));
    assert_eq!(
        std::fs::read_to_string(data.path().join("out.txt")).unwrap(),
        "written"
    );
}

#[test]
fn a_named_volume_keeps_files_between_containers() {
    let (dir, rt) = runtime(1);
    let volume = |readonly| ServiceSpec {
        storage: vec![StorageSpec::Named {
            name: "shared-vol".into(),
            target: "/vol".into(),
            readonly,
        }],
        ..Default::default()
    };
    let (_, writer) = launch(
        &rt,
        "vol-write",
        &volume(false),
        &wasm(&write_file_module("kept.txt")),
    );
    assert_eq!(writer.wait(), Outcome::Exited(0));
    let (id, reader) = launch(
        &rt,
        "vol-read",
        &volume(true),
        &wasm(&read_file_module("kept.txt")),
    );
    assert_eq!(reader.wait(), Outcome::Exited(0));
    assert_eq!(stdout_lines(&rt, &id), ["written"]);
    assert!(dir.path().join("volumes/shared-vol/kept.txt").exists());
    let bad = volume(false);
    let mut bad = bad;
    bad.storage = vec![StorageSpec::Named {
        name: "../escape".into(),
        target: "/v".into(),
        readonly: false,
    }];
    let err = rt
        .create_container_from_bytes(&id_for("vol-bad"), &bad, wasm(SPIN))
        .unwrap_err();
    assert!(err.to_string().contains("'../escape'"), "{err}");
}

fn id_for(name: &str) -> wasmpool::ContainerId {
    wasmpool::ContainerId::new(name, 1)
}

#[test]
fn a_missing_image_is_an_error_naming_its_path() {
    let (dir, rt) = runtime(1);
    let spec = ServiceSpec {
        image: ImageSpec::new("localhost/absent:v1"),
        ..Default::default()
    };
    match rt.create_container(&id_for("absent"), &spec) {
        Err(Error::UnreadableArtifact { path, .. }) => {
            assert_eq!(path, dir.path().join("localhost_absent_v1.wasm"));
        }
        other => panic!("expected an unreadable artifact error, got {other:?}"),
    }
    let err = rt.create_container(&id_for("absent"), &spec).unwrap_err();
    assert!(
        err.to_string().contains("localhost_absent_v1.wasm"),
        "{err}"
    );
}

#[test]
fn garbage_is_accepted_at_create_and_fails_at_run_with_a_reason() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(
        &rt,
        "garbage",
        &ServiceSpec::default(),
        b"\xde\xad\xbe\xef\0\0\0\0\0",
    );
    let outcome = handle.wait();
    assert!(
        matches!(&outcome, Outcome::Failed(r) if r.starts_with("invalid WebAssembly module")),
        "{outcome:?}"
    );
    match rt.container_state(&id).unwrap() {
        ContainerState::Failed { reason } => assert_eq!(reason, outcome.to_string()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn image_names_cannot_leave_the_cache_directory() {
    let (_dir, rt) = runtime(1);
    for name in [
        "../etc/passwd",
        "/etc/passwd",
        "a/../../b",
        "nul\0byte",
        "",
        "back\\slash",
        "x:..@y",
    ] {
        let spec = ServiceSpec {
            image: ImageSpec::new(name),
            ..Default::default()
        };
        match rt.create_container(&id_for("escape"), &spec) {
            Err(Error::InvalidImageName(quoted)) => assert_eq!(quoted, name),
            other => panic!("image name {name:?} gave {other:?}"),
        }
    }
}

#[test]
fn pull_policy_always_with_no_registry_to_ask_is_a_clear_error() {
    let (dir, rt) = runtime(1);
    // Cached by hand, but Always must ask the registry, and there is none on port 1.
    let image = "127.0.0.1:1/demo/x:v1";
    std::fs::write(
        dir.path().join("127.0.0.1_1_demo_x_v1.wasm"),
        wasm(&exit_module(0)),
    )
    .unwrap();
    let spec = ServiceSpec {
        image: ImageSpec {
            name: image.into(),
            pull_policy: PullPolicy::Always,
        },
        ..Default::default()
    };
    let err = rt.create_container(&id_for("pull"), &spec).unwrap_err();
    assert!(matches!(err, Error::Pull { .. }), "{err:?}");
    assert!(
        err.to_string().contains("cannot connect to 127.0.0.1:1"),
        "{err}"
    );
    // IfNotPresent takes the cached copy without asking.
    let spec = ServiceSpec {
        image: ImageSpec {
            name: image.into(),
            pull_policy: PullPolicy::IfNotPresent,
        },
        ..Default::default()
    };
    rt.create_container(&id_for("cached"), &spec).unwrap();
}

#[test]
fn duplicate_ids_and_wrong_states_are_refused() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(&rt, "dup", &ServiceSpec::default(), &wasm(&exit_module(0)));
    assert_eq!(
        rt.create_container_from_bytes(&id, &ServiceSpec::default(), wasm(SPIN)),
        Err(Error::AlreadyExists(id.clone()))
    );
    handle.wait();
    let err = rt.start_container(&id).unwrap_err();
    assert!(matches!(
        err,
        Error::WrongState {
            operation: "start",
            ..
        }
    ));
    assert!(
        err.to_string().contains("ended (exited with code 0)"),
        "{err}"
    );
}
