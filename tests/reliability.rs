//! Load with faults, mutated inputs and resource hygiene: nothing lost, nothing leaked.
//!
//! Tests that count threads, file descriptors or resident memory run alone in
//! a child process (an ignored test of this binary), so neighbouring tests
//! cannot disturb the counts.

use crate::common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmpool::{Outcome, Runtime, ServiceSpec, WasmRuntime, WasmSpec};

/// A small deterministic generator (xorshift64*), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let seed = std::env::var("WASMPOOL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_1234_abcd_0001);
        eprintln!("seed {seed} (replay with WASMPOOL_SEED={seed})");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn threads_now() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn fd_list() -> String {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn resident_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / 1e6
}

/// What a soak instance does, and the one outcome it must end with.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Exit(i32),
    Trap,
    OutOfFuel,
    MemoryLimit,
    Deadline,
    StopMidRun,
    RemoveMidRun,
    Garbage,
    ShortSleep,
}

struct Fixtures {
    exit: Vec<Vec<u8>>,
    trap: Vec<u8>,
    spin: Vec<u8>,
    grow: Vec<u8>,
    nap: Vec<u8>,
}

impl Kind {
    fn pick(rng: &mut Rng) -> Kind {
        match rng.below(100) {
            0..=39 => Kind::Exit(rng.below(5) as i32),
            40..=49 => Kind::Trap,
            50..=57 => Kind::OutOfFuel,
            58..=65 => Kind::MemoryLimit,
            66..=67 => Kind::Deadline,
            68..=75 => Kind::StopMidRun,
            76..=83 => Kind::RemoveMidRun,
            84..=91 => Kind::Garbage,
            _ => Kind::ShortSleep,
        }
    }

    fn spec_and_wasm(self, f: &Fixtures) -> (ServiceSpec, &[u8]) {
        let limits = |fuel, memory: Option<&str>, deadline| ServiceSpec {
            wasm: Some(WasmSpec {
                max_fuel: fuel,
                max_memory: memory.map(str::to_string),
                trap_on_grow_failure: true,
                max_execution_time: deadline,
                ..Default::default()
            }),
            ..Default::default()
        };
        match self {
            Kind::Exit(code) => (ServiceSpec::default(), &f.exit[code as usize]),
            Kind::Trap => (ServiceSpec::default(), &f.trap),
            Kind::OutOfFuel => (limits(Some(20_000), None, None), &f.spin),
            Kind::MemoryLimit => (limits(None, Some("64Ki"), None), &f.grow),
            Kind::Deadline => (limits(None, None, Some(Duration::from_millis(3))), &f.spin),
            Kind::StopMidRun | Kind::RemoveMidRun => (ServiceSpec::default(), &f.spin),
            Kind::Garbage => (ServiceSpec::default(), b"\0asm\x01\0\0\0\x05garbage"),
            Kind::ShortSleep => (ServiceSpec::default(), &f.nap),
        }
    }

    fn matches(self, outcome: &Outcome) -> bool {
        match (self, outcome) {
            (Kind::Exit(code), Outcome::Exited(got)) => code == *got,
            (Kind::Trap, Outcome::Trapped(message)) => message.contains("unreachable"),
            (Kind::OutOfFuel, Outcome::OutOfFuel { budget: 20_000 }) => true,
            (Kind::MemoryLimit, Outcome::MemoryLimit { limit: 65_536 }) => true,
            (Kind::Deadline, Outcome::DeadlineExceeded(d)) => *d == Duration::from_millis(3),
            (Kind::StopMidRun | Kind::RemoveMidRun, Outcome::Stopped) => true,
            (Kind::Garbage, Outcome::Failed(reason)) => {
                reason.starts_with("invalid WebAssembly module")
            }
            (Kind::ShortSleep, Outcome::Exited(0)) => true,
            _ => false,
        }
    }
}

