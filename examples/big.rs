//! A big program, start to finish: how long its first run takes against
//! wasmtime compiling it with and without fuel, how large its compiled
//! artifact is, and what a warm start costs beyond wasmtime's own
//! `deserialize_file` — in a new runtime and in a new process.
//!
//! No big real program ships with this repository, so the example builds one:
//! many small functions, all of them in a funcref table (as the indirect-call
//! table of a large C++ program holds most of its functions). Its size is
//! `WASMPOOL_BIG_MB` megabytes (default 20; the README's row used 69).
//!
//! Run with `cargo run --release --example big` (the CLI binary must be built:
//! `cargo build --release` first, for the new-process figures); with
//! `WASMPOOL_BIG_KEEP` set, the cache folder is kept for inspection.

use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use wasmpool::{ContainerId, ImageSpec, Outcome, Runtime, ServiceSpec, WasmConfig, WasmRuntime};

fn main() -> Result<()> {
    // The child process of the new-process figures: wasmtime alone, loading a file.
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, file] = args.as_slice() {
        let engine = wasmtime::Engine::new(wasmtime::Config::new().consume_fuel(true))?;
        if mode == "--deserialize" {
            // SAFETY: the parent wrote the file with `precompile_module` of this configuration.
            #[allow(unsafe_code)]
            let module = unsafe { wasmtime::Module::deserialize_file(&engine, file)? };
            drop(module);
        }
        return Ok(());
    }
    let megabytes: usize = std::env::var("WASMPOOL_BIG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let program = big_program(megabytes << 20);
    println!(
        "a synthetic program of {:.1} MB",
        program.len() as f64 / 1e6
    );
    let dir = tempfile::tempdir()?;

    // wasmtime alone, compiling in this process: without fuel, then with it.
    let (plain, _) = compile_raw(&program, false)?;
    let (fueled, fueled_artifact) = compile_raw(&program, true)?;
    let raw_file = dir.path().join("raw.cwasm");
    std::fs::write(&raw_file, &fueled_artifact)?;
    let engine = wasmtime::Engine::new(wasmtime::Config::new().consume_fuel(true))?;
    let begin = Instant::now();
    // SAFETY: the file was just written by `precompile_module` of this configuration.
    #[allow(unsafe_code)]
    let module = unsafe { wasmtime::Module::deserialize_file(&engine, &raw_file)? };
    let deserialize = begin.elapsed();
    drop(module);
    println!("wasmtime compile: {plain:.2?} without fuel, {fueled:.2?} with fuel");
    println!(
        "wasmtime artifact with fuel: {:.1} MiB; deserialize_file: {deserialize:.2?}",
        mib(fueled_artifact.len() as u64)
    );

    // wasmpool, first run on an empty cache: read, compile, save, run.
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache)?;
    std::fs::write(cache.join("big.wasm"), &program)?;
    let cold = run_once(&cache)?;
    let compiled = folder_bytes(&cache.join("compiled"))?;
    println!(
        "wasmpool first run: {cold:.2?} ({:.2}× wasmtime with fuel, {:.2}× without)",
        cold.as_secs_f64() / fueled.as_secs_f64(),
        cold.as_secs_f64() / plain.as_secs_f64()
    );
    println!(
        "wasmpool compiled cache: {:.1} MiB ({:.2}× wasmtime's artifact)",
        mib(compiled),
        compiled as f64 / fueled_artifact.len() as f64
    );

    // A new runtime on the same cache: the artifact loads from disk.
    let warm = (0..5)
        .map(|_| run_once(&cache))
        .collect::<Result<Vec<_>>>()?;
    let warm = warm.into_iter().min().unwrap_or_default();
    println!(
        "wasmpool warm start in a new runtime: {warm:.2?} (deserialize_file alone {deserialize:.2?}; \
         {:.1} ms beyond it)",
        (warm.as_secs_f64() - deserialize.as_secs_f64()) * 1e3
    );

    // A new process: `wasmpool run --pull never big` against the same cache,
    // minus the same command for a trivial image (process and runtime set-up).
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/wasmpool");
    if binary.exists() {
        std::fs::write(
            cache.join("trivial.wasm"),
            wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)?,
        )?;
        let process = |image: &str| -> Result<Duration> {
            let mut best = Duration::MAX;
            for _ in 0..5 {
                let begin = Instant::now();
                let status = Command::new(&binary)
                    .env("WASMPOOL_CACHE_DIR", &cache)
                    .args(["run", "--pull", "never", image])
                    .status()
                    .context("cannot run the wasmpool binary")?;
                anyhow::ensure!(status.success(), "wasmpool run {image}: {status}");
                best = best.min(begin.elapsed());
            }
            Ok(best)
        };
        // The CLI names images by reference: `localhost/…` keeps them in this cache.
        std::fs::rename(cache.join("big.wasm"), cache.join("localhost_big.wasm"))?;
        std::fs::rename(
            cache.join("trivial.wasm"),
            cache.join("localhost_trivial.wasm"),
        )?;
        let big = process("localhost/big")?;
        let trivial = process("localhost/trivial")?;
        // wasmtime's own cost of the same in a new process: this example, run
        // to deserialize the file, minus run to build the engine only.
        let raw = |mode: &str| -> Result<Duration> {
            let mut best = Duration::MAX;
            for _ in 0..5 {
                let begin = Instant::now();
                let status = Command::new(std::env::current_exe()?)
                    .arg(mode)
                    .arg(&raw_file)
                    .status()?;
                anyhow::ensure!(status.success(), "{mode}: {status}");
                best = best.min(begin.elapsed());
            }
            Ok(best)
        };
        let raw_load = raw("--deserialize")?.saturating_sub(raw("--engine-only")?);
        println!(
            "wasmpool warm start in a new process: {big:.2?}, a trivial image {trivial:.2?}; \
             wasmtime's deserialize_file in a new process {raw_load:.2?}: \
             {:.1} ms beyond it",
            (big.as_secs_f64() - trivial.as_secs_f64() - raw_load.as_secs_f64()) * 1e3
        );
    } else {
        println!("(build the CLI with `cargo build --release` for the new-process figures)");
    }
    if std::env::var_os("WASMPOOL_BIG_KEEP").is_some() {
        println!("kept {} for inspection", cache.display());
        std::mem::forget(dir);
    }
    Ok(())
}

