//! A runaway guest stopped by the host, and another ended by its deadline.
//!
//! Run with `cargo run --release --example stop`.

use anyhow::Result;
use std::time::{Duration, Instant};
use wasmpool::{ContainerId, Runtime, ServiceSpec, WasmConfig, WasmRuntime, WasmSpec};

/// A guest that never calls the host: only fuel metering can interrupt it.
const RUNAWAY: &str = r#"(module
    (memory (export "memory") 1)
    (func (export "_start") (loop $forever (br $forever))))"#;

fn main() -> Result<()> {
    // A private cache folder: compiled code is loaded only from places no one else can write.
    let cache = tempfile::tempdir()?;
    let runtime = WasmRuntime::new(WasmConfig {
        cache_dir: cache.path().into(),
        workers: 1,
        ..Default::default()
    })?;
    let runaway = wat::parse_str(RUNAWAY)?;

    // 1. Stop: the guest spins until the host says stop.
    let id = ContainerId::new("runaway", 1);
    runtime.create_container_from_bytes(&id, &ServiceSpec::default(), &runaway)?;
    let handle = runtime.start(&id)?;
    std::thread::sleep(Duration::from_millis(100));
    let stats = runtime.get_container_stats(&id)?;
    println!(
        "running: {} fuel burned, {} µs of CPU",
        stats.fuel_consumed, stats.cpu_usage_usec
    );
    let asked = Instant::now();
    runtime.stop_container(&id, Duration::from_secs(1))?;
    println!("stopped in {:.1?}: {}", asked.elapsed(), handle.wait());

    // 2. Deadline: the same guest with a 250 ms wall-clock limit; no one stops it.
    let spec = ServiceSpec {
        wasm: Some(WasmSpec {
            max_execution_time: Some(Duration::from_millis(250)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = ContainerId::new("runaway", 2);
    runtime.create_container_from_bytes(&id, &spec, &runaway)?;
    runtime.start_container(&id)?;
    let code = runtime.wait_container(&id)?;
    println!("{:?}, exit code {code}", runtime.container_state(&id)?);
    Ok(())
}
