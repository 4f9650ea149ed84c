//! Criterion benchmarks of wasmpool against raw wasmtime on the same machine.
//!
//! Run with `cargo bench --bench runtime`; `cargo bench --bench runtime -- lifecycle`
//! runs one group. The README's table reports ratios of one run.

#[path = "common/busy.rs"]
mod busy;

use busy::BusyHost;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use wasmpool::{
    ContainerId, ContainerState, Outcome, Runtime, ServiceSpec, WasmConfig, WasmRuntime,
};

const TRIVIAL: &str = r#"(module
    (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
    (memory (export "memory") 1)
    (func (export "_start") (call $exit (i32.const 0))))"#;

const SPIN: &str =
    r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#;

fn count_loop(n: u64) -> String {
    format!(
        r#"(module (memory (export "memory") 1)
            (func (export "_start") (local $i i64) (local $acc i64)
                (loop $l
                    (local.set $acc (i64.add (local.get $acc) (i64.mul (local.get $i) (i64.const 3))))
                    (local.set $i (i64.add (local.get $i) (i64.const 1)))
                    (br_if $l (i64.lt_u (local.get $i) (i64.const {n}))))
                (if (i64.eq (local.get $acc) (i64.const 42)) (then unreachable))))"#
    )
}

fn sleeper() -> String {
    r#"(module
        (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "_start")
            (i32.store8 (i32.const 8) (i32.const 0))
            (i32.store (i32.const 16) (i32.const 1))
            (i64.store (i32.const 24) (i64.const 3600000000000))
            (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#
        .to_string()
}

fn hello_lines(n: u32) -> String {
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 64) "hello, world\0a")
            (func (export "_start") (local $i i32)
                (loop $l
                    (i32.store (i32.const 0) (i32.const 64))
                    (i32.store (i32.const 4) (i32.const 13))
                    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                    (local.set $i (i32.add (local.get $i) (i32.const 1)))
                    (br_if $l (i32.lt_u (local.get $i) (i32.const {n}))))))"#
    )
}

/// A module of about 195 KiB: many small functions, so compiling it takes real work.
fn big_module() -> Vec<u8> {
    let mut wat = String::from("(module (memory (export \"memory\") 1)\n");
    for i in 0..2700 {
        wat.push_str(&format!(
            "(func $f{i} (param $x i32) (result i32) (local $y i32)
               (local.set $y (i32.mul (local.get $x) (i32.const {i})))
               (if (i32.gt_s (local.get $y) (i32.const 1000))
                 (then (local.set $y (i32.sub (local.get $y) (i32.load (i32.const {m})))))
                 (else (local.set $y (i32.add (local.get $y) (i32.const 7)))))
               (i32.store (i32.const {m}) (local.get $y))
               (i32.xor (local.get $y) (i32.rotl (local.get $x) (i32.const 3))))\n",
            m = (i % 1000) * 4
        ));
    }
    wat.push_str("(func (export \"_start\") (drop (call $f1 (i32.const 5)))))");
    wat::parse_str(&wat).unwrap()
}

fn component(wat: &str) -> Vec<u8> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
    };
    wit_component::ComponentEncoder::default()
        .module(&wat::parse_str(wat).unwrap())
        .unwrap()
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        )
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

fn runtime(
    cache: &std::path::Path,
    workers: usize,
    tweak: impl FnOnce(&mut WasmConfig),
) -> Arc<WasmRuntime> {
    let mut config = WasmConfig {
        cache_dir: cache.into(),
        workers,
        queue_limit: 20_000,
        ..Default::default()
    };
    tweak(&mut config);
    Arc::new(WasmRuntime::new(config).unwrap())
}

/// create + start + wait + remove, checking the outcome.
fn lifecycle(rt: &WasmRuntime, id: &ContainerId, spec: &ServiceSpec, wasm: &[u8]) {
    rt.create_container_from_bytes(id, spec, wasm).unwrap();
    assert_eq!(rt.start(id).unwrap().wait(), Outcome::Exited(0));
    rt.remove_container(id).unwrap();
}

