//! Kubernetes through the API kubelet speaks: containerd 1.7's CRI plugin,
//! with the README's runtime entry for wasmpool and real CNI plugins, driven
//! by a CRI client (`common::cri`). Pods of WebAssembly containers start,
//! write CRI log files, serve at their pod IP, report stats, stop and are
//! removed, and nothing of them is left behind.

use crate::common::containerd::{Containerd, Image, POD_SUBNET};
use crate::common::cri::{self, api, Cri};
use crate::common::service::{get, logging_handler, slow_handler};
use crate::common::{print_module, sleep_module, wasm, SPIN};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

const HANDLER: &str = "wasmpool";
const WASM: &str = "application/wasm";
const COMPONENT: &str = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";

fn layer_image(ctrd: &Containerd, name: &str, bytes: &[u8], media_type: &str) -> String {
    let reference = format!("docker.io/library/{name}:latest");
    ctrd.import(
        &reference,
        &Image::wasm_layer(bytes, media_type, "wasip1").tar(&reference),
    );
    reference
}

/// A guest that sleeps ten minutes (until it is stopped).
fn sleeper_image(ctrd: &Containerd) -> String {
    layer_image(ctrd, "sleeper", &wasm(&sleep_module(600_000_000_000)), WASM)
}

/// A Linux image whose rootfs holds `/app.wasm`, its entrypoint.
fn rootfs_image(ctrd: &Containerd, name: &str, wasm: &[u8]) -> String {
    let reference = format!("docker.io/library/{name}:latest");
    ctrd.import(
        &reference,
        &Image::rootfs(&[("app.wasm", wasm)], "/app.wasm").tar(&reference),
    );
    reference
}

/// Mount points that name any of `ids` (a pod's rootfs, shm, netns…).
fn mounts_of(ids: &[&str]) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter(|target| ids.iter().any(|id| target.contains(id)))
        .map(str::to_string)
        .collect()
}

/// Waits (bounded) until `done`.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "not so after 30 s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The network namespace of a process, as (device, inode).
fn network_of(pid: u32) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(format!("/proc/{pid}/ns/net")).unwrap();
    (meta.dev(), meta.ino())
}

/// The network namespaces CRI made for pods (bind mounts under its state,
/// `netns_mounts_under_state_dir`).
fn pod_networks(ctrd: &Containerd) -> Vec<std::path::PathBuf> {
    let dir = ctrd
        .dir
        .path()
        .join("state/io.containerd.grpc.v1.cri/netns");
    let mounted = std::fs::read_to_string("/proc/self/mounts").unwrap();
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| mounted.contains(path.to_str().unwrap()))
        .collect()
}

fn log_of(logs: &Path, status: &api::ContainerStatus) -> Vec<(String, String)> {
    assert!(
        status.log_path.starts_with(logs.to_str().unwrap()),
        "{status:?}"
    );
    cri::log_lines(Path::new(&status.log_path))
}

