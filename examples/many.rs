//! A thousand instances on the pool, started at once and waited on through handles.
//!
//! Run with `cargo run --release --example many`.

use anyhow::Result;
use std::time::Instant;
use wasmpool::{ContainerId, Outcome, Runtime, ServiceSpec, WasmConfig, WasmRuntime};

fn main() -> Result<()> {
    // A private cache folder: compiled code is loaded only from places no one else can write.
    let cache = tempfile::tempdir()?;
    let runtime = WasmRuntime::new(WasmConfig {
        cache_dir: cache.path().into(),
        queue_limit: 1_000,
        ..Default::default()
    })?;
    println!("pool of {} workers", runtime.config().workers);

    // Each guest exits with its own replica number modulo 100.
    let started = Instant::now();
    let mut handles = Vec::new();
    for replica in 0..1_000u32 {
        let guest = wat::parse_str(format!(
            r#"(module
                (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                (memory (export "memory") 1)
                (func (export "_start") (call $exit (i32.const {}))))"#,
            replica % 100
        ))?;
        let id = ContainerId::new("many", replica);
        runtime.create_container_from_bytes(&id, &ServiceSpec::default(), guest)?;
        // `start` queues the container and hands back a handle on its end.
        handles.push((id.clone(), runtime.start(&id)?));
    }

    // Every handle gets exactly the outcome its guest produced.
    for (id, handle) in &handles {
        assert_eq!(handle.wait(), Outcome::Exited((id.replica % 100) as i32));
        runtime.remove_container(id)?;
    }
    println!(
        "1000 instances (100 distinct modules, each compiled once) in {:.1?}",
        started.elapsed()
    );
    Ok(())
}