fn bench_lifecycle(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), 2, |_| {});
    let spec = ServiceSpec::default();
    let id = ContainerId::new("bench", 0);
    let mut group = c.benchmark_group("lifecycle");
    for (name, wasm) in [
        ("p1_module", wat::parse_str(TRIVIAL).unwrap()),
        ("p2_component", component(TRIVIAL)),
    ] {
        lifecycle(&rt, &id, &spec, &wasm);
        group.bench_function(name, |b| b.iter(|| lifecycle(&rt, &id, &spec, &wasm)));
    }
    group.finish();
}

/// Raw wasmtime, the floor: a pooled engine, fuel with the same slice,
/// `InstancePre`, the async WASI linker, a fresh store and context per run,
/// polled on the calling thread.
struct Raw {
    engine: wasmtime::Engine,
    module: wasmtime::InstancePre<wasmtime_wasi::p1::WasiP1Ctx>,
    component: wasmtime::component::InstancePre<RawP2>,
}

struct RawP2 {
    ctx: wasmtime_wasi::WasiCtx,
    table: wasmtime::component::ResourceTable,
}

impl wasmtime_wasi::WasiView for RawP2 {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// The floor's engine: pooling and fuel, as `Raw` and wasmpool's pooled engine.
fn raw_engine() -> wasmtime::Engine {
    use wasmtime::*;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_stacks(8)
        .total_core_instances(64)
        .total_memories(32)
        .total_tables(64)
        .total_component_instances(8);
    let mut config = Config::new();
    config.consume_fuel(true);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).unwrap()
}

/// wasmtime's own cache hit: a fresh engine loads a precompiled artifact
/// from a file (`Module::deserialize_file`) and runs it once.
fn raw_first_run_from_file(engine: &wasmtime::Engine, path: &std::path::Path) {
    use wasmtime::*;
    // SAFETY: the file was written by `precompile_module` of this configuration.
    let module = unsafe { Module::deserialize_file(engine, path) }.unwrap();
    let mut linker: Linker<wasmtime_wasi::p1::WasiP1Ctx> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |cx| cx).unwrap();
    let pre = linker.instantiate_pre(&module).unwrap();
    let mut store = Store::new(engine, wasmtime_wasi::WasiCtxBuilder::new().build_p1());
    store.set_fuel(u64::MAX).unwrap();
    store.fuel_async_yield_interval(Some(100_000)).unwrap();
    drive(async {
        let instance = pre.instantiate_async(&mut store).await.unwrap();
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .unwrap();
        start.call_async(&mut store, ()).await.unwrap();
    });
}

impl Raw {
    fn new() -> Self {
        use wasmtime::*;
        let engine = raw_engine();
        let mut linker: Linker<wasmtime_wasi::p1::WasiP1Ctx> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |cx| cx).unwrap();
        let module = linker
            .instantiate_pre(&Module::new(&engine, TRIVIAL).unwrap())
            .unwrap();
        let mut linker = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        let bytes = component(TRIVIAL);
        let component = linker
            .instantiate_pre(&wasmtime::component::Component::new(&engine, &bytes).unwrap())
            .unwrap();
        Raw {
            engine,
            module,
            component,
        }
    }

    fn module_lifecycle(&self) {
        let mut store = wasmtime::Store::new(
            &self.engine,
            wasmtime_wasi::WasiCtxBuilder::new().build_p1(),
        );
        store.set_fuel(u64::MAX).unwrap();
        store.fuel_async_yield_interval(Some(100_000)).unwrap();
        let result = drive(async {
            let instance = self.module.instantiate_async(&mut store).await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        });
        let exit = result.unwrap_err();
        assert_eq!(exit.downcast_ref::<wasmtime_wasi::I32Exit>().unwrap().0, 0);
    }

    fn component_lifecycle(&self) {
        let state = RawP2 {
            ctx: wasmtime_wasi::WasiCtxBuilder::new().build(),
            table: wasmtime::component::ResourceTable::new(),
        };
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.set_fuel(u64::MAX).unwrap();
        store.fuel_async_yield_interval(Some(100_000)).unwrap();
        let result = drive(async {
            let instance = self.component.instantiate_async(&mut store).await?;
            let run = instance
                .get_export_index(&mut store, None, "wasi:cli/run@0.2.12")
                .and_then(|i| instance.get_export_index(&mut store, Some(&i), "run"))
                .unwrap();
            let run = instance.get_typed_func::<(), (Result<(), ()>,)>(&mut store, &run)?;
            run.call_async(&mut store, ()).await
        });
        // Through the adapter, `proc_exit(0)` arrives as `I32Exit(0)`.
        match result {
            Ok(result) => assert_eq!(result, (Ok(()),)),
            Err(exit) => assert_eq!(exit.downcast_ref::<wasmtime_wasi::I32Exit>().unwrap().0, 0),
        }
    }
}

