//! The README's quick start, as it is there: run one WASI guest and print its output.
//!
//! Run with `cargo run --release --example quickstart`.

use wasmpool::{ContainerId, Runtime, ServiceSpec, WasmConfig, WasmRuntime};

/// A WASI program in WebAssembly text; a `.wasm` module or component works the same.
const HELLO: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "Hello from a WebAssembly guest!\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 32))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = WasmRuntime::new(WasmConfig::default())?; // engine + worker pool
    let id = ContainerId::new("hello", 1);
    runtime.create_container_from_bytes(&id, &ServiceSpec::default(), HELLO)?;
    runtime.start_container(&id)?; // queues it for a worker
    let code = runtime.wait_container(&id)?; // blocks until it ended
    for line in runtime.get_logs(&id)? {
        println!("{:?}: {}", line.stream, line.message);
    }
    println!("exit code {code}");
    runtime.remove_container(&id)?;
    Ok(())
}