/// One run of the cached image `big` in a fresh runtime on `cache`: create to exit.
fn run_once(cache: &Path) -> Result<Duration> {
    let runtime = WasmRuntime::new(WasmConfig {
        cache_dir: cache.to_path_buf(),
        workers: 2,
        ..Default::default()
    })?;
    let spec = ServiceSpec {
        image: ImageSpec::new("big"),
        ..Default::default()
    };
    let id = ContainerId::new("big", 1);
    let begin = Instant::now();
    runtime.create_container(&id, &spec)?;
    let outcome = runtime.start(&id)?.wait();
    let elapsed = begin.elapsed();
    anyhow::ensure!(
        outcome == Outcome::Exited(0),
        "the big program ended: {outcome}"
    );
    Ok(elapsed)
}

/// wasmtime's compile time and artifact for `program`, with or without fuel.
fn compile_raw(program: &[u8], fuel: bool) -> Result<(Duration, Vec<u8>)> {
    let engine = wasmtime::Engine::new(wasmtime::Config::new().consume_fuel(fuel))?;
    let begin = Instant::now();
    let artifact = engine.precompile_module(program)?;
    Ok((begin.elapsed(), artifact))
}

fn folder_bytes(folder: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(folder)? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A valid module of about `target` bytes: `_start` (which returns at once),
/// a memory, and as many `(i32) -> i32` arithmetic functions as fit, every one
/// of them in an exported funcref table.
fn big_program(target: usize) -> Vec<u8> {
    const OPS_PER_FUNCTION: u32 = 40;
    let body: Vec<u8> = {
        let mut code = vec![0u8]; // no locals
        code.extend([0x20, 0x00]); // local.get 0
        for k in 0..OPS_PER_FUNCTION {
            code.push(0x41); // i32.const
            leb(&mut code, u64::from(k * 37 + 1));
            code.push(0x6a); // i32.add
            code.extend([0x41, 0x03, 0x6c]); // i32.const 3; i32.mul
        }
        code.push(0x0b); // end
        code
    };
    let functions = (target / (body.len() + 8)).max(1) as u64;
    let start = functions; // `_start` comes after them

    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // Types: 0 = (i32) -> i32, 1 = () -> ().
    section(&mut module, 1, |s| {
        leb(s, 2);
        s.extend([0x60, 1, 0x7f, 1, 0x7f]);
        s.extend([0x60, 0, 0]);
    });
    section(&mut module, 3, |s| {
        leb(s, functions + 1);
        for _ in 0..functions {
            s.push(0);
        }
        s.push(1);
    });
    section(&mut module, 4, |s| {
        leb(s, 1);
        s.extend([0x70, 0x00]);
        leb(s, functions);
    });
    section(&mut module, 5, |s| s.extend([1, 0x00, 1]));
    section(&mut module, 7, |s| {
        leb(s, 2);
        name(s, "memory");
        s.extend([0x02, 0]);
        name(s, "_start");
        s.push(0x00);
        leb(s, start);
    });
    section(&mut module, 9, |s| {
        leb(s, 1);
        s.extend([0x00, 0x41, 0x00, 0x0b]); // active, table 0, offset i32.const 0
        leb(s, functions);
        for f in 0..functions {
            leb(s, f);
        }
    });
    section(&mut module, 10, |s| {
        leb(s, functions + 1);
        for _ in 0..functions {
            leb(s, body.len() as u64);
            s.extend(&body);
        }
        s.extend([2, 0, 0x0b]); // `_start`: no locals, end
    });
    module
}

fn section(module: &mut Vec<u8>, id: u8, fill: impl FnOnce(&mut Vec<u8>)) {
    let mut contents = Vec::new();
    fill(&mut contents);
    module.push(id);
    leb(module, contents.len() as u64);
    module.extend(contents);
}

fn name(out: &mut Vec<u8>, text: &str) {
    leb(out, text.len() as u64);
    out.extend(text.as_bytes());
}

fn leb(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