/// Polls a future to its end on this thread, as wasmtime's examples do.
fn drive<T>(future: impl Future<Output = T>) -> T {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        let polled =
            wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| future.as_mut().poll(&mut cx));
        if let Poll::Ready(output) = polled {
            return output;
        }
    }
}

/// Median and tail of single lifecycles — criterion's means hide that one in
/// ten can be slow — through the `Runtime` trait with a fresh id each time,
/// against the floor, from one run; printed as a table.
fn bench_tail(c: &mut Criterion) {
    // Not a criterion benchmark: run it when no filter or `lifecycle_tail` is given.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !"lifecycle_tail".contains(f.as_str())) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), 2, |_| {});
    let raw = Raw::new();
    let spec = ServiceSpec::default();
    let wasm = wat::parse_str(TRIVIAL).unwrap();
    let n = 20_000;
    let mut next = 0u32;
    let mut ours = |record: &mut Vec<Duration>| {
        next += 1;
        let id = ContainerId::new("tail", next);
        let begin = Instant::now();
        rt.create_container_from_bytes(&id, &spec, &wasm).unwrap();
        rt.start_container(&id).unwrap();
        assert_eq!(rt.wait_container(&id).unwrap(), 0);
        rt.remove_container(&id).unwrap();
        record.push(begin.elapsed());
    };
    let floor = |record: &mut Vec<Duration>| {
        let begin = Instant::now();
        raw.module_lifecycle();
        record.push(begin.elapsed());
    };
    let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..1000 {
        ours(&mut a);
        floor(&mut b);
    }
    let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    // Interleaved, so both see the same machine.
    for _ in 0..n {
        ours(&mut a);
        floor(&mut b);
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
    };
    println!("\nlifecycle of a trivial p1 module, {n} each (create, start, wait, remove vs raw InstancePre):");
    for (label, p) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)] {
        let (x, y) = (pct(&mut a, p), pct(&mut b, p));
        println!(
            "  {label}: wasmpool {:>6.2} µs  floor {:>6.2} µs  ratio {:.2}",
            x.as_secs_f64() * 1e6,
            y.as_secs_f64() * 1e6,
            x.as_secs_f64() / y.as_secs_f64()
        );
    }
    let _ = c;
}

fn bench_baseline(c: &mut Criterion) {
    let raw = Raw::new();
    c.bench_function("baseline/raw_wasmtime_instance_pre", |b| {
        b.iter(|| raw.module_lifecycle())
    });
    c.bench_function("baseline/raw_wasmtime_component", |b| {
        b.iter(|| raw.component_lifecycle())
    });
}

/// The lifecycle and the raw floor again, with two busy competitor processes.
fn bench_loaded(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), 2, |_| {});
    let raw = Raw::new();
    let spec = ServiceSpec::default();
    let id = ContainerId::new("loaded", 0);
    let wasm = wat::parse_str(TRIVIAL).unwrap();
    lifecycle(&rt, &id, &spec, &wasm);
    let _busy = BusyHost::start();
    let mut group = c.benchmark_group("loaded");
    group.bench_function("p1_module", |b| {
        b.iter(|| lifecycle(&rt, &id, &spec, &wasm))
    });
    group.bench_function("raw_wasmtime_instance_pre", |b| {
        b.iter(|| raw.module_lifecycle())
    });
    group.finish();
}

/// A create from the image cache of an unchanged 64 MiB image, and its remove.
fn bench_create_large_image(c: &mut Criterion) {
    use wasmpool::ImageSpec;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), 1, |_| {});
    let mut module = String::from("(module (memory (export \"memory\") 1024)\n");
    let chunk = "\\2a".repeat(1 << 20);
    for mib in 0..64 {
        module.push_str(&format!("(data (i32.const {}) \"{chunk}\")\n", mib << 20));
    }
    module.push_str("(func (export \"_start\")))");
    let bytes = wat::parse_str(&module).unwrap();
    std::fs::write(dir.path().join("large.wasm"), &bytes).unwrap();
    let spec = ServiceSpec {
        image: ImageSpec::new("large"),
        ..Default::default()
    };
    let id = ContainerId::new("large", 0);
    rt.create_container(&id, &spec).unwrap();
    rt.remove_container(&id).unwrap();
    c.bench_function("create/unchanged_64mib_image", |b| {
        b.iter(|| {
            rt.create_container(&id, &spec).unwrap();
            rt.remove_container(&id).unwrap();
        })
    });
}

