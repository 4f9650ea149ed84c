//! A WASIp2 command component, built from a WAT core module with the preview1
//! command adapter, run like any other workload.
//!
//! Run with `cargo run --release --example component`.

use anyhow::Result;
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
};
use wasmpool::{
    detect_wasm_version_from_binary, ContainerId, Runtime, ServiceSpec, WasmConfig, WasmRuntime,
};

fn main() -> Result<()> {
    // The core module speaks WASIp1; the adapter turns it into a wasi:cli/run component.
    let core = wat::parse_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello.wat"))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&core)?
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        )?
        .validate(true)
        .encode()?;
    println!(
        "{} bytes, detected as {:?}",
        component.len(),
        detect_wasm_version_from_binary(&component)
    );

    // The runtime tells a component from a module by its bytes: nothing else changes.
    // A private cache folder: compiled code is loaded only from places no one else can write.
    let cache = tempfile::tempdir()?;
    let runtime = WasmRuntime::new(WasmConfig {
        cache_dir: cache.path().into(),
        workers: 1,
        ..Default::default()
    })?;
    let id = ContainerId::new("component", 1);
    runtime.create_container_from_bytes(&id, &ServiceSpec::default(), &component)?;
    runtime.start_container(&id)?;
    let code = runtime.wait_container(&id)?;
    for line in runtime.get_logs(&id)? {
        println!("component said: {}", line.message);
    }
    println!("exit code {code}");
    Ok(())
}
