//! What a guest cannot do: escape its mounts, see the host, hurt the pool.

use crate::common::*;
use std::time::Duration;
use wasmpool::{Outcome, OutputSink, Runtime, ServiceSpec};

#[test]
fn a_guest_cannot_read_outside_its_mount() {
    let outer = tempfile::tempdir().unwrap();
    std::fs::write(outer.path().join("secret.txt"), "host secret\n").unwrap();
    let inner = outer.path().join("mount");
    std::fs::create_dir(&inner).unwrap();
    std::fs::write(inner.join("ok.txt"), "inside\n").unwrap();
    std::os::unix::fs::symlink(outer.path().join("secret.txt"), inner.join("link-out")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", inner.join("relative-link-out")).unwrap();
    let (_dir, rt) = runtime(2);
    // The control: a file inside the mount is readable.
    let (ok, handle) = launch(
        &rt,
        "inside",
        &mounted(&inner, false),
        &wasm(&read_file_module("ok.txt")),
    );
    assert_eq!(wait_bounded(&handle), Outcome::Exited(0));
    assert_eq!(stdout_lines(&rt, &ok), ["inside"]);
    for (name, path) in [
        ("dotdot", "../secret.txt"),
        ("deep-dotdot", "sub/../../secret.txt"),
        ("absolute", "/etc/passwd"),
        ("symlink", "link-out"),
        ("relative-symlink", "relative-link-out"),
    ] {
        let (id, handle) = launch(
            &rt,
            name,
            &mounted(&inner, false),
            &wasm(&read_file_module(path)),
        );
        let outcome = wait_bounded(&handle);
        assert!(
            matches!(outcome, Outcome::Exited(code) if code != 0),
            "{path}: {outcome:?}"
        );
        assert!(
            stdout_lines(&rt, &id).is_empty(),
            "{path} leaked {:?}",
            stdout_lines(&rt, &id)
        );
    }
}

#[test]
fn a_guest_without_mounts_has_no_files_at_all() {
    let (_dir, rt) = runtime(1);
    // fd 3 is not a preopen: opening through it fails with EBADF (8).
    let (_, handle) = launch(
        &rt,
        "no-mounts",
        &ServiceSpec::default(),
        &wasm(&read_file_module("etc/passwd")),
    );
    assert_eq!(wait_bounded(&handle), Outcome::Exited(8));
}

#[test]
fn a_panic_in_a_host_callback_fails_that_guest_only() {
    let (_dir, rt) = runtime(1);
    let spec = ServiceSpec {
        output: Some(OutputSink::new(|_, _| panic!("sink exploded on purpose"))),
        ..Default::default()
    };
    let (id, handle) = launch(
        &rt,
        "panics",
        &spec,
        &wasm(&print_module(&[("boom\n", 1)], None)),
    );
    let outcome = wait_bounded(&handle);
    assert_eq!(
        outcome,
        Outcome::Panicked("sink exploded on purpose".into())
    );
    let err = rt.wait_container(&id).unwrap_err();
    assert!(
        err.to_string()
            .contains("panicked: sink exploded on purpose"),
        "{err}"
    );
    // The only worker keeps serving, and so do stop and logs.
    for i in 0..3 {
        let (_, next) = launch(
            &rt,
            &format!("after-panic-{i}"),
            &ServiceSpec::default(),
            &wasm(&exit_module(i)),
        );
        assert_eq!(wait_bounded(&next), Outcome::Exited(i));
    }
    let (spin, spin_handle) = launch(
        &rt,
        "after-panic-spin",
        &ServiceSpec::default(),
        &wasm(READY_SPIN),
    );
    until_ready(&rt, &spin);
    rt.stop_container(&spin, Duration::from_secs(5)).unwrap();
    assert_eq!(wait_bounded(&spin_handle), Outcome::Stopped);
}

#[test]
fn a_guest_stays_within_its_memory_limit_while_neighbours_run() {
    let (_dir, rt) = runtime(2);
    let limited = ServiceSpec {
        wasm: Some(wasmpool::WasmSpec {
            max_memory: Some("1Mi".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (hog, hog_handle) = launch(&rt, "hog", &limited, &wasm(&grow_module(1, 100)));
    let (_, neighbour) = launch(
        &rt,
        "neighbour",
        &ServiceSpec::default(),
        &wasm(&grow_module(1, 100)),
    );
    assert_eq!(
        wait_bounded(&hog_handle),
        Outcome::Exited(1),
        "the hog's grow was refused"
    );
    assert_eq!(
        wait_bounded(&neighbour),
        Outcome::Exited(0),
        "the unlimited neighbour grew"
    );
    assert!(rt.get_container_stats(&hog).unwrap().memory_peak_bytes <= 1 << 20);
}

/// A WASIp2 command component that tries to create a TCP socket and exits 0
/// if it could, 1 (after printing "denied") if it could not.
fn socket_component() -> Vec<u8> {
    let core = r#"(module
        (import "wasi:sockets/tcp-create-socket@0.2.0" "create-tcp-socket" (func $create (param i32 i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (data (i32.const 512) "denied\0a")
        (func (export "_start")
            ;; ipv4; the result<tcp-socket, error-code> lands at 256.
            (call $create (i32.const 0) (i32.const 256))
            (if (i32.load8_u (i32.const 256)) (then
                (i32.store (i32.const 0) (i32.const 512))
                (i32.store (i32.const 4) (i32.const 7))
                (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
                (call $exit (i32.const 1))))
            (call $exit (i32.const 0))))"#;
    let wit = sockets_wit("import wasi:sockets/tcp-create-socket@0.2.0;");
    component_with_wit(&wit, "guest", core)
}

#[test]
fn a_guest_cannot_open_a_socket_unless_the_spec_grants_network() {
    let guest = socket_component();
    let (_dir, rt) = runtime(1);
    let (denied, handle) = launch(&rt, "no-network", &ServiceSpec::default(), &guest);
    assert_eq!(wait_bounded(&handle), Outcome::Exited(1));
    assert_eq!(stdout_lines(&rt, &denied), ["denied"]);
    let granted = ServiceSpec {
        network: true,
        ..Default::default()
    };
    let (allowed, handle) = launch(&rt, "network", &granted, &guest);
    assert_eq!(
        wait_bounded(&handle),
        Outcome::Exited(0),
        "{:?}",
        stdout_lines(&rt, &allowed)
    );
}

/// Fills 96 MiB of its memory with 0xab, after counting the 4 KiB pages that
/// already hold it: a fresh memory has none, whatever ran in its slot before.
const FILLS_ITS_MEMORY: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory 1536)
  (func (export "_start")
    (local $p i32) (local $n i32)
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $p) (i32.const 100663296)))
        (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 0xab))
          (then (local.set $n (i32.add (local.get $n) (i32.const 1)))))
        (local.set $p (i32.add (local.get $p) (i32.const 4096)))
        (br $scan)))
    (memory.fill (i32.const 0) (i32.const 0xab) (i32.const 100663296))
    (call $exit (select (i32.const 200) (local.get $n) (i32.gt_u (local.get $n) (i32.const 200))))))"#;

