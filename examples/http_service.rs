//! A wasi:http service to try `wasmpool serve` with: this writes a component
//! that exports `wasi:http/incoming-handler@0.2.0` (built here from WAT with
//! wit-component, as the tests build theirs) and answers every request with
//! `hello`, logging its path.
//!
//! ```sh
//! cargo run --release --example http_service            # writes target/hello-service.wasm
//! cargo run --release -- serve --addr 127.0.0.1:8080 target/hello-service.wasm
//! curl http://127.0.0.1:8080/anything                    # hello
//! ```
//!
//! Ctrl-C (or SIGTERM) stops the server after the requests in flight.

#[allow(dead_code)]
#[path = "../tests/common/service.rs"]
mod service;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/hello-service.wasm".to_string());
    if let Some(folder) = std::path::Path::new(&path).parent() {
        std::fs::create_dir_all(folder)?;
    }
    std::fs::write(&path, service::logging_handler())?;
    println!("wrote {path}: serve it with");
    println!("  cargo run --release -- serve --addr 127.0.0.1:8080 {path}");
    println!("then: curl http://127.0.0.1:8080/hello");
    Ok(())
}
