//! Entry conventions of `wasmtime run`: reactors, the default export, `invoke`,
//! and imports nobody provides.

use crate::common::*;
use wasmpool::{Outcome, Runtime, ServiceSpec, WasmSpec};

fn with(wasm_spec: WasmSpec) -> ServiceSpec {
    ServiceSpec {
        wasm: Some(wasm_spec),
        ..Default::default()
    }
}

/// A reactor in the ITK-Wasm style: `_initialize` stores a value, the default
/// export `""` prints it, and `answer` returns 42.
const REACTOR_WITH_DEFAULT: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (data (i32.const 1024) "initialized\0a")
    (data (i32.const 1100) "not initialized\0a")
    (global $ready (mut i32) (i32.const 0))
    (func (export "_initialize") (global.set $ready (i32.const 1)))
    (func (export "")
        (if (global.get $ready)
            (then (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 12)))
            (else (i32.store (i32.const 0) (i32.const 1100)) (i32.store (i32.const 4) (i32.const 16))))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
    (func (export "answer") (result i32)
        (if (result i32) (global.get $ready) (then (i32.const 42)) (else (i32.const 1))))
    (func (export "takes_args") (param i32)))"#;

#[test]
fn a_reactor_runs_its_initializer_then_its_default_export() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(
        &rt,
        "reactor",
        &ServiceSpec::default(),
        &wasm(REACTOR_WITH_DEFAULT),
    );
    assert_eq!(wait_bounded(&handle), Outcome::Exited(0));
    assert_eq!(stdout_lines(&rt, &id), ["initialized"]);
    let report = wasmpool::inspect(&wasm(REACTOR_WITH_DEFAULT));
    assert_eq!(report.entry.as_deref(), Some(r#"_initialize, then """#));
    assert_eq!(report.problem, None);
}

#[test]
fn invoke_calls_the_named_export_after_the_initializer_and_its_result_is_the_code() {
    let (_dir, rt) = runtime(1);
    let spec = with(WasmSpec {
        invoke: Some("answer".into()),
        ..Default::default()
    });
    let (id, handle) = launch(&rt, "invoke", &spec, &wasm(REACTOR_WITH_DEFAULT));
    assert_eq!(wait_bounded(&handle), Outcome::Exited(42));
    assert_eq!(rt.wait_container(&id).unwrap(), 42);
    assert!(
        stdout_lines(&rt, &id).is_empty(),
        "the default export did not run"
    );

    for (name, expected) in [
        ("missing", "exports no function 'missing'"),
        ("takes_args", "expected [] -> [] or [] -> [i32]"),
    ] {
        let spec = with(WasmSpec {
            invoke: Some(name.into()),
            ..Default::default()
        });
        let (id, handle) = launch(&rt, name, &spec, &wasm(REACTOR_WITH_DEFAULT));
        match wait_bounded(&handle) {
            Outcome::Failed(reason) => assert!(reason.contains(expected), "{reason}"),
            other => panic!("invoke {name}: {other:?}"),
        }
        let error = rt.wait_container(&id).unwrap_err().to_string();
        assert!(error.contains(name), "{error}");
    }
}

#[test]
fn a_reactor_without_a_default_export_is_refused_with_a_reason() {
    let reactor = r#"(module
        (memory (export "memory") 1)
        (func (export "_initialize"))
        (func (export "work")))"#;
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(&rt, "no-default", &ServiceSpec::default(), &wasm(reactor));
    match wait_bounded(&handle) {
        Outcome::Failed(reason) => {
            assert!(reason.contains("entry point not found"), "{reason}");
            assert!(reason.contains("_initialize"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(rt.wait_container(&id).is_err());
    // Naming the export runs it.
    let spec = with(WasmSpec {
        invoke: Some("work".into()),
        ..Default::default()
    });
    let (_, handle) = launch(&rt, "named", &spec, &wasm(reactor));
    assert_eq!(wait_bounded(&handle), Outcome::Exited(0));
}

#[test]
fn the_default_export_wins_over_start_and_main() {
    let both = r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (func (export "") (call $exit (i32.const 1)))
        (func (export "_start") (call $exit (i32.const 2)))
        (func (export "main") (result i32) (i32.const 3)))"#;
    let (_dir, rt) = runtime(1);
    let (_, handle) = launch(&rt, "default", &ServiceSpec::default(), &wasm(both));
    assert_eq!(wait_bounded(&handle), Outcome::Exited(1));
}

/// Imports a function no one provides, prints "before", then calls it.
const UNKNOWN_IMPORT: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
    (import "vendor:special" "frobnicate" (func $frob (result i32)))
    (memory (export "memory") 1)
    (data (i32.const 1024) "before\0a")
    (func (export "_start")
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 7))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
        (drop (call $frob))))"#;

#[test]
fn unknown_imports_are_refused_by_name_unless_they_may_trap() {
    let (_dir, rt) = runtime(1);
    let (_, refused) = launch(
        &rt,
        "strict",
        &ServiceSpec::default(),
        &wasm(UNKNOWN_IMPORT),
    );
    match wait_bounded(&refused) {
        Outcome::Failed(reason) => assert!(reason.contains("frobnicate"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let lenient = with(WasmSpec {
        trap_unknown_imports: true,
        ..Default::default()
    });
    let (id, handle) = launch(&rt, "lenient", &lenient, &wasm(UNKNOWN_IMPORT));
    match wait_bounded(&handle) {
        Outcome::Trapped(message) => assert!(message.contains("frobnicate"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(stdout_lines(&rt, &id), ["before"], "it ran until the call");
}

#[test]
fn a_component_naming_an_interface_no_one_provides_runs_with_trapping_imports() {
    const WIT: &str = r#"
        package vendor:special@1.0.0;
        interface magic { frobnicate: func() -> u32; }
        world uses-magic { import magic; }
    "#;
    let core = r#"(module
        (import "vendor:special/magic@1.0.0" "frobnicate" (func $frob (result i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (data (i32.const 1024) "before\0a")
        (func (export "_start")
            (i32.store (i32.const 0) (i32.const 1024))
            (i32.store (i32.const 4) (i32.const 7))
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
            (drop (call $frob))
            (call $exit (i32.const 0))))"#;
    let component = component_with_wit(WIT, "uses-magic", core);
    let (_dir, rt) = runtime(1);
    let (_, refused) = launch(&rt, "strict", &ServiceSpec::default(), &component);
    match wait_bounded(&refused) {
        Outcome::Failed(reason) => assert!(reason.contains("vendor:special/magic"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let lenient = with(WasmSpec {
        trap_unknown_imports: true,
        ..Default::default()
    });
    let (id, handle) = launch(&rt, "lenient", &lenient, &component);
    let outcome = wait_bounded(&handle);
    assert!(
        matches!(outcome, Outcome::Trapped(_)),
        "it traps at the call: {outcome:?}"
    );
    assert_eq!(stdout_lines(&rt, &id), ["before"]);
}

#[test]
fn container_ids_display_as_the_reference_agent_prints_them() {
    assert_eq!(
        wasmpool::ContainerId::new("web", 2).to_string(),
        "web-rep-2"
    );
}