/// Runs `count` random instances through `rt`, waited on by three threads; returns the mismatches.
fn soak_batch(
    rt: &Arc<WasmRuntime>,
    fixtures: &Fixtures,
    rng: &mut Rng,
    first: u32,
    count: u32,
) -> Vec<String> {
    let mut launched = Vec::new();
    for n in first..first + count {
        let kind = Kind::pick(rng);
        let id = wasmpool::ContainerId::new("soak", n);
        let (spec, bytes) = kind.spec_and_wasm(fixtures);
        rt.create_container_from_bytes(&id, &spec, bytes).unwrap();
        let handle = rt.start(&id).unwrap();
        match kind {
            Kind::StopMidRun => rt.stop_container(&id, Duration::from_secs(10)).unwrap(),
            Kind::RemoveMidRun => rt.remove_container(&id).unwrap(),
            _ => {}
        }
        launched.push((id, kind, handle));
    }
    let launched = Arc::new(launched);
    let waiters: Vec<_> = (0..3)
        .map(|w| {
            let launched = launched.clone();
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                for (id, kind, handle) in launched.iter().skip(w).step_by(3) {
                    let outcome = handle.wait();
                    if !kind.matches(&outcome) {
                        bad.push(format!("{id}: {kind:?} ended as {outcome:?}"));
                    }
                }
                bad
            })
        })
        .collect();
    let mut bad: Vec<String> = waiters
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    for (id, kind, handle) in launched.iter() {
        // Every handle saw exactly one outcome: a second look agrees with the state.
        if !matches!(kind, Kind::RemoveMidRun) {
            let state = rt.container_state(id).unwrap();
            if state != handle.try_wait().unwrap().state() {
                bad.push(format!("{id}: state {state:?} disagrees with its outcome"));
            }
            rt.remove_container(id).unwrap();
        }
    }
    bad
}

#[test]
fn soak_with_faults_loses_nothing_and_leaks_nothing() {
    run_alone("reliability::soak_alone");
}

#[test]
#[ignore = "run alone by soak_with_faults_loses_nothing_and_leaks_nothing"]
fn soak_alone() {
    let total: u32 = std::env::var("WASMPOOL_SOAK_INSTANCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let fixtures = Fixtures {
        exit: (0..5).map(|c| wasm(&exit_module(c))).collect(),
        trap: wasm(UNREACHABLE),
        spin: wasm(SPIN),
        grow: wasm(&grow_module(1, 1)),
        nap: wasm(&sleep_module(200_000)),
    };
    let (_dir, rt) = runtime_with(2, |c| c.queue_limit = 1_000);
    let mut rng = Rng::seeded();
    let batch = 500;
    let mut bad = soak_batch(&rt, &fixtures, &mut rng, 0, batch);
    let (threads, fds, rss) = (threads_now(), fds_now(), resident_mb());
    let started = Instant::now();
    let mut done = batch;
    while done < total {
        bad.extend(soak_batch(&rt, &fixtures, &mut rng, done, batch));
        done += batch;
    }
    eprintln!(
        "soak: {done} instances in {:.1?}; threads {threads} -> {}, fds {fds} -> {}, rss {rss:.1} MB -> {:.1} MB",
        started.elapsed(),
        threads_now(),
        fds_now(),
        resident_mb()
    );
    assert!(
        bad.is_empty(),
        "{} mismatches, first: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert!(
        rt.container_ids().is_empty(),
        "the registry is empty after removal"
    );
    assert_eq!(threads_now(), threads, "live threads are flat");
    assert_eq!(fds_now(), fds, "file descriptors are flat");
    assert!(
        resident_mb() < rss + 32.0,
        "resident memory grew from {rss:.1} MB to {:.1} MB",
        resident_mb()
    );
}

#[test]
fn ten_thousand_instances_with_mounts_leak_no_file_descriptors() {
    run_alone("reliability::fd_hygiene_alone");
}

#[test]
#[ignore = "run alone by ten_thousand_instances_with_mounts_leak_no_file_descriptors"]
fn fd_hygiene_alone() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("f.txt"), "x\n").unwrap();
    let spec = mounted(data.path(), true);
    let (_dir, rt) = runtime(2);
    let reader = wasm(&read_file_module("f.txt"));
    let run = |n: u32| {
        let id = wasmpool::ContainerId::new("fd", n);
        rt.create_container_from_bytes(&id, &spec, &reader).unwrap();
        assert_eq!(rt.start(&id).unwrap().wait(), Outcome::Exited(0));
        rt.remove_container(&id).unwrap();
    };
    for n in 0..100 {
        run(n);
    }
    let (fds, threads) = (fds_now(), threads_now());
    for n in 100..10_100 {
        run(n);
    }
    // wasmtime-wasi closes files on its blocking pool: give a close in flight
    // a moment to land. A leak would show as thousands of descriptors.
    settle_within(std::time::Duration::from_secs(10), || fds_now() == fds);
    assert_eq!(
        fds_now(),
        fds,
        "descriptors after 10,000 instances: {}",
        fd_list()
    );
    // That pool also starts threads for file I/O on demand and idles them out
    // after ten seconds: a few may come (more on a loaded host, until they
    // idle out), none per instance.
    settle_within(std::time::Duration::from_secs(15), || {
        threads_now() <= threads + 8
    });
    assert!(
        threads_now() <= threads + 8,
        "threads: {threads} -> {}",
        threads_now()
    );
}