#[test]
fn a_host_network_pod_runs_wasm_containers_through_cri_and_leaves_nothing() {
    let ctrd = Containerd::start_cri();
    let mut cri = Cri::connect(&ctrd.socket());
    let version = cri.version();
    assert_eq!(version.runtime_name, "containerd", "{version:?}");
    assert_eq!(version.runtime_api_version, "v1", "{version:?}");

    let printer = layer_image(
        &ctrd,
        "printer",
        &wasm(&print_module(
            &[
                ("to stdout\n", 1),
                ("to stderr\n", 2),
                ("a second line\n", 1),
            ],
            Some(3),
        )),
        WASM,
    );
    let from_rootfs = rootfs_image(
        &ctrd,
        "from-rootfs",
        &wasm(&print_module(&[("from the rootfs\n", 1)], None)),
    );
    let spinner = layer_image(&ctrd, "spinner", &wasm(SPIN), WASM);
    let sleeper = sleeper_image(&ctrd);

    let logs = tempfile::tempdir().unwrap();
    let pod_config = cri::pod_config("hostnet", logs.path(), true);
    let pod = cri
        .run_pod(&pod_config, HANDLER)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", ctrd.log()));
    let status = cri.pod_status(&pod);
    assert_eq!(status.state, api::SANDBOX_READY, "{status:?}");
    // The pod's sandbox is the pod's shim: one process, the pause image never run.
    let shims = ctrd.shims();
    assert_eq!(shims.len(), 1, "one shim for the pod: {shims:?}");

    let mut ids = Vec::new();
    for (name, image) in [("printer", &printer), ("rootfs", &from_rootfs)] {
        let config = cri::container_config(name, 0, image, &[], &[]);
        ids.push(cri.launch(&pod, &config, &pod_config));
    }
    let printed = cri.until_state(&ids[0], api::CONTAINER_EXITED);
    assert_eq!(printed.exit_code, 3, "{printed:?}");
    let lines = log_of(logs.path(), &printed);
    let expected: Vec<(String, String)> = [
        ("stdout", "to stdout"),
        ("stderr", "to stderr"),
        ("stdout", "a second line"),
    ]
    .iter()
    .map(|(s, m)| (s.to_string(), m.to_string()))
    .collect();
    // Each stream keeps its order (the two streams are separate FIFOs).
    for stream in ["stdout", "stderr"] {
        let got: Vec<_> = lines.iter().filter(|(s, _)| s == stream).collect();
        let want: Vec<_> = expected.iter().filter(|(s, _)| s == stream).collect();
        assert_eq!(got, want, "{lines:?}");
    }
    let rooted = cri.until_state(&ids[1], api::CONTAINER_EXITED);
    assert_eq!(rooted.exit_code, 0, "{rooted:?}");
    assert_eq!(
        log_of(logs.path(), &rooted),
        vec![("stdout".to_string(), "from the rootfs".to_string())]
    );
    assert_eq!(ctrd.shims(), shims, "the pod's containers joined its shim");

    // A spinner stops on TERM within its grace period: it ends by the TERM
    // (143), not by the KILL that follows a grace period run out (137).
    let config = cri::container_config("spinner", 0, &spinner, &[], &[]);
    let spin = cri.launch(&pod, &config, &pod_config);
    cri.until_state(&spin, api::CONTAINER_RUNNING);
    let stopped = cri.stop_ended(&spin, 30);
    assert_eq!(stopped.exit_code, 143, "{stopped:?}");

    // Killing the pod's sandbox ends what is left of the pod with it.
    let config = cri::container_config("sleeper", 0, &sleeper, &[], &[]);
    let sleeping = cri.launch(&pod, &config, &pod_config);
    cri.until_state(&sleeping, api::CONTAINER_RUNNING);
    ctrd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", &pod]);
    let ended = cri.until_state(&sleeping, api::CONTAINER_EXITED);
    assert_eq!(ended.exit_code, 137, "{ended:?}");

    cri.stop_pod(&pod);
    cri.remove_pod(&pod);
    until("the pod's shim is gone", || ctrd.shims().is_empty());
    let mut all: Vec<&str> = ids.iter().map(String::as_str).collect();
    all.extend([pod.as_str(), spin.as_str(), sleeping.as_str()]);
    assert_eq!(mounts_of(&all), Vec::<String>::new(), "mounts left");
}

