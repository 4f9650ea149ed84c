//! The containerd benchmarks' shared parts: the runwasi-model peer, and
//! what the processes serving a containerd's tasks hold in memory.

use crate::containerd::Containerd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the peer shim outside this crate's build (its own target folder).
pub fn peer() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target/peer");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--manifest-path"])
        .arg(root.join("benches/runwasi-peer/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo build the peer");
    assert!(status.success(), "the runwasi-model peer did not build");
    target.join("release/containerd-shim-runwasipeer-v1")
}

/// Proportional set size (KiB) of every process that serves this containerd's
/// tasks: the shims (their command line names its socket) and their children.
pub fn pss_kib(ctrd: &Containerd) -> (u64, usize) {
    let socket = ctrd.socket();
    let socket = socket.to_str().unwrap().to_string();
    let mut parents = std::collections::HashMap::new();
    let mut roots = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid: u32 = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        parents.insert(pid, ppid);
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("containerd-shim") && cmdline.contains(&socket) {
            roots.push(pid);
        }
    }
    let serves = |mut pid: u32| loop {
        if roots.contains(&pid) {
            return true;
        }
        match parents.get(&pid) {
            Some(&parent) if parent > 1 => pid = parent,
            _ => return false,
        }
    };
    let mut total = 0;
    let mut count = 0;
    for (&pid, _) in parents.iter() {
        if !serves(pid) {
            continue;
        }
        count += 1;
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        total += rollup
            .lines()
            .find(|l| l.starts_with("Pss:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (total, count)
}