/// `total` instances through a pool of 2 workers from 4 caller threads.
fn run_many(rt: &Arc<WasmRuntime>, wasm: &Arc<Vec<u8>>, total: usize) {
    let callers = 4;
    let threads: Vec<_> = (0..callers)
        .map(|caller| {
            let (rt, wasm) = (rt.clone(), wasm.clone());
            std::thread::spawn(move || {
                let spec = ServiceSpec::default();
                for i in 0..total / callers {
                    let id = ContainerId::new(format!("many-{caller}"), i as u32);
                    lifecycle(&rt, &id, &spec, &wasm);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

/// Throughput against the floor in alternating rounds, so that both see the
/// same machine (this VM's speed moves between runs by more than the gap):
/// 20 rounds of 10,000 lifecycles each way, medians printed as a table.
fn bench_throughput_interleaved(c: &mut Criterion) {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !"throughput_interleaved".contains(f.as_str())) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), 2, |_| {});
    let raw = Raw::new();
    let wasm = Arc::new(wat::parse_str(TRIVIAL).unwrap());
    let total = 10_000;
    run_many(&rt, &wasm, 1_000);
    let (mut ours, mut floor, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..20 {
        let begin = Instant::now();
        run_many(&rt, &wasm, total);
        let a = total as f64 / begin.elapsed().as_secs_f64();
        let begin = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| (0..total / 2).for_each(|_| raw.module_lifecycle()));
            }
        });
        let b = total as f64 / begin.elapsed().as_secs_f64();
        ours.push(a);
        floor.push(b);
        ratios.push(a / b);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (lo, hi) = {
        ratios.sort_by(f64::total_cmp);
        (ratios[0], ratios[ratios.len() - 1])
    };
    println!(
        "\nthroughput, 10,000 p1 instances, 2 workers, 4 callers, 20 alternating rounds:\n  \
         wasmpool median {:.0}/s, floor (raw, 2 threads) median {:.0}/s, ratio median {:.2} (range {lo:.2}–{hi:.2})",
        median(&mut ours),
        median(&mut floor),
        median(&mut ratios),
    );
    let _ = c;
}

fn bench_throughput(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), 2, |_| {});
    let mut group = c.benchmark_group("throughput");
    group.sample_size(10);
    for (name, wasm, total) in [
        ("p1_module_10k", wat::parse_str(TRIVIAL).unwrap(), 10_000),
        ("p2_component_2k", component(TRIVIAL), 2_000),
    ] {
        let wasm = Arc::new(wasm);
        run_many(&rt, &wasm, 100);
        group.throughput(Throughput::Elements(total as u64));
        group.bench_function(name, |b| b.iter(|| run_many(&rt, &wasm, total)));
    }
    // The floor: raw wasmtime on two threads, each running its own lifecycles.
    let raw = Raw::new();
    let total = 4_000;
    group.throughput(Throughput::Elements(total as u64));
    group.bench_function("raw_wasmtime_2_threads", |b| {
        b.iter(|| {
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| (0..total / 2).for_each(|_| raw.module_lifecycle()));
                }
            })
        })
    });
    group.finish();
}