#[test]
fn a_pods_service_answers_at_its_pod_ip_only_reports_stats_and_drains_on_stop() {
    let ctrd = Containerd::start_cri();
    let mut cri = Cri::connect(&ctrd.socket());
    let service = layer_image(&ctrd, "logger", &logging_handler(), COMPONENT);

    let logs = tempfile::tempdir().unwrap();
    let pod_config = cri::pod_config("served", logs.path(), false);
    let pod = cri
        .run_pod(&pod_config, HANDLER)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", ctrd.log()));
    let ip: std::net::IpAddr = cri
        .pod_status(&pod)
        .network
        .expect("a pod network")
        .ip
        .parse()
        .expect("a pod IP");
    let subnet = POD_SUBNET.trim_end_matches(".0/24");
    assert!(ip.to_string().starts_with(subnet), "{ip} in {POD_SUBNET}");

    let config = cri::container_config("web", 0, &service, &[], &[("PORT", "9090")]);
    let web = cri.launch(&pod, &config, &pod_config);
    cri.until_state(&web, api::CONTAINER_RUNNING);

    // The pod's shim lives in the pod's network namespace, not the node's.
    let shims = ctrd.shims();
    assert_eq!(shims.len(), 1, "{shims:?}");
    let node_pid = std::process::id();
    let node = ctrd.on_node(move || {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
        (meta.dev(), meta.ino())
    });
    assert_ne!(
        network_of(shims[0]),
        node,
        "the shim is in the node's network"
    );
    // ... but in the one CNI made for the pod (CRI keeps it under its state).
    let made = pod_networks(&ctrd);
    assert_eq!(made.len(), 1, "{made:?}");
    let pod_network = {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&made[0]).unwrap();
        (meta.dev(), meta.ino())
    };
    assert_eq!(
        network_of(shims[0]),
        pod_network,
        "the shim is not in the pod's network"
    );
    assert_ne!(
        network_of(shims[0]),
        network_of(node_pid),
        "the shim is in the host's network"
    );

    // Served at the pod IP on $PORT; nothing of the pod listens on the node.
    let at_pod = SocketAddr::new(ip, 9090);
    let reply = ctrd.on_node(move || get(at_pod, "/from-the-node"));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "hello\n");
    let on_node = ctrd.on_node(|| {
        TcpStream::connect_timeout(&"127.0.0.1:9090".parse().unwrap(), Duration::from_secs(5))
            .is_err()
    });
    assert!(on_node, "the pod's service answers on the node's loopback");
    let status = cri.status(&web);
    assert_eq!(status.state, api::CONTAINER_RUNNING, "{status:?}");
    until("the request's log line is in CRI's log file", || {
        log_of(logs.path(), &cri.status(&web))
            .contains(&("stdout".to_string(), "/from-the-node".to_string()))
    });

    // Stats from the runtime's own accounting.
    let stats = cri.stats(&web);
    let cpu = stats
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map(|u| u.value);
    assert!(cpu.unwrap_or(0) > 0, "CPU time of the requests: {cpu:?}");
    let listed = cri.list_stats(&pod);
    assert!(
        listed
            .iter()
            .any(|s| s.attributes.as_ref().is_some_and(|a| a.id == web)),
        "{listed:?}"
    );

    // Exec is refused with the runtime's words.
    let exec: Result<api::Nothing, _> = cri.call(
        "ExecSync",
        api::ExecSyncRequest {
            container_id: web.clone(),
            cmd: vec!["sh".into()],
            timeout: 10,
        },
    );
    let refused = exec.expect_err("exec is refused");
    assert!(
        refused.message().contains("no shell or process table"),
        "{refused:?}"
    );

    // A new memory limit cannot be applied to a running guest: it says so;
    // a CPU change is accepted (guests share the shim's workers).
    let update = |memory: i64| api::UpdateContainerResourcesRequest {
        container_id: web.clone(),
        linux: Some(api::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: memory,
        }),
    };
    let refused = cri
        .call::<_, api::Nothing>("UpdateContainerResources", update(64 << 20))
        .expect_err("a new memory limit is refused");
    assert!(
        refused.message().contains("memory limit cannot be changed"),
        "{refused:?}"
    );
    cri.call::<_, api::Nothing>("UpdateContainerResources", update(0))
        .expect("a CPU-only update");

    // Log rotation: kubelet renames the file and asks CRI to reopen it.
    let log_path = cri.status(&web).log_path;
    std::fs::rename(&log_path, format!("{log_path}.1")).unwrap();
    cri.reopen_log(&web).expect("ReopenContainerLog");
    let reply = ctrd.on_node(move || get(at_pod, "/after-rotation"));
    assert_eq!(reply.status, 200);
    until("the line after rotation is in the new file", || {
        cri::log_lines(Path::new(&log_path))
            .contains(&("stdout".to_string(), "/after-rotation".to_string()))
    });

    // StopContainer's TERM drains the service; it ends by that TERM.
    let stopped = cri.stop_ended(&web, 10);
    assert_eq!(stopped.exit_code, 143, "{stopped:?}");

    // A container restart: the same name, the next attempt, in the same pod
    // and shim, serving on the default port (8080) this time.
    let config = cri::container_config("web", 1, &service, &[], &[]);
    let again = cri.launch(&pod, &config, &pod_config);
    cri.until_state(&again, api::CONTAINER_RUNNING);
    let at_default = SocketAddr::new(ip, 8080);
    let reply = ctrd.on_node(move || get(at_default, "/restarted"));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(ctrd.shims(), shims, "the restart joined the pod's shim");

    cri.stop_pod(&pod);
    cri.remove_pod(&pod);
    until("the pod's shim is gone", || ctrd.shims().is_empty());
    assert_eq!(
        mounts_of(&[&pod, &web, &again]),
        Vec::<String>::new(),
        "mounts left"
    );
    assert_eq!(
        pod_networks(&ctrd),
        Vec::<std::path::PathBuf>::new(),
        "the pod's network is left"
    );
}

