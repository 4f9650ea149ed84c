//! Following a running guest's output line by line, as `docker logs -f` does.
//!
//! Run with `cargo run --release --example logs`.

use anyhow::Result;
use std::time::Instant;
use wasmpool::{ContainerId, Runtime, ServiceSpec, WasmConfig, WasmRuntime};

fn main() -> Result<()> {
    // A private cache folder: compiled code is loaded only from places no one else can write.
    let cache = tempfile::tempdir()?;
    let runtime = WasmRuntime::new(WasmConfig {
        cache_dir: cache.path().into(),
        workers: 1,
        ..Default::default()
    })?;
    // The ticker prints a line every 100 ms for a second.
    let ticker = wat::parse_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ticker.wat"))?;
    let id = ContainerId::new("ticker", 1);
    runtime.create_container_from_bytes(&id, &ServiceSpec::default(), ticker)?;
    runtime.start_container(&id)?;

    // The follower blocks until the next line is written, and ends with the guest.
    let started = Instant::now();
    for entry in runtime.follow_logs(&id)? {
        println!(
            "[{:>6.1?}] {:?}: {}",
            started.elapsed(),
            entry.stream,
            entry.message
        );
    }
    println!("guest ended: {:?}", runtime.container_state(&id)?);
    Ok(())
}
