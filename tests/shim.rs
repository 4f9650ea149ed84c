//! The containerd shim (`containerd-shim-wasmpool-v1`, feature `shim`) under a
//! real containerd: `ctr` runs, kills, lists, measures and removes containers.

use crate::common::containerd::{Containerd, Image};
use crate::common::{
    component, exit_module, print_module, read_file_module, wasm, PRINT_ARGS_AND_ENV, SPIN,
};
use std::time::{Duration, Instant};

const WASM: &str = "application/wasm";
const COMPONENT: &str = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";

fn wasm_image(ctrd: &Containerd, name: &str, wat: &str) -> String {
    let reference = format!("docker.io/library/{name}:latest");
    ctrd.import(
        &reference,
        &Image::wasm_layer(&wasm(wat), WASM, "wasip1").tar(&reference),
    );
    reference
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn ctr_run_prints_the_output_args_and_env_and_returns_the_exit_code() {
    let ctrd = Containerd::start("output");
    let image = wasm_image(&ctrd, "args", PRINT_ARGS_AND_ENV);
    let out = ctrd.run(
        &["--env", "GREETING=hello there"],
        &image,
        "args",
        &["/app.wasm", "one", "two words"],
    );
    assert!(out.status.success(), "{}{}", stderr(&out), ctrd.log());
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(&lines[..3], &["/app.wasm", "one", "two words"], "{text}");
    assert!(lines.contains(&"GREETING=hello there"), "{text}");

    let exits = wasm_image(&ctrd, "exits", &exit_module(42));
    let out = ctrd.run(&[], &exits, "exits", &[]);
    assert_eq!(out.status.code(), Some(42), "{}", stderr(&out));

    let printed = wasm_image(
        &ctrd,
        "printed",
        &print_module(&[("to stdout\n", 1), ("to stderr\n", 2)], Some(3)),
    );
    let out = ctrd.run(&[], &printed, "printed", &[]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), "to stdout\n");
    assert!(stderr(&out).contains("to stderr"), "{}", stderr(&out));
}

#[test]
fn a_bind_mount_is_a_preopen_and_ro_is_kept() {
    let ctrd = Containerd::start("mounts");
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("note.txt"), "from the host\n").unwrap();
    let image = wasm_image(&ctrd, "reader", &read_file_module("note.txt"));
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        data.path().display()
    );
    let out = ctrd.run(&["--mount", &mount], &image, "reader", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "from the host\n");

    let writer = wasm_image(
        &ctrd,
        "writer",
        &crate::common::write_file_module("new.txt"),
    );
    let out = ctrd.run(&["--mount", &mount], &writer, "writer", &[]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "a write through a read-only mount succeeded"
    );
    assert!(!data.path().join("new.txt").exists());
    let rw = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        data.path().display()
    );
    let out = ctrd.run(&["--mount", &rw], &writer, "writer2", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(data.path().join("new.txt").exists());
}

#[test]
fn a_rootfs_file_image_and_a_component_layer_image_run() {
    let ctrd = Containerd::start("kinds");
    let module = wasm(&print_module(&[("from the rootfs\n", 1)], None));
    let reference = "docker.io/library/rootfs:latest";
    ctrd.import(
        reference,
        &Image::rootfs(&[("hello.wasm", &module)], "/hello.wasm").tar(reference),
    );
    let out = ctrd.run(&[], reference, "rootfs", &[]);
    assert!(out.status.success(), "{}{}", stderr(&out), ctrd.log());
    assert_eq!(stdout(&out), "from the rootfs\n");

    // Through the preview1 adapter, a non-zero proc_exit is wasi:cli/exit's error: 1.
    let p2 = component(&print_module(&[("from a component\n", 1)], Some(5)));
    let reference = "docker.io/library/p2:latest";
    ctrd.import(
        reference,
        &Image::wasm_layer(&p2, COMPONENT, "wasip2").tar(reference),
    );
    let out = ctrd.run(&[], reference, "p2", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), "from a component\n");
}

