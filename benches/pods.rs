//! Services under containerd, start to first answer and memory, wasmpool's
//! shim against runwasi's model (`benches/runwasi-peer`: each container in
//! its own process, a wasi:http component served as runwasi's wasmtime shim
//! serves it) and runc running busybox `httpd` (the floor of containerd's
//! own overhead). Idle, then with two busy competitor processes.
//!
//! - Through CRI, as kubelet starts a pod: RunPodSandbox + CreateContainer +
//!   StartContainer + a request answered at the pod IP (every pod has its own
//!   network: CNI's bridge, in a namespace the bench makes); and memory per
//!   running pod. A runtime whose pods CRI cannot start is reported and left
//!   out (the runwasi model's youki fails CRI's sandbox spec on these machines).
//! - Through `ctr run -d --net-host`, which every runtime here runs: container
//!   start to the first answer on the node's loopback, and memory per running
//!   service.
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

/// One way of running a service on a port.
struct Case {
    label: &'static str,
    /// The CRI runtime handler.
    handler: &'static str,
    /// The runtime `ctr run` takes.
    runtime: &'static str,
    image: &'static str,
}

const CASES: [Case; 3] = [
    Case {
        label: "wasmpool",
        handler: "wasmpool",
        runtime: containerd::RUNTIME,
        image: WEB,
    },
    Case {
        label: "runwasi_model",
        handler: "runwasipeer",
        runtime: "io.containerd.runwasipeer.v1",
        image: WEB,
    },
    Case {
        label: "runc_busybox_httpd",
        handler: "runc",
        runtime: "io.containerd.runc.v2",
        image: HTTPD,
    },
];

impl Case {
    /// The command line of its container, serving on `port`.
    fn args(&self, port: u16) -> Vec<String> {
        match self.image {
            HTTPD => [
                "/bin/busybox",
                "httpd",
                "-f",
                "-p",
                &port.to_string(),
                "-h",
                "/www",
            ]
            .map(String::from)
            .to_vec(),
            _ => Vec::new(),
        }
    }

    /// The environment that puts it on `port`: `$PORT` for wasmpool,
    /// runwasi's `WASMTIME_HTTP_PROXY_SOCKET_ADDR` for its model.
    fn env(&self, port: u16) -> Vec<(String, String)> {
        match self.handler {
            "wasmpool" => vec![("PORT".into(), port.to_string())],
            "runwasipeer" => vec![(
                "WASMTIME_HTTP_PROXY_SOCKET_ADDR".into(),
                format!("0.0.0.0:{port}"),
            )],
            _ => Vec::new(),
        }
    }
}

/// Waits (bounded) for the first `200` at `address`.
fn first_200(address: SocketAddr, label: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
            && service::get(address, "/").status == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "{label}: no answer at {address}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

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
        &["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
    );
    ctrd.import(HTTPD, &httpd.tar(HTTPD));
}

/// One pod of `case`, started and answering; returns its id, its IP and how
/// long it took from RunPodSandbox to the first answer.
fn start_pod(
    ctrd: &Containerd,
    cri: &mut cri::Cri,
    logs: &Path,
    case: &Case,
    name: &str,
) -> (String, Duration) {
    let failed = |what: &str, error: tonic::Status| -> ! {
        let log = ctrd.log();
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        panic!("{}: {what}: {error}\n{}", case.label, tail.join("\n"))
    };
    let started = Instant::now();
    let pod_config = cri::pod_config(name, logs, false);
    let pod = cri
        .run_pod(&pod_config, case.handler)
        .unwrap_or_else(|e| failed("RunPodSandbox", e));
    let ip: IpAddr = cri
        .pod_status(&pod)
        .network
        .expect("a pod network")
        .ip
        .parse()
        .unwrap();
    let args = case.args(8080);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let config = cri::container_config("web", 0, case.image, &args, &[]);
    let id = cri
        .create(&pod, &config, &pod_config)
        .unwrap_or_else(|e| failed("CreateContainer", e));
    cri.start(&id)
        .unwrap_or_else(|e| failed("StartContainer", e));
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

fn first_answer(
    c: &mut Criterion,
    ctrd: &Containerd,
    cri: &mut cri::Cri,
    logs: &Path,
    cases: &[&Case],
    label: &str,
) {
    let mut group = c.benchmark_group(format!("pod_start_to_first_answer/{label}"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    let mut n = 0u64;
    for case in cases {
        group.bench_function(case.label, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let (pod, took) = start_pod(ctrd, cri, logs, case, &format!("{label}{n}"));
                    total += took;
                    remove_pod(cri, &pod);
                }
                total
            })
        });
    }
    group.finish();
}

