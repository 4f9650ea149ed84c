//! containerd: `ctr run` to exit of a trivial guest, and resident memory per
//! running container with 50 at once — wasmpool's shim against runwasi's model
//! (`benches/runwasi-peer`: a minimal wasmtime shim on `containerd-shim-wasm`,
//! each container in its own process) and runc running busybox (the floor of
//! containerd's own overhead). Idle, then with two busy competitor processes.
//!
//! `cargo bench --features shim --bench shim` (as root; needs `runc` and
//! `busybox-static`: `apt-get install -y runc busybox-static`).

#[path = "common/busy.rs"]
mod busy;
#[allow(dead_code)]
#[path = "../tests/common/containerd.rs"]
mod containerd;
#[path = "common/shims.rs"]
mod shims;

use busy::BusyHost;
use containerd::{Containerd, Image, RUNTIME};
use criterion::Criterion;
use shims::{peer, pss_kib};
use std::time::Duration;

const PEER: &str = "io.containerd.runwasipeer.v1";
const RUNC: &str = "io.containerd.runc.v2";
const HELLO: &str = "docker.io/library/hello:latest";
const NAP: &str = "docker.io/library/nap:latest";
const BUSYBOX: &str = "docker.io/library/busybox:latest";
const WASM: &str = "application/wasm";

/// `_start` prints a line and returns.
const HELLO_WAT: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (data (i32.const 16) "hello\0a")
    (func (export "_start")
        (i32.store (i32.const 0) (i32.const 16))
        (i32.store (i32.const 4) (i32.const 6))
        (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// `_start` sleeps 120 s in `poll_oneoff`.
const NAP_WAT: &str = r#"(module
    (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (func (export "_start")
        (i64.store (i32.const 0) (i64.const 7))
        (i32.store8 (i32.const 8) (i32.const 0))
        (i32.store (i32.const 16) (i32.const 1))
        (i64.store (i32.const 24) (i64.const 120000000000))
        (i64.store (i32.const 32) (i64.const 0))
        (i32.store16 (i32.const 40) (i32.const 0))
        (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

fn images(ctrd: &Containerd) {
    for (name, wat) in [(HELLO, HELLO_WAT), (NAP, NAP_WAT)] {
        let wasm = wat::parse_str(wat).unwrap();
        ctrd.import(name, &Image::wasm_layer(&wasm, WASM, "wasip1").tar(name));
    }
    let busybox = std::fs::read("/bin/busybox").expect("apt-get install -y busybox-static");
    let image = Image::rootfs(&[("bin/busybox", &busybox)], "/bin/busybox");
    ctrd.import(BUSYBOX, &image.tar(BUSYBOX));
}

/// One foreground `ctr run --rm` to its exit.
fn run(ctrd: &Containerd, runtime: &str, flags: &[&str], image: &str, id: &str, command: &[&str]) {
    let mut args = vec!["run", "--rm", "--runtime", runtime];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[image, id]);
    args.extend_from_slice(command);
    let out = ctrd.ctr(&args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ctr_run(c: &mut Criterion, ctrd: &Containerd, label: &str) {
    let mut group = c.benchmark_group(format!("ctr_run_to_exit/{label}"));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(20));
    let mut n = 0u64;
    let mut next = |prefix: &str| {
        n += 1;
        format!("{prefix}{n}")
    };
    group.bench_function("wasmpool", |b| {
        b.iter(|| run(ctrd, RUNTIME, &[], HELLO, &next("w"), &[]))
    });
    // A shim already up for the group (a resident container keeps it): the
    // engine and the compiled code are there.
    let grouped = ["--annotation", "io.wasmpool.group=bench"];
    let resident = next("resident");
    let mut args = vec!["run", "-d", "--runtime", RUNTIME];
    args.extend_from_slice(&grouped);
    args.extend_from_slice(&[NAP, &resident]);
    ctrd.ctr_ok(&args);
    group.bench_function("wasmpool_group_warm", |b| {
        b.iter(|| run(ctrd, RUNTIME, &grouped, HELLO, &next("g"), &[]))
    });
    ctrd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", &resident]);
    group.bench_function("runwasi_model", |b| {
        b.iter(|| run(ctrd, PEER, &[], HELLO, &next("p"), &[]))
    });
    group.bench_function("runc_busybox", |b| {
        b.iter(|| {
            run(
                ctrd,
                RUNC,
                &[],
                BUSYBOX,
                &next("r"),
                &["/bin/busybox", "true"],
            )
        })
    });
    group.finish();
}

/// One way of running the 50 sleeping containers.
struct Case {
    label: &'static str,
    runtime: &'static str,
    flags: &'static [&'static str],
    image: &'static str,
    command: &'static [&'static str],
}

/// Memory of 1 and of 50 running containers of each runtime.
fn memory(ctrd: &Containerd) {
    let nap = |label, runtime, flags| Case {
        label,
        runtime,
        flags,
        image: NAP,
        command: &[],
    };
    let cases = [
        nap(
            "wasmpool, one group",
            RUNTIME,
            &["--annotation", "io.wasmpool.group=mem"],
        ),
        nap("wasmpool, a shim each", RUNTIME, &[]),
        nap("runwasi model", PEER, &[]),
        Case {
            label: "runc busybox",
            runtime: RUNC,
            flags: &[],
            image: BUSYBOX,
            command: &["/bin/busybox", "sleep", "120"],
        },
    ];
    println!("\nresident memory (PSS of shims and their children), 1 and 50 containers:");
    for Case {
        label,
        runtime,
        flags,
        image,
        command,
    } in cases
    {
        let ids: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
        let mut first = (0, 0);
        for (i, id) in ids.iter().enumerate() {
            let mut args = vec!["run", "-d", "--runtime", runtime];
            args.extend_from_slice(flags);
            args.extend_from_slice(&[image, id]);
            args.extend_from_slice(command);
            ctrd.ctr_ok(&args);
            if i == 0 {
                ctrd.until_status(id, "RUNNING");
                std::thread::sleep(Duration::from_millis(500));
                first = pss_kib(ctrd);
            }
        }
        for id in &ids {
            ctrd.until_status(id, "RUNNING");
        }
        std::thread::sleep(Duration::from_millis(500));
        let fifty = pss_kib(ctrd);
        let per = (fifty.0.saturating_sub(first.0)) as f64 / 49.0;
        println!(
            "  {label:24} 1: {:>7} KiB ({} processes)  50: {:>8} KiB ({} processes)  per additional container: {per:>8.0} KiB",
            first.0, first.1, fifty.0, fifty.1
        );
        for id in &ids {
            let _ = ctrd.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
        }
        for id in &ids {
            ctrd.until_status(id, "STOPPED");
            ctrd.ctr_ok(&["task", "rm", id]);
            ctrd.ctr_ok(&["container", "rm", id]);
        }
    }
}

fn main() {
    let peer = peer();
    // A namespace of its own: the peer keeps container state under /run by namespace and id.
    let namespace = format!("bench{}", std::process::id());
    let ctrd = Containerd::start_with(&namespace, &[&peer]);
    images(&ctrd);
    let mut c = Criterion::default().configure_from_args();
    ctr_run(&mut c, &ctrd, "idle");
    {
        let _busy = BusyHost::start();
        ctr_run(&mut c, &ctrd, "busy");
    }
    memory(&ctrd);
    c.final_summary();
}
