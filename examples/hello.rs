//! The smallest end-to-end use of wasmpool: run one WASI guest and read its output.
//!
//! Run with `cargo run --release --example hello`.

use anyhow::Result;
use wasmpool::{ContainerId, Runtime, ServiceSpec, WasmConfig, WasmRuntime};

fn main() -> Result<()> {
    // A runtime owns the engine and a fixed pool of worker threads.
    // Its cache is a private folder: compiled code is loaded only from places no one else can write.
    let cache = tempfile::tempdir()?;
    let runtime = WasmRuntime::new(WasmConfig {
        cache_dir: cache.path().into(),
        workers: 1,
        ..Default::default()
    })?;

    // The guest is the WAT file shipped next to this example.
    let guest = wat::parse_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello.wat"))?;

    // Create, start, wait: the container lifecycle, each call blocking until done.
    let id = ContainerId::new("hello", 1);
    runtime.create_container_from_bytes(&id, &ServiceSpec::default(), guest)?;
    runtime.start_container(&id)?;
    let code = runtime.wait_container(&id)?;

    // The guest's stdout was captured line by line.
    for line in runtime.get_logs(&id)? {
        println!("guest said: {}", line.message);
    }
    println!("guest exited with code {code}");

    runtime.remove_container(&id)?;
    Ok(())
}
