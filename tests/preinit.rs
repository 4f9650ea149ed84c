//! Pre-initialisation: `wasmpool::pre_initialize` (wasmtime's Wizer) runs an
//! init export once and gives a module or component that starts where it
//! left off; `wasmpool wizer` and `serve --pre-init` are it on the command line.

use crate::common::service::*;
use crate::common::*;
use crate::serving::{serve, service_spec};
use std::process::Command;
use wasmpool::{LogStream, Runtime, ServiceSpec};

/// Prints the 8 bytes its init function wrote ("by init\n"), or nothing
/// when it was not run.
const MODULE: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $ready (mut i32) (i32.const 0))
  (func (export "wizer-initialize")
    (i64.store (i32.const 100) (i64.const 0x0a74696e69207962))
    (global.set $ready (i32.const 8)))
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (global.get $ready))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

fn stdout_of(wasm: &[u8]) -> String {
    let (_dir, rt) = runtime_with(1, |_| {});
    let (id, handle) = launch(&rt, "preinit", &ServiceSpec::default(), wasm);
    wait_bounded(&handle);
    rt.get_logs(&id)
        .unwrap()
        .into_iter()
        .filter(|e| e.stream == LogStream::Stdout)
        .map(|e| e.message)
        .collect()
}

#[test]
fn a_pre_initialised_module_starts_where_its_init_function_left_off() {
    let module = wasm(MODULE);
    assert_eq!(stdout_of(&module), "");
    let snapshot = wasmpool::pre_initialize(&module, wasmpool::DEFAULT_INIT_FUNC, None).unwrap();
    assert_eq!(stdout_of(&snapshot), "by init");
    // The init export is gone from the snapshot: it ran.
    assert!(wasmpool::pre_initialize(&snapshot, wasmpool::DEFAULT_INIT_FUNC, None).is_err());

    let missing = wasmpool::pre_initialize(&module, "setup", None).unwrap_err();
    assert!(
        missing.to_string().contains("no `setup` export"),
        "{missing}"
    );
    let garbage = wasmpool::pre_initialize(b"\0asm\x01\0\0\0garbage", "x", None).unwrap_err();
    assert!(!garbage.to_string().is_empty());
    // An init function that spins is bounded by its fuel.
    let spinning = wasm(
        r#"(module (memory (export "memory") 1)
             (func (export "wizer-initialize") (loop $l (br $l))))"#,
    );
    let error = wasmpool::pre_initialize(&spinning, "wizer-initialize", Some(1_000_000))
        .unwrap_err()
        .to_string();
    assert!(error.contains("fuel"), "{error}");
}

/// A wasi:http service whose init export sets the digit it answers (`7`)
/// and says hello on stdout (`wasi:cli/stdout@0.2.0`, served by the
/// `@0.2.12` wasmtime-wasi links: a semver match); without
/// pre-initialisation it answers `0`.
fn initialised_service() -> Vec<u8> {
    initialised_service_importing(false)
}

/// The same, importing (with `later`) an `async func` that nothing gives an
/// init function, as a WASIp3 service's imports are: instantiated by the
/// `*_async` entry points, and a trap only if the init function called it.
fn initialised_service_importing(later: bool) -> Vec<u8> {
    let mut wit = service_wit().replacen(
        "export wasi:http/incoming-handler@0.2.0;",
        "export wasi:http/incoming-handler@0.2.0;\n        export wizer-initialize: func();",
        1,
    );
    let mut import = "";
    if later {
        wit = wit.replacen(
            "export wizer-initialize: func();",
            "export wizer-initialize: func();\n        import local:later/api;",
            1,
        ) + "\npackage local:later { interface api { wait: async func(); } }\n";
        import = r#"(import "local:later/api" "wait" (func $wait))"#;
    }
    let never = if later {
        r#"(func (export "never") (call $wait))"#
    } else {
        ""
    };
    let core = format!(
        r#"(module {import} {PRELUDE}
            (func (export "wizer-initialize")
                (call $print (i32.const 1024) (i32.const 6))
                (global.set $count (i32.const 7)))
            {never}
            (func (export "wasi:http/incoming-handler@0.2.0#handle") (param $req i32) (param $out i32)
                (i32.store8 (i32.const 1100) (i32.add (i32.const 48) (global.get $count)))
                (call $respond (local.get $out) (i32.const 200) (i32.const 1100) (i32.const 1))))"#
    );
    component_of(&wit, "service", &core)
}

#[test]
fn a_component_importing_async_functions_is_pre_initialised() {
    let snapshot = wasmpool::pre_initialize(
        &initialised_service_importing(true),
        wasmpool::DEFAULT_INIT_FUNC,
        None,
    )
    .unwrap();
    assert_eq!(
        wasmpool::detect_wasm_version_from_binary(&snapshot),
        wasmpool::WasiVersion::Preview2
    );
}

#[test]
fn a_pre_initialised_component_serves_from_its_snapshot() {
    let service = initialised_service();
    let snapshot = wasmpool::pre_initialize(&service, wasmpool::DEFAULT_INIT_FUNC, None).unwrap();
    let (_dir, rt) = runtime_with(2, |_| {});
    let (_id, address) = serve(&rt, "plain", &service_spec(), &service);
    assert_eq!(get(address, "/").text(), "0");
    let (_id, address) = serve(&rt, "snapshot", &service_spec(), &snapshot);
    for _ in 0..3 {
        assert_eq!(get(address, "/").text(), "7");
    }
}

#[test]
fn the_wizer_command_and_serve_pre_init_use_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("init.wat");
    std::fs::write(&input, MODULE).unwrap();
    let output = dir.path().join("init.wasm");
    let wizer = Command::new(env!("CARGO_BIN_EXE_wasmpool"))
        .arg("wizer")
        .args([&input, &output])
        .output()
        .unwrap();
    assert!(wizer.status.success(), "{wizer:?}");
    assert_eq!(stdout_of(&std::fs::read(&output).unwrap()), "by init");
    let refused = Command::new(env!("CARGO_BIN_EXE_wasmpool"))
        .args(["wizer", "--init-func", "nope"])
        .args([&input, &output])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no `nope` export"));

    // serve --pre-init: the snapshot is made once and kept in the cache folder.
    let service = dir.path().join("service.wasm");
    std::fs::write(&service, initialised_service()).unwrap();
    let cache = dir.path().join("cache");
    for made in [true, false] {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmpool"))
            .arg("--cache-dir")
            .arg(&cache)
            .args([
                "serve",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--pre-init",
            ])
            .arg(&service)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        settle_within(NO_HANG, || std::net::TcpStream::connect(address).is_ok());
        let reply = get(address, "/");
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(reply.text(), "7", "{stderr}");
        assert_eq!(stderr.contains("pre-initialised"), made, "{stderr}");
    }
    let kept: Vec<_> = std::fs::read_dir(cache.join("preinit")).unwrap().collect();
    assert_eq!(kept.len(), 1);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