fn bench_cold_start(c: &mut Criterion) {
    let wasm = big_module();
    eprintln!("cold start module: {} KiB", wasm.len() / 1024);
    let spec = ServiceSpec::default();
    let id = ContainerId::new("cold", 0);
    let mut group = c.benchmark_group("cold_start_195k");
    group.sample_size(10);
    for (name, use_disk) in [("compile", false), ("disk_cache_hit", true)] {
        let dir = tempfile::tempdir().unwrap();
        if use_disk {
            // Warm the on-disk cache once.
            lifecycle(&runtime(dir.path(), 1, |_| {}), &id, &spec, &wasm);
        }
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // A fresh runtime each time: only the first run of the artifact is timed.
                    let rt = runtime(dir.path(), 1, |c| c.compiled_cache = use_disk);
                    let begin = Instant::now();
                    lifecycle(&rt, &id, &spec, &wasm);
                    total += begin.elapsed();
                }
                total
            })
        });
    }
    // The floor: wasmtime's own load of the same artifact in a fresh engine.
    let dir = tempfile::tempdir().unwrap();
    let artifact = dir.path().join("big.cwasm");
    std::fs::write(&artifact, raw_engine().precompile_module(&wasm).unwrap()).unwrap();
    group.bench_function("raw_wasmtime_deserialize_file", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let engine = raw_engine();
                let begin = Instant::now();
                raw_first_run_from_file(&engine, &artifact);
                total += begin.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn bench_hello_1000_lines(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), 2, |_| {});
    let wasm = wat::parse_str(hello_lines(1000)).unwrap();
    let id = ContainerId::new("hello", 0);
    c.bench_function("hello_1000_lines", |b| {
        b.iter(|| {
            rt.create_container_from_bytes(&id, &ServiceSpec::default(), &wasm)
                .unwrap();
            assert_eq!(rt.start(&id).unwrap().wait(), Outcome::Exited(0));
            assert_eq!(rt.get_logs(&id).unwrap().len(), 1000, "every line arrived");
            rt.remove_container(&id).unwrap();
        })
    });
}

fn bench_stop_latency(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), 1, |_| {});
    let mut group = c.benchmark_group("stop_latency");
    group.sample_size(30);
    for (name, wasm) in [
        ("spinning", wat::parse_str(SPIN).unwrap()),
        ("sleeping", wat::parse_str(sleeper()).unwrap()),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let id = ContainerId::new(name, i as u32);
                    rt.create_container_from_bytes(&id, &ServiceSpec::default(), &wasm)
                        .unwrap();
                    let handle = rt.start(&id).unwrap();
                    while rt.container_state(&id).unwrap() == ContainerState::Pending {
                        std::thread::yield_now();
                    }
                    // Let the guest settle into its loop or its sleep.
                    std::thread::sleep(Duration::from_millis(2));
                    let begin = Instant::now();
                    rt.stop_container(&id, Duration::from_secs(5)).unwrap();
                    total += begin.elapsed();
                    assert_eq!(handle.try_wait(), Some(Outcome::Stopped));
                    rt.remove_container(&id).unwrap();
                }
                total
            })
        });
    }
    group.finish();
}

/// A CPU-bound guest: unmetered raw wasmtime, raw wasmtime with plain fuel,
/// and wasmpool at several fuel slices.
fn bench_metering(c: &mut Criterion) {
    use wasmtime::*;
    let guest = count_loop(20_000_000);
    let mut group = c.benchmark_group("metering_cpu_bound");
    group.sample_size(10);
    for fuel in [false, true] {
        let mut config = Config::new();
        config.consume_fuel(fuel);
        let engine = Engine::new(&config).unwrap();
        let module = Module::new(&engine, &guest).unwrap();
        let name = if fuel {
            "raw_plain_fuel"
        } else {
            "raw_unmetered"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut store = Store::new(&engine, ());
                if fuel {
                    store.set_fuel(u64::MAX).unwrap();
                }
                let instance = Instance::new(&mut store, &module, &[]).unwrap();
                let start = instance
                    .get_typed_func::<(), ()>(&mut store, "_start")
                    .unwrap();
                start.call(&mut store, ()).unwrap();
            })
        });
    }
    let wasm = wat::parse_str(&guest).unwrap();
    for slice in [10_000u64, 100_000, 1_000_000] {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path(), 1, |c| c.fuel_slice = slice);
        let id = ContainerId::new("meter", 0);
        group.bench_with_input(BenchmarkId::new("wasmpool_slice", slice), &slice, |b, _| {
            b.iter(|| lifecycle(&rt, &id, &ServiceSpec::default(), &wasm))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench_tail, bench_throughput_interleaved, bench_lifecycle, bench_baseline, bench_throughput, bench_cold_start,
        bench_hello_1000_lines, bench_stop_latency, bench_metering, bench_loaded,
        bench_create_large_image
}
criterion_main!(benches);
