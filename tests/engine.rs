//! The engine basics: exit codes, output, env, args, stdin, mounts, handles.

use crate::common::*;
use std::collections::HashMap;
use wasmpool::{Outcome, Runtime, ServiceSpec, StdinSpec};

#[test]
fn exit_codes_reach_the_waiter() {
    let (_dir, rt) = runtime(2);
    for code in [0, 3, 42] {
        let (id, handle) = launch(&rt, &format!("exit-{code}"), &ServiceSpec::default(), &wasm(&exit_module(code)));
        assert_eq!(handle.wait(), Outcome::Exited(code));
        assert_eq!(rt.wait_container(&id).unwrap(), code);
    }
}

#[test]
fn stdout_and_stderr_are_captured_as_lines() {
    let (_dir, rt) = runtime(1);
    let guest = print_module(&[("one\ntwo\n", 1), ("oops\n", 2), ("tail", 1)], None);
    let (id, handle) = launch(&rt, "print", &ServiceSpec::default(), &wasm(&guest));
    assert_eq!(handle.wait(), Outcome::Exited(0));
    let logs = rt.get_logs(&id).unwrap();
    let got: Vec<_> = logs.iter().map(|e| (e.stream, e.message.as_str())).collect();
    use wasmpool::LogStream::*;
    assert_eq!(got, [(Stdout, "one"), (Stdout, "two"), (Stderr, "oops"), (Stdout, "tail")]);
}

#[test]
fn env_and_args_are_exactly_the_specs() {
    let (_dir, rt) = runtime(1);
    let spec = ServiceSpec {
        image: wasmpool::ImageSpec::new("localhost/args:1"),
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
        ["localhost/args:1", "--entry", "arg1", "two words", "MY_VAR=my_value"]
    );
}

#[test]
fn stdin_bytes_are_read_then_end_of_file() {
    let (_dir, rt) = runtime(1);
    let spec = ServiceSpec {
        stdin: StdinSpec::Bytes(b"first\nsecond\n".to_vec()),
        ..Default::default()
    };
    let (id, handle) = launch(&rt, "cat", &spec, &wasm(CAT));
    assert_eq!(handle.wait(), Outcome::Exited(0));
    assert_eq!(stdout_lines(&rt, &id), ["first", "second"]);
}