#[test]
fn a_non_wasm_image_is_refused_with_a_clear_error() {
    let ctrd = Containerd::start("refused");
    let reference = "docker.io/library/elf:latest";
    let elf: &[u8] = b"\x7fELF\x02\x01\x01\0not really a program";
    ctrd.import(
        reference,
        &Image::rootfs(&[("bin/tool", elf)], "/bin/tool").tar(reference),
    );
    let out = ctrd.run(&[], reference, "elf", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a WebAssembly image"),
        "{}",
        stderr(&out)
    );
    // Nothing is left behind: the same id runs again once the container is gone.
    let _ = ctrd.ctr(&["container", "rm", "elf"]);
    assert!(ctrd.task_status("elf").is_none());
}

#[test]
fn kill_stops_a_spinning_guest_with_term_or_kill_and_exec_is_refused() {
    let ctrd = Containerd::start("kill");
    let image = wasm_image(&ctrd, "spin", SPIN);
    for (id, signal, status) in [("term", "SIGTERM", 143), ("kill", "SIGKILL", 137)] {
        ctrd.run_detached(&[], &image, id);
        ctrd.until_status(id, "RUNNING");
        if id == "term" {
            let out = ctrd.ctr(&["task", "exec", "--exec-id", "sh", id, "/bin/sh"]);
            assert!(!out.status.success());
            assert!(stderr(&out).contains("no shell"), "{}", stderr(&out));
        }
        let started = Instant::now();
        ctrd.ctr_ok(&["task", "kill", "--signal", signal, id]);
        ctrd.until_status(id, "STOPPED");
        assert!(started.elapsed() < Duration::from_secs(20));
        // ctr says the exit status of a task it deletes when it is not 0.
        let out = ctrd.ctr(&["task", "delete", id]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("exit code {status}")),
            "{}",
            stderr(&out)
        );
        ctrd.ctr_ok(&["container", "rm", id]);
    }
}