#[test]
fn dropping_a_runtime_joins_its_workers() {
    run_alone("reliability::drop_joins_alone");
}

#[test]
#[ignore = "run alone by dropping_a_runtime_joins_its_workers"]
fn drop_joins_alone() {
    // Warm up wasmtime-wasi's own runtime threads, which live for the process.
    drop(runtime(1));
    let (_dir, rt) = runtime(1);
    let (_, handle) = launch(
        &rt,
        "warm",
        &ServiceSpec::default(),
        &wasm(&sleep_module(1_000_000)),
    );
    handle.wait();
    drop(rt);
    let before = threads_now();
    let (_dir, rt) = runtime(4);
    assert_eq!(
        threads_now(),
        before + 5,
        "four workers and the timer thread started"
    );
    let (_, spinning) = launch(&rt, "spin", &ServiceSpec::default(), &wasm(SPIN));
    drop(Arc::try_unwrap(rt).ok().unwrap());
    assert_eq!(spinning.try_wait(), Some(Outcome::Stopped));
    assert_eq!(threads_now(), before, "every worker was joined");
}

/// Applies one random mutation to `bytes`.
fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let len = out.len().max(1) as u64;
    match rng.below(5) {
        0 => {
            let i = rng.below(len) as usize % out.len();
            out[i] ^= 1 << rng.below(8);
        }
        1 => out.truncate(rng.below(len) as usize),
        2 => {
            let i = rng.below(len) as usize;
            let junk: Vec<u8> = (0..rng.below(16) + 1).map(|_| rng.next() as u8).collect();
            out.splice(i.min(out.len())..i.min(out.len()), junk);
        }
        3 => {
            let i = rng.below(len) as usize % out.len();
            out[i] = rng.next() as u8;
        }
        _ => {
            let a = rng.below(len) as usize;
            let b = rng.below(len) as usize;
            let (lo, hi) = (a.min(b), a.max(b).min(out.len()));
            let copy = out[lo..hi].to_vec();
            out.extend(copy);
        }
    }
    out
}

#[test]
fn mutated_modules_end_with_an_outcome_and_never_hurt_the_pool() {
    let seeds = [
        wasm(&exit_module(3)),
        wasm(&print_module(&[("hi\n", 1)], Some(2))),
        wasm(&count_module(1_000)),
        wasm(&grow_module(1, 2)),
        wasm(PRINT_ARGS_AND_ENV),
        component(&exit_module(0)),
    ];
    let (_dir, rt) = runtime_with(2, |c| {
        c.max_fuel = Some(2_000_000);
        c.max_execution_time = Duration::from_secs(2);
    });
    let spec = ServiceSpec {
        wasm: Some(WasmSpec {
            max_memory: Some("4Mi".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut rng = Rng::seeded();
    let mut ran = 0;
    for n in 0..600u32 {
        let seed = &seeds[rng.below(seeds.len() as u64) as usize];
        let mut bytes = mutate(&mut rng, seed);
        if rng.below(2) == 0 {
            bytes = mutate(&mut rng, &bytes);
        }
        let id = wasmpool::ContainerId::new("mutant", n);
        rt.create_container_from_bytes(&id, &spec, &bytes).unwrap();
        let outcome = rt.start(&id).unwrap().wait();
        assert!(
            !matches!(outcome, Outcome::Panicked(_)),
            "mutant {n} panicked the host: {outcome:?}"
        );
        ran += usize::from(outcome.ran());
        rt.remove_container(&id).unwrap();
    }
    eprintln!("{ran} of 600 mutants ran");
    // The pool still serves a valid guest.
    let (_, handle) = launch(
        &rt,
        "after-mutants",
        &ServiceSpec::default(),
        &wasm(&exit_module(1)),
    );
    assert_eq!(handle.wait(), Outcome::Exited(1));
}