/// Resident memory of a process, in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

#[test]
fn twenty_pods_of_three_containers_at_once_one_shim_each() {
    const PODS: usize = 20;
    let ctrd = Containerd::start_cri();
    let mut cri = Cri::connect(&ctrd.socket());
    let sleeper = sleeper_image(&ctrd);
    let logs = tempfile::tempdir().unwrap();
    let mut pods = Vec::new();
    let mut containers = Vec::new();
    for p in 0..PODS {
        let pod_config = cri::pod_config(&format!("pod{p}"), logs.path(), true);
        let pod = cri
            .run_pod(&pod_config, HANDLER)
            .unwrap_or_else(|e| panic!("RunPodSandbox {p}: {e}\n{}", ctrd.log()));
        for c in 0..3 {
            let config = cri::container_config(&format!("c{c}"), 0, &sleeper, &[], &[]);
            let id = cri.launch(&pod, &config, &pod_config);
            containers.push(id);
        }
        pods.push(pod);
    }
    for id in &containers {
        cri.until_state(id, api::CONTAINER_RUNNING);
    }
    let shims = ctrd.shims();
    assert_eq!(shims.len(), PODS, "one shim per pod: {shims:?}");
    let per_pod = shims.iter().map(|pid| rss_of(*pid)).sum::<u64>() / PODS as u64;
    eprintln!(
        "{PODS} pods x 3 containers: {} KiB resident per pod (its shim)",
        per_pod >> 10
    );
    // A guard, not a benchmark: a pod's shim is a few MiB, never hundreds.
    assert!(per_pod < 128 << 20, "{per_pod} bytes per pod");
    for pod in &pods {
        let listed = cri.list_stats(pod);
        assert_eq!(listed.len(), 3, "{listed:?}");
    }
    for pod in &pods {
        cri.stop_pod(pod);
        cri.remove_pod(pod);
    }
    until("every pod's shim is gone", || ctrd.shims().is_empty());
    let mut all: Vec<&str> = pods.iter().map(String::as_str).collect();
    all.extend(containers.iter().map(String::as_str));
    assert_eq!(mounts_of(&all), Vec::<String>::new(), "mounts left");
}

