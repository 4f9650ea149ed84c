//! Kubernetes pods through containerd's CRI plugin: pod start to the first
//! HTTP answer of its service (RunPodSandbox + CreateContainer +
//! StartContainer + a request answered at the pod IP), and memory per
//! running pod — wasmpool's shim against runwasi's model (`benches/runwasi-peer`:
//! each container in its own process, a wasi:http component served as
//! runwasi's wasmtime shim serves it) and runc running busybox `httpd` (the
//! floor of containerd's own overhead). Every pod has its own network (CNI's
//! bridge, in a namespace the bench makes). Idle, then with two busy
//! competitor processes.
//!
//! `cargo bench --features shim --bench pods` (as root; needs `runc`,
//! `busybox-static`, and for the peer's build `protobuf-compiler`,
//! `libseccomp-dev` and `pkg-config`: `apt-get install -y …`).

#[path = "common/busy.rs"]
mod busy;
#[allow(dead_code)]
#[path = "../tests/common/containerd.rs"]
mod containerd;
#[allow(dead_code)]
#[path = "../tests/common/cri.rs"]
mod cri;
#[allow(dead_code)]
#[path = "../tests/common/service.rs"]
mod service;
#[path = "common/shims.rs"]
mod shims;

use busy::BusyHost;
use containerd::{Containerd, Image};
use criterion::Criterion;
use shims::{peer, pss_kib};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

const WEB: &str = "docker.io/library/web:latest";
const HTTPD: &str = "docker.io/library/httpd:latest";
const COMPONENT: &str = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";

/// One way of running a pod whose one container serves HTTP on 8080.
struct Case {
    label: &'static str,
    handler: &'static str,
    image: &'static str,
    args: &'static [&'static str],
}

const CASES: [Case; 3] = [
    Case {
        label: "wasmpool",
        handler: "wasmpool",
        image: WEB,
        args: &[],
    },
    Case {
        label: "runwasi_model",
        handler: "runwasipeer",
        image: WEB,
        args: &[],
    },
    Case {
        label: "runc_busybox_httpd",
        handler: "runc",
        image: HTTPD,
        args: &["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
    },
];

/// A pod's sandbox image every runtime can run: busybox sleeping (runc and
/// the peer's youki run it; wasmpool never does).
fn sandbox() -> Image {
    let busybox = std::fs::read("/bin/busybox").expect("apt-get install -y busybox-static");
    Image::rootfs_argv(
        &[("bin/busybox", &busybox)],
        &["/bin/busybox", "sleep", "2147483647"],
    )
}

fn images(ctrd: &Containerd) {
    let web = service::hello_handler();
    ctrd.import(WEB, &Image::wasm_layer(&web, COMPONENT, "wasip2").tar(WEB));
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let httpd = Image::rootfs_argv(
        &[("bin/busybox", &busybox), ("www/index.html", b"hello\n")],
        CASES[2].args,
    );
    ctrd.import(HTTPD, &httpd.tar(HTTPD));
}

/// One pod of `case`, started and answering; returns its id, its IP and how
/// long it took from RunPodSandbox to the first answer.
fn start_pod(cri: &mut cri::Cri, logs: &Path, case: &Case, name: &str) -> (String, Duration) {
    let started = Instant::now();
    let pod_config = cri::pod_config(name, logs, false);
    let pod = cri
        .run_pod(&pod_config, case.handler)
        .unwrap_or_else(|e| panic!("{}: RunPodSandbox: {e}", case.label));
    let ip: IpAddr = cri
        .pod_status(&pod)
        .network
        .expect("a pod network")
        .ip
        .parse()
        .unwrap();
    let config = cri::container_config("web", 0, case.image, case.args, &[]);
    let id = cri
        .create(&pod, &config, &pod_config)
        .unwrap_or_else(|e| panic!("{}: CreateContainer: {e}", case.label));
    cri.start(&id)
        .unwrap_or_else(|e| panic!("{}: StartContainer: {e}", case.label));
    let address = SocketAddr::new(ip, 8080);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok() {
            let reply = service::get(address, "/");
            if reply.status == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{}: no answer at {address}",
            case.label
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    (pod, started.elapsed())
}

fn remove_pod(cri: &mut cri::Cri, pod: &str) {
    cri.stop_pod(pod);
    cri.remove_pod(pod);
}

fn first_answer(c: &mut Criterion, cri: &mut cri::Cri, logs: &Path, label: &str) {
    let mut group = c.benchmark_group(format!("pod_start_to_first_answer/{label}"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    let mut n = 0u64;
    for case in &CASES {
        group.bench_function(case.label, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let (pod, took) = start_pod(cri, logs, case, &format!("p{n}"));
                    total += took;
                    remove_pod(cri, &pod);
                }
                total
            })
        });
    }
    group.finish();
}

/// Memory of 10 running, answering pods of each runtime.
fn memory(ctrd: &Containerd, cri: &mut cri::Cri, logs: &Path) {
    const PODS: usize = 10;
    println!("\nresident memory (PSS of shims and all their children), {PODS} serving pods:");
    for case in &CASES {
        let pods: Vec<String> = (0..PODS)
            .map(|i| start_pod(cri, logs, case, &format!("mem-{}-{i}", case.label)).0)
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let (kib, processes) = pss_kib(ctrd);
        println!(
            "  {:20} {kib:>8} KiB, {processes:>3} processes: {:>6} KiB per pod",
            case.label,
            kib / PODS as u64
        );
        for pod in &pods {
            remove_pod(cri, pod);
        }
    }
}

fn main() {
    let peer = peer();
    let ctrd = Containerd::start_cri_with(
        &sandbox(),
        &[&peer],
        &[("runwasipeer", "io.containerd.runwasipeer.v1")],
    );
    images(&ctrd);
    // The client is on the node, where pod IPs are reached.
    containerd::enter_network(ctrd.node_network.as_ref().unwrap());
    let mut cri = cri::Cri::connect(&ctrd.socket());
    let logs = tempfile::tempdir().unwrap();
    let mut c = Criterion::default().configure_from_args();
    first_answer(&mut c, &mut cri, logs.path(), "idle");
    {
        let _busy = BusyHost::start();
        first_answer(&mut c, &mut cri, logs.path(), "busy");
    }
    memory(&ctrd, &mut cri, logs.path());
    c.final_summary();
}
