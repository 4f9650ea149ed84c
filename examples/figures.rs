//! The README's speed figures in one quick run, without criterion: lifecycle
//! latency, throughput, stop latency percentiles, the memory of many created
//! instances, 10,000 sleeping guests on two workers, and a short guest beside
//! a spinner on one worker. Numbers are rough; ratios are the point.
//!
//! Run with `cargo run --release --example figures`.

use anyhow::Result;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmpool::{
    ContainerId, ContainerState, Outcome, Runtime, ServiceSpec, WasmConfig, WasmRuntime,
};

const TRIVIAL: &str = r#"(module
    (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
    (memory (export "memory") 1)
    (func (export "_start") (call $exit (i32.const 0))))"#;

fn runtime(
    workers: usize,
    tweak: impl FnOnce(&mut WasmConfig),
) -> Result<(tempfile::TempDir, Arc<WasmRuntime>)> {
    let dir = tempfile::tempdir()?;
    let mut config = WasmConfig {
        cache_dir: dir.path().into(),
        workers,
        queue_limit: 20_000,
        ..Default::default()
    };
    tweak(&mut config);
    Ok((dir, Arc::new(WasmRuntime::new(config)?)))
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() -> Result<()> {
    let trivial = wat::parse_str(TRIVIAL)?;
    let spec = ServiceSpec::default();

    // 1. Lifecycle latency, one caller.
    let (_dir, rt) = runtime(2, |_| {})?;
    let mut latencies = Vec::new();
    for i in 0..20_000u32 {
        let id = ContainerId::new("lat", i);
        let begin = Instant::now();
        rt.create_container_from_bytes(&id, &spec, &trivial)?;
        assert_eq!(rt.start(&id)?.wait(), Outcome::Exited(0));
        rt.remove_container(&id)?;
        latencies.push(begin.elapsed());
    }
    latencies.sort();
    println!(
        "lifecycle (create+start+wait+remove), 1 caller: p50 {:.1?}, p99 {:.1?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );

    // 2. Throughput: 10,000 instances, 2 workers, 4 callers.
    let begin = Instant::now();
    let callers: Vec<_> = (0..4)
        .map(|caller| {
            let (rt, wasm) = (rt.clone(), trivial.clone());
            std::thread::spawn(move || -> wasmpool::Result<()> {
                for i in 0..2_500u32 {
                    let id = ContainerId::new(format!("tp-{caller}"), i);
                    rt.create_container_from_bytes(&id, &ServiceSpec::default(), &wasm)?;
                    assert_eq!(rt.start(&id)?.wait(), Outcome::Exited(0));
                    rt.remove_container(&id)?;
                }
                Ok(())
            })
        })
        .collect();
    for caller in callers {
        caller.join().expect("caller thread")?;
    }
    println!(
        "throughput: {:.0} instances/s (10,000 on 2 workers from 4 callers)",
        10_000.0 / begin.elapsed().as_secs_f64()
    );

    // 3. Stop latency, spinning and sleeping guests.
    let (_dir, rt1) = runtime(1, |_| {})?;
    for (name, wat) in [
        (
            "spinning",
            r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#,
        ),
        (
            "sleeping",
            r#"(module
            (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "_start")
                (i32.store (i32.const 16) (i32.const 1))
                (i64.store (i32.const 24) (i64.const 3600000000000))
                (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#,
        ),
    ] {
        let wasm = wat::parse_str(wat)?;
        let mut stops = Vec::new();
        for i in 0..200u32 {
            let id = ContainerId::new(name, i);
            rt1.create_container_from_bytes(&id, &spec, &wasm)?;
            let handle = rt1.start(&id)?;
            while rt1.container_state(&id)? == ContainerState::Pending {
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_millis(1));
            let begin = Instant::now();
            rt1.stop_container(&id, Duration::from_secs(5))?;
            stops.push(begin.elapsed());
            assert_eq!(handle.try_wait(), Some(Outcome::Stopped));
            rt1.remove_container(&id)?;
        }
        stops.sort();
        println!(
            "stop latency, {name}: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
            percentile(&stops, 0.5),
            percentile(&stops, 0.99),
            percentile(&stops, 1.0)
        );
    }

    // 4. Memory of 10,000 created, not started, instances of one image.
    let (_dir, rt) = runtime(2, |_| {})?;
    let before = resident_bytes();
    for i in 0..10_000u32 {
        rt.create_container_from_bytes(&ContainerId::new("rss", i), &spec, &trivial)?;
    }
    let after = resident_bytes();
    println!(
        "memory: 10,000 created instances add {:.1} MB resident",
        (after.saturating_sub(before)) as f64 / 1e6
    );
    drop(rt);

    // 5. Many guests per worker: 10,000 guests that each sleep 1 s, on 2 workers.
    let sleeper = wat::parse_str(
        r#"(module
        (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "_start")
            (i32.store (i32.const 16) (i32.const 1))
            (i64.store (i32.const 24) (i64.const 1000000000))
            (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#,
    )?;
    let (_dir, rt) = runtime(2, |_| {})?;
    let before = resident_bytes();
    let begin = Instant::now();
    let handles = (0..10_000u32)
        .map(|i| {
            let id = ContainerId::new("sleeper", i);
            rt.create_container_from_bytes(&id, &spec, &sleeper)?;
            rt.start(&id)
        })
        .collect::<wasmpool::Result<Vec<_>>>()?;
    let started = begin.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let live = resident_bytes().saturating_sub(before);
    for handle in &handles {
        assert_eq!(handle.wait(), Outcome::Exited(0));
    }
    println!(
        "10,000 one-second sleepers on 2 workers: all exited {:.2?} after the first start \
         (starting them took {started:.2?}); {:.0} MB resident while live, {:.1} KiB per live guest",
        begin.elapsed(),
        live as f64 / 1e6,
        live as f64 / 10_000.0 / 1024.0
    );
    drop(handles);
    drop(rt);

    // 6. A short guest beside a spinner on a pool of one worker. Waited with a
    // timeout, so the worker itself runs it (`wait` would run it on this thread).
    let (_dir, rt) = runtime(1, |_| {})?;
    let count = |n: u64| {
        wat::parse_str(format!(
            r#"(module (memory (export "memory") 1)
            (func (export "_start") (local $i i64)
                (loop $l (local.set $i (i64.add (local.get $i) (i64.const 1)))
                    (br_if $l (i64.lt_u (local.get $i) (i64.const {n}))))))"#
        ))
    };
    let work = count(400_000_000)?;
    let run_spinner = |name: &str| -> Result<Duration> {
        let id = ContainerId::new(name, 0);
        rt.create_container_from_bytes(&id, &spec, &work)?;
        let begin = Instant::now();
        let handle = rt.start(&id)?;
        handle.wait_timeout(Duration::from_secs(600));
        Ok(begin.elapsed())
    };
    let alone = run_spinner("alone")?;
    let id = ContainerId::new("beside", 0);
    rt.create_container_from_bytes(&id, &spec, &work)?;
    let begin = Instant::now();
    let spinner = rt.start(&id)?;
    let mut waits = Vec::new();
    for i in 0..100u32 {
        let id = ContainerId::new("short", i);
        rt.create_container_from_bytes(&id, &spec, &trivial)?;
        let started = Instant::now();
        let handle = rt.start(&id)?;
        assert_eq!(
            handle.wait_timeout(Duration::from_secs(10)),
            Some(Outcome::Exited(0))
        );
        waits.push(started.elapsed());
    }
    spinner.wait_timeout(Duration::from_secs(600));
    let beside = begin.elapsed();
    waits.sort();
    println!(
        "one worker, one spinner: a short guest beside it exits in p50 {:.2?} (max {:.2?}); \
         the spinner took {alone:.2?} alone and {beside:.2?} while 100 short guests passed ({:+.1}%)",
        percentile(&waits, 0.5),
        percentile(&waits, 1.0),
        (beside.as_secs_f64() / alone.as_secs_f64() - 1.0) * 100.0
    );
    Ok(())
}
