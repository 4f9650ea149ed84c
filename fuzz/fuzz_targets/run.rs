//! Create + start + wait of arbitrary bytes under a small fuel, memory and time
//! budget: every input ends with an outcome, and none panics the host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use wasmpool::{ContainerId, Outcome, Runtime, ServiceSpec, WasmConfig, WasmRuntime, WasmSpec};

fn runtime() -> &'static WasmRuntime {
    static RUNTIME: OnceLock<WasmRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        WasmRuntime::new(WasmConfig {
            // A private folder for the life of the process (nothing compiled is kept).
            cache_dir: tempfile::tempdir().expect("temp dir").keep(),
            workers: 1,
            max_fuel: Some(200_000),
            max_execution_time: Duration::from_secs(2),
            compiled_cache: false,
            ..Default::default()
        })
        .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let rt = runtime();
    let id = ContainerId::new("fuzz", NEXT.fetch_add(1, Ordering::Relaxed));
    let spec = ServiceSpec {
        wasm: Some(WasmSpec {
            max_memory: Some("2Mi".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    rt.create_container_from_bytes(&id, &spec, data).expect("create accepts any bytes");
    let outcome = rt.start(&id).expect("start").wait();
    assert!(!matches!(outcome, Outcome::Panicked(_)), "{outcome:?}");
    rt.remove_container(&id).expect("remove");
});