#[test]
fn pods_go_on_while_containerd_restarts_and_exits_reach_cri_after_it() {
    let mut ctrd = Containerd::start_cri();
    let mut cri = Cri::connect(&ctrd.socket());
    let service = layer_image(&ctrd, "logger", &logging_handler(), COMPONENT);
    let napper = layer_image(&ctrd, "napper", &wasm(&sleep_module(3_000_000_000)), WASM);
    let logs = tempfile::tempdir().unwrap();
    // A host-network pod: its service listens on the node's addresses.
    let pod_config = cri::pod_config("restart", logs.path(), true);
    let pod = cri.run_pod(&pod_config, HANDLER).unwrap();
    let config = cri::container_config("web", 0, &service, &[], &[("PORT", "18080")]);
    let web = cri.launch(&pod, &config, &pod_config);
    let config = cri::container_config("napper", 0, &napper, &[], &[]);
    let nap = cri.launch(&pod, &config, &pod_config);
    cri.until_state(&web, api::CONTAINER_RUNNING);
    let node_loopback: SocketAddr = "127.0.0.1:18080".parse().unwrap();
    let reply = ctrd.on_node(move || get(node_loopback, "/before"));
    assert_eq!(reply.status, 200, "{reply:?}");
    let shims = ctrd.shims();

    // The napper ends while containerd is down: its exit event waits for it.
    ctrd.restart();
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        after_restart(&ctrd, &pod, &pod_config, &web, &nap, &shims)
    }));
    if let Err(panic) = checked {
        let log = ctrd.log();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        eprintln!("containerd's log, newest first:\n{}", tail.join("\n"));
        std::panic::resume_unwind(panic);
    }
}

fn after_restart(
    ctrd: &Containerd,
    pod: &str,
    pod_config: &api::PodSandboxConfig,
    web: &str,
    nap: &str,
    shims: &[u32],
) {
    let node_loopback: SocketAddr = "127.0.0.1:18080".parse().unwrap();
    let mut cri = Cri::connect(&ctrd.socket());
    cri.until_ready();
    assert_eq!(ctrd.shims(), shims, "the pod's shim went on");
    let reply = ctrd.on_node(move || get(node_loopback, "/during"));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(cri.status(web).state, api::CONTAINER_RUNNING);
    let napped = cri.until_state(nap, api::CONTAINER_EXITED);
    assert_eq!(napped.exit_code, 0, "{napped:?}");

    assert_eq!(cri.stop_ended(web, 10).exit_code, 143);

    // StopContainer's TERM lets a request in flight finish: it is answered
    // whole, and the container ends by that TERM.
    let slow = layer_image(ctrd, "slow", &slow_handler(300_000_000), COMPONENT);
    let config = cri::container_config("slow", 0, &slow, &[], &[("PORT", "18081")]);
    let worker = cri.launch(pod, &config, pod_config);
    cri.until_state(&worker, api::CONTAINER_RUNNING);
    let at_slow: SocketAddr = "127.0.0.1:18081".parse().unwrap();
    let node = ctrd.node_network.clone().unwrap();
    let in_flight = std::thread::spawn(move || {
        crate::common::containerd::enter_network(&node);
        get(at_slow, "/slow")
    });
    let log_path = cri.status(&worker).log_path;
    until("the slow request is in its handler", || {
        cri::log_lines(Path::new(&log_path)).contains(&("stdout".to_string(), "ready".to_string()))
    });
    let stopped = cri.stop_ended(&worker, 10);
    assert_eq!(stopped.exit_code, 143, "{stopped:?}");
    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.complete, "{reply:?}");
    cri.stop_pod(pod);
    cri.remove_pod(pod);
    until("the pod's shim is gone", || ctrd.shims().is_empty());
}

#[test]
fn the_readmes_recipe_is_the_configuration_these_tests_give_containerd() {
    let readme = include_str!("../README.md");
    assert!(
        readme.contains(crate::common::containerd::README_RUNTIME_ENTRY),
        "the README's containerd entry differs from the tests'"
    );
    assert!(readme.contains(&format!("handler: {HANDLER}")));
    assert!(readme.contains(&format!("runtimeClassName: {HANDLER}")));
}