/// A memory cgroup of its own, removed when dropped: needs root and a
/// cgroup v1 `memory` hierarchy or a v2 one with the memory controller.
struct MemoryCgroup(std::path::PathBuf);

impl MemoryCgroup {
    fn new(limit: u64) -> Option<MemoryCgroup> {
        let name = format!("wasmpool-test-{}", std::process::id());
        let v1 = std::path::Path::new("/sys/fs/cgroup/memory");
        let (dir, file) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(name), "memory.limit_in_bytes")
        } else {
            let root = std::path::Path::new("/sys/fs/cgroup");
            let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).ok()?;
            if !controllers.split_whitespace().any(|c| c == "memory") {
                return None;
            }
            // In a cgroup namespace this is our own cgroup: none of its
            // children may swap if it may not.
            let swap = std::fs::read_to_string(root.join("memory.swap.max")).unwrap_or_default();
            if swap.trim() == "0" {
                return None;
            }
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
            (root.join(name), "memory.max")
        };
        std::fs::create_dir(&dir).ok()?;
        let cgroup = MemoryCgroup(dir);
        std::fs::write(cgroup.0.join(file), limit.to_string()).ok()?;
        Some(cgroup)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A swap file of its own, on while it lives (the tests run as root): in the
/// cargo target folder, a real file system (a swap file cannot be on tmpfs).
struct SwapFile(std::path::PathBuf);

impl SwapFile {
    fn on(dir: &std::path::Path, bytes: usize) -> Result<SwapFile, String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(format!("swap-{}", std::process::id()));
        // Written whole: `swapon` refuses a file with holes.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let swap = SwapFile(path);
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..bytes >> 20 {
            file.write_all(&zeros).map_err(|e| e.to_string())?;
        }
        file.sync_all().map_err(|e| e.to_string())?;
        for (program, args) in [("mkswap", &["-q"][..]), ("swapon", &[][..])] {
            let status = std::process::Command::new(program)
                .args(args)
                .arg(&swap.0)
                .status()
                .map_err(|e| format!("{program}: {e}"))?;
            if !status.success() {
                return Err(format!("{program} {}: {status}", swap.0.display()));
            }
        }
        Ok(swap)
    }
}

impl Drop for SwapFile {
    fn drop(&mut self) {
        let _ = std::process::Command::new("swapoff").arg(&self.0).status();
        let _ = std::fs::remove_file(&self.0);
    }
}

fn swap_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("SwapTotal:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// On a host with swap, a guest's pages swapped out under memory pressure
/// are reset like the others when its pooled slot is given back: the next
/// guest in the slot (the same module, so the same slot) sees none of them.
/// wasmtime 48's `PAGEMAP_SCAN` reset skipped such pages, and 200+ reached
/// the next guest here; the runtime turns the scan off on a host with swap.
/// A host without swap gets a swap file for the test's length; the guests
/// run in a memory cgroup smaller than what they write (both need root, as
/// the README's tests do).
#[test]
fn a_swapped_out_page_never_reaches_the_next_guest_in_its_slot() {
    let _swap = (swap_kib() < 256 << 10).then(|| {
        SwapFile::on(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")), 256 << 20)
            .unwrap_or_else(|e| panic!("no swap file for the test (it needs root): {e}"))
    });
    // Below the guest's 96 MiB: most of its pages go to swap as it writes them.
    let cgroup = MemoryCgroup::new(80 << 20)
        .expect("a memory cgroup of the test's own (it needs root, and cgroup v1 or v2 with the memory controller)");
    let dir = tempfile::tempdir().unwrap();
    let guest = dir.path().join("fills.wat");
    std::fs::write(&guest, FILLS_ITS_MEMORY).unwrap();
    // One worker, one caller: eight guests one after another, in one slot.
    let output = std::process::Command::new("sh")
        .args([
            "-c",
            r#"echo $$ > "$1/cgroup.procs" && shift && exec "$@""#,
            "sh",
        ])
        .arg(&cgroup.0)
        .arg(env!("CARGO_BIN_EXE_wasmpool"))
        .args(["bench", "-q", "-n", "8", "-w", "1", "--callers", "1"])
        .arg(&guest)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "a guest saw pages of the one before it (or could not run): {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