/// Prints what the `count` running `unit`s of `label` hold, once they settled.
fn report_pss(ctrd: &Containerd, label: &str, count: u64, unit: &str) {
    std::thread::sleep(Duration::from_millis(500));
    let (kib, processes) = pss_kib(ctrd);
    println!(
        "  {label:20} {kib:>8} KiB, {processes:>3} processes: {:>6} KiB per {unit}",
        kib / count
    );
}

/// Memory of 10 running, answering pods of each runtime.
fn memory(ctrd: &Containerd, cri: &mut cri::Cri, logs: &Path, cases: &[&Case]) {
    const PODS: usize = 10;
    println!("\nresident memory (PSS of shims and all their children), {PODS} serving pods:");
    for case in cases {
        let pods: Vec<String> = (0..PODS)
            .map(|i| start_pod(ctrd, cri, logs, case, &format!("mem-{}-{i}", case.label)).0)
            .collect();
        report_pss(ctrd, case.label, PODS as u64, "pod");
        for pod in &pods {
            remove_pod(cri, pod);
        }
    }
}

/// `ctr run -d --net-host` of `case` serving on `port`; returns how long
/// it took to its first answer on the node's loopback.
fn start_container(ctrd: &Containerd, case: &Case, id: &str, port: u16) -> Duration {
    let started = Instant::now();
    let env: Vec<String> = case
        .env(port)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut args = vec!["run", "-d", "--net-host", "--runtime", case.runtime];
    for pair in &env {
        args.extend(["--env", pair]);
    }
    args.extend([case.image, id]);
    let command = case.args(port);
    args.extend(command.iter().map(String::as_str));
    ctrd.ctr_ok(&args);
    first_200(SocketAddr::from(([127, 0, 0, 1], port)), case.label);
    started.elapsed()
}

fn remove_container(ctrd: &Containerd, id: &str) {
    let _ = ctrd.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
    ctrd.until_status(id, "STOPPED");
    ctrd.ctr_ok(&["task", "rm", id]);
    ctrd.ctr_ok(&["container", "rm", id]);
}

fn ctr_first_answer(c: &mut Criterion, ctrd: &Containerd, label: &str) {
    let mut group = c.benchmark_group(format!("container_start_to_first_answer/{label}"));
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
                    let id = format!("c{label}{n}");
                    total += start_container(ctrd, case, &id, 18080);
                    remove_container(ctrd, &id);
                }
                total
            })
        });
    }
    group.finish();
}

/// Memory of 10 running services of each runtime, started with `ctr`.
fn ctr_memory(ctrd: &Containerd) {
    const SERVICES: u16 = 10;
    println!(
        "\nresident memory (PSS of shims and all their children), {SERVICES} services by ctr:"
    );
    for case in &CASES {
        let ids: Vec<String> = (0..SERVICES)
            .map(|i| {
                let id = format!("mem-{}-{i}", case.label);
                start_container(ctrd, case, &id, 18100 + i);
                id
            })
            .collect();
        report_pss(ctrd, case.label, u64::from(SERVICES), "service");
        for id in &ids {
            remove_container(ctrd, id);
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
    // The runtimes whose pods CRI can start here.
    let mut cri_cases = Vec::new();
    for case in &CASES {
        match cri.run_pod(&cri::pod_config("probe", logs.path(), false), case.handler) {
            Ok(pod) => {
                remove_pod(&mut cri, &pod);
                cri_cases.push(case);
            }
            Err(error) => println!(
                "{}: CRI cannot start its pods here, left out of the CRI figures: {}",
                case.label,
                error.message()
            ),
        }
    }
    let mut c = Criterion::default().configure_from_args();
    first_answer(&mut c, &ctrd, &mut cri, logs.path(), &cri_cases, "idle");
    ctr_first_answer(&mut c, &ctrd, "idle");
    {
        let _busy = BusyHost::start();
        first_answer(&mut c, &ctrd, &mut cri, logs.path(), &cri_cases, "busy");
        ctr_first_answer(&mut c, &ctrd, "busy");
    }
    memory(&ctrd, &mut cri, logs.path(), &cri_cases);
    ctr_memory(&ctrd);
    c.final_summary();
}