#[test]
fn a_killed_task_exits_with_128_plus_the_signal() {
    let ctrd = Containerd::start("status");
    let image = wasm_image(&ctrd, "spin", SPIN);
    let mut run = ctrd
        .command(&[
            "run",
            "--rm",
            "--runtime",
            crate::common::containerd::RUNTIME,
            &image,
            "spin",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    ctrd.until_status("spin", "RUNNING");
    ctrd.ctr_ok(&["task", "kill", "--signal", "SIGTERM", "spin"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "ctr run did not end after the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(143));
}

#[test]
fn detached_run_task_ls_metrics_and_rm() {
    let ctrd = Containerd::start("detached");
    let image = wasm_image(
        &ctrd,
        "grow",
        &crate::common::ready_sleep_module(30_000_000_000),
    );
    ctrd.run_detached(&[], &image, "sleeper");
    ctrd.until_status("sleeper", "RUNNING");
    let metrics = ctrd.ctr_ok(&["task", "metrics", "sleeper"]);
    // ctr prints the cgroup v1 table: the guest's memory (one 64 KiB page at least).
    let usage = metrics
        .lines()
        .find(|line| line.starts_with("memory.usage_in_bytes"))
        .unwrap_or_else(|| panic!("no memory usage in {metrics}"));
    let bytes: u64 = usage.split_whitespace().last().unwrap().parse().unwrap();
    assert!(bytes >= 65536, "{metrics}");
    let out = ctrd.ctr(&["task", "rm", "sleeper"]);
    assert!(!out.status.success(), "a running task was removed");
    ctrd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", "sleeper"]);
    ctrd.until_status("sleeper", "STOPPED");
    ctrd.ctr_ok(&["task", "rm", "sleeper"]);
    assert!(ctrd.task_status("sleeper").is_none());
    ctrd.ctr_ok(&["container", "rm", "sleeper"]);
    // The shim exits with its last task.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ctrd.shims().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the shim outlived its last container"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn fifty_grouped_containers_share_one_shim_process() {
    let ctrd = Containerd::start("fifty");
    let image = wasm_image(
        &ctrd,
        "sleeper",
        &crate::common::ready_sleep_module(60_000_000_000),
    );
    for i in 0..50 {
        let id = format!("c{i}");
        ctrd.run_detached(&["--annotation", "io.wasmpool.group=fifty"], &image, &id);
    }
    for i in 0..50 {
        ctrd.until_status(&format!("c{i}"), "RUNNING");
    }
    let shims = ctrd.shims();
    assert_eq!(
        shims.len(),
        1,
        "one shim process for the group, found {shims:?}"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", shims[0])).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("fifty containers: one shim, {rss_kib} KiB resident");
    // Generous: the engine, fifty small guests and their threads.
    assert!(rss_kib < 512 << 10, "{rss_kib} KiB");
    for i in 0..50 {
        ctrd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", &format!("c{i}")]);
    }
    for i in 0..50 {
        ctrd.until_status(&format!("c{i}"), "STOPPED");
    }
}

#[test]
fn containers_keep_running_across_a_containerd_restart() {
    let mut ctrd = Containerd::start("restart");
    let image = wasm_image(
        &ctrd,
        "nap",
        &crate::common::ready_sleep_module(10_000_000_000),
    );
    ctrd.run_detached(&[], &image, "nap");
    ctrd.until_status("nap", "RUNNING");
    let shim = ctrd.shims();
    ctrd.restart();
    assert_eq!(ctrd.shims(), shim, "the shim went with containerd");
    assert_eq!(ctrd.task_status("nap").as_deref(), Some("RUNNING"));
    ctrd.until_status("nap", "STOPPED");
    ctrd.ctr_ok(&["task", "rm", "nap"]);
}

#[test]
fn a_trap_or_a_dead_shim_never_leaves_a_running_task() {
    let ctrd = Containerd::start("crash");
    let trap = wasm_image(&ctrd, "trap", crate::common::UNREACHABLE);
    let out = ctrd.run(&[], &trap, "trap", &[]);
    assert_eq!(out.status.code(), Some(134));
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));

    let spin = wasm_image(&ctrd, "spin", SPIN);
    ctrd.run_detached(&[], &spin, "orphan");
    ctrd.until_status("orphan", "RUNNING");
    let shims = ctrd.shims();
    assert_eq!(shims.len(), 1);
    unsafe { libc::kill(shims[0] as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while ctrd.task_status("orphan").as_deref() == Some("RUNNING") {
        assert!(
            Instant::now() < deadline,
            "a task of a dead shim reports running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = ctrd.ctr(&["task", "rm", "orphan"]);
    ctrd.ctr_ok(&["container", "rm", "orphan"]);
}

#[test]
fn unrelated_containers_get_a_shim_each_and_a_group_shares_one() {
    let ctrd = Containerd::start("groups");
    let image = wasm_image(
        &ctrd,
        "nap",
        &crate::common::ready_sleep_module(30_000_000_000),
    );
    ctrd.run_detached(&[], &image, "alone1");
    ctrd.run_detached(&[], &image, "alone2");
    for pod in ["p1", "p2"] {
        let annotation = "io.kubernetes.cri.sandbox-id=pod-a";
        ctrd.run_detached(&["--annotation", annotation], &image, pod);
    }
    for id in ["alone1", "alone2", "p1", "p2"] {
        ctrd.until_status(id, "RUNNING");
    }
    assert_eq!(ctrd.shims().len(), 3, "two lone containers and one pod");
    for id in ["alone1", "alone2", "p1", "p2"] {
        ctrd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", id]);
    }
    for id in ["alone1", "alone2", "p1", "p2"] {
        ctrd.until_status(id, "STOPPED");
    }
}

#[test]
fn output_a_reader_does_not_take_is_bounded_and_said_while_a_neighbour_runs() {
    use std::io::Read;
    let ctrd = Containerd::start("flood");
    let line = "x".repeat(99);
    let flood = wasm_image(
        &ctrd,
        "flood",
        &crate::common::print_loop_module(&line, 200_000, 0),
    );
    let hello = wasm_image(&ctrd, "hello", &print_module(&[("neighbour\n", 1)], None));
    let group = ["--annotation", "io.wasmpool.group=flood"];
    let runtime = crate::common::containerd::RUNTIME;
    // Nobody reads this `ctr run`'s output for a while: its pipe, then the
    // FIFO, then the shim's queue fill up.
    let mut args = vec!["run", "--rm", "--runtime", runtime];
    args.extend_from_slice(&group);
    args.extend_from_slice(&[&flood, "flood"]);
    let mut child = ctrd
        .command(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    ctrd.until_status("flood", "RUNNING");
    // Long enough for the guest to write far more than the pipe, the FIFO and
    // the shim's 1 MiB hold (it writes 20 MB, never waiting).
    std::thread::sleep(Duration::from_secs(3));
    // The same shim serves a neighbour meanwhile.
    let out = ctrd.run(&group, &hello, "neighbour", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "neighbour\n");
    assert_eq!(ctrd.shims().len(), 1);

    let mut out_pipe = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        out_pipe.read_to_string(&mut text).unwrap();
        text
    });
    let mut err_text = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err_text)
        .unwrap();
    let text = reader.join().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{err_text}");
    assert!(err_text.contains("bytes of output dropped"), "{err_text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        !lines.is_empty() && lines.len() < 200_000,
        "{} lines",
        lines.len()
    );
    assert!(lines.iter().all(|l| *l == line), "a line was cut");
}

#[test]
fn an_image_with_a_device_node_or_a_fifo_is_refused_at_create_and_nothing_hangs() {
    use crate::common::containerd::{tar_of, Entry};
    let ctrd = Containerd::start("special");
    // `mknod null c 1 3` in a layer, and a guest that would write to it.
    let writer = wasm(&crate::common::write_file_module("null"));
    let reference = "docker.io/library/device:latest";
    let layer = tar_of(&[
        Entry::File("app.wasm", &writer),
        Entry::CharDevice("null", 1, 3),
    ]);
    ctrd.import(
        reference,
        &Image::rootfs_of(layer, "/app.wasm").tar(reference),
    );
    let out = ctrd.run(&[], reference, "device", &[]);
    assert!(!out.status.success(), "a guest ran beside a device node");
    assert!(
        stderr(&out).contains("character device"),
        "{}",
        stderr(&out)
    );
    // A FIFO as the command: refused, not a create that waits for a writer.
    let reference = "docker.io/library/fifo:latest";
    let layer = tar_of(&[Entry::Fifo("app.wasm")]);
    ctrd.import(
        reference,
        &Image::rootfs_of(layer, "/app.wasm").tar(reference),
    );
    let started = Instant::now();
    let out = ctrd.run(&[], reference, "fifo", &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("FIFO"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(60));
    // The shim serves a plain image meanwhile.
    let hello = wasm_image(&ctrd, "hello", &print_module(&[("still here\n", 1)], None));
    let out = ctrd.run(&[], &hello, "hello", &[]);
    assert_eq!(stdout(&out), "still here\n", "{}", stderr(&out));
}

#[test]
fn wasm_over_the_artifact_bound_is_refused_by_its_size_as_a_file_and_as_a_layer() {
    let ctrd = Containerd::start_with_env(
        "bounded",
        &[],
        &[("WASMPOOL_SHIM_MAX_ARTIFACT_SIZE", "1048576")],
    );
    // 4 MiB that start like WebAssembly: refused by size, never compiled.
    let mut big = b"\0asm\x01\0\0\0".to_vec();
    big.resize(4 << 20, 0);
    let reference = "docker.io/library/bigfile:latest";
    ctrd.import(
        reference,
        &Image::rootfs(&[("big.wasm", &big)], "/big.wasm").tar(reference),
    );
    let out = ctrd.run(&[], reference, "bigfile", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("more than the shim reads"),
        "{}",
        stderr(&out)
    );
    let reference = "docker.io/library/biglayer:latest";
    ctrd.import(
        reference,
        &Image::wasm_layer(&big, WASM, "wasip1").tar(reference),
    );
    let out = ctrd.run(&[], reference, "biglayer", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("more than the shim reads"),
        "{}",
        stderr(&out)
    );
    let small = wasm_image(&ctrd, "small", &print_module(&[("small\n", 1)], None));
    let out = ctrd.run(&[], &small, "small", &[]);
    assert_eq!(stdout(&out), "small\n", "{}", stderr(&out));
}

#[test]
fn a_task_whose_output_nobody_reads_is_still_killed() {
    let ctrd = Containerd::start("unread");
    let line = "y".repeat(99);
    let flood = wasm_image(
        &ctrd,
        "flood",
        &crate::common::print_loop_module(&line, 100_000_000, 0),
    );
    // `ctr run` copies the FIFO to a pipe this test never reads: once the
    // pipe, the FIFO and the shim's queue are full, every write waits.
    let mut child = ctrd
        .command(&[
            "run",
            "--rm",
            "--runtime",
            crate::common::containerd::RUNTIME,
            &flood,
            "unread",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    ctrd.until_status("unread", "RUNNING");
    std::thread::sleep(Duration::from_secs(1));
    ctrd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", "unread"]);
    // Its last output gets a bounded time to be taken, then the task ends.
    ctrd.until_status("unread", "STOPPED");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn exit_events_reach_containerd_for_quick_runs_and_after_a_restart() {
    use std::io::{BufRead, BufReader};
    use std::sync::{Arc, Mutex};
    let mut ctrd = Containerd::start("events");
    let hello = wasm_image(&ctrd, "hello", &print_module(&[("hi\n", 1)], None));
    let watch = |ctrd: &Containerd| {
        let mut child = ctrd
            .command(&["events"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let seen = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let lines = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut seen = lines.lock().unwrap();
                seen.push_str(&line);
                seen.push('\n');
            }
        });
        (child, seen)
    };
    let exited = |seen: &Mutex<String>, id: &str| {
        let needle = format!("\"container_id\":\"{id}\"");
        seen.lock()
            .unwrap()
            .lines()
            .any(|l| l.contains("/tasks/exit") && l.contains(&needle))
    };
    let until = |what: &dyn Fn() -> bool, said: &str| {
        let started = Instant::now();
        while !what() {
            assert!(started.elapsed() < Duration::from_secs(60), "{said}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (mut events, seen) = watch(&ctrd);
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..30 {
        let out = ctrd.run(&[], &hello, &format!("quick{i}"), &[]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    for i in 0..30 {
        let id = format!("quick{i}");
        until(&|| exited(&seen, &id), &format!("no /tasks/exit for {id}"));
    }
    let _ = events.kill();
    let _ = events.wait();
    // A container that ends after containerd restarted: its exit is published
    // on a new connection.
    let nap = wasm_image(
        &ctrd,
        "nap",
        &crate::common::ready_sleep_module(3_000_000_000),
    );
    ctrd.run_detached(&[], &nap, "late");
    ctrd.until_status("late", "RUNNING");
    ctrd.restart();
    let (mut events, seen) = watch(&ctrd);
    until(
        &|| exited(&seen, "late"),
        "no /tasks/exit for a container ending after a restart",
    );
    let _ = events.kill();
    let _ = events.wait();
    ctrd.ctr_ok(&["task", "rm", "late"]);
}

#[test]
fn a_service_needs_a_network_to_listen_on_and_says_so() {
    let ctrd = Containerd::start("services");
    let reference = "docker.io/library/service:latest";
    ctrd.import(
        reference,
        &Image::wasm_layer(
            &crate::common::service::hello_handler(),
            COMPONENT,
            "wasip2",
        )
        .tar(reference),
    );
    // `ctr run` without --net-host: a namespace of its own that no pod made.
    let out = ctrd.run(&[], reference, "isolated", &[]);
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(
        said.contains("needs a network to listen on")
            && said.contains("wasi:http/incoming-handler"),
        "{said}"
    );
    // With the host's network it is served on $PORT, on every address.
    ctrd.run_detached(&["--net-host", "--env", "PORT=18181"], reference, "served");
    ctrd.until_status("served", "RUNNING");
    let reply = crate::common::service::get("127.0.0.1:18181".parse().unwrap(), "/");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "hello\n");
    ctrd.ctr_ok(&["task", "kill", "--signal", "SIGTERM", "served"]);
    ctrd.until_status("served", "STOPPED");
    let listing = ctrd.ctr_ok(&["task", "ls"]);
    assert!(listing.contains("served"), "{listing}");
}
