//! A real containerd (Debian 13's 1.7, fetched by `.ci/containerd`) on a
//! private root, state and socket, with our shim on its PATH; and OCI image
//! layout tars for `ctr image import`.

use sha2::{Digest, Sha256};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The runtime name `ctr run --runtime` takes.
pub const RUNTIME: &str = "io.containerd.wasmpool.v1";

/// The folder holding `containerd` and `ctr`: `$WASMPOOL_CONTAINERD_BIN`, else
/// what `.ci/containerd` fetched (run here when it has not been yet).
fn containerd_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("WASMPOOL_CONTAINERD_BIN") {
        return dir.into();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/containerd");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run .ci/containerd");
    assert!(
        out.status.success(),
        ".ci/containerd failed: containerd 1.7 is needed"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

pub struct Containerd {
    pub dir: TempDir,
    bin: PathBuf,
    child: Option<Child>,
    pub namespace: String,
    /// More environment for containerd, and so for the shims it starts.
    env: Vec<(String, String)>,
    /// The network namespace containerd runs in, when the test made one for
    /// it (the CRI tests: the "node" whose bridge the pods' CNI networks use).
    pub node_network: Option<PathBuf>,
}

/// The namespace CRI keeps its containers and images in.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The sandbox image the CRI config names; the tests import one (no
/// registry is reachable), a Linux image the shim never runs.
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.9";
/// The pods' CNI network: a bridge in the node's namespace, its gateway the
/// first address.
pub const POD_SUBNET: &str = "10.88.0.0/24";

impl Containerd {
    pub fn start(namespace: &str) -> Containerd {
        Containerd::start_with(namespace, &[])
    }

    /// A containerd that also finds these shim binaries (by their file names).
    pub fn start_with(namespace: &str, more_shims: &[&Path]) -> Containerd {
        Containerd::start_with_env(namespace, more_shims, &[])
    }

    /// A containerd (and shims) with these environment variables too.
    pub fn start_with_env(
        namespace: &str,
        more_shims: &[&Path],
        env: &[(&str, &str)],
    ) -> Containerd {
        let bin = containerd_bin();
        let dir = tempfile::Builder::new().prefix("ctrd").tempdir().unwrap();
        shim_folder(dir.path(), more_shims);
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/c.sock\"\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n"
            ),
        )
        .unwrap();
        let mut containerd = Containerd {
            dir,
            bin,
            child: None,
            namespace: namespace.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            node_network: None,
        };
        containerd.launch();
        containerd
    }

    /// A containerd with its CRI plugin, as kubelet's node runs it: the
    /// README's runtime entry for wasmpool (beside runc's), a sandbox image
    /// the test imports, and CNI (Debian's bridge, host-local and loopback
    /// plugins, fetched by `.ci/cni-plugins`) on a bridge in a network
    /// namespace this test makes for containerd — the node — so that no pod
    /// address or bridge touches the host's network.
    pub fn start_cri() -> Containerd {
        Containerd::start_cri_with(
            &Image::rootfs(&[("pause", b"never run")], "/pause"),
            &[],
            &[],
        )
    }

    /// A CRI containerd whose sandbox image is `sandbox`, that also finds
    /// these shim binaries, with these more CRI runtimes (handler name,
    /// `runtime_type`) beside runc's and wasmpool's.
    pub fn start_cri_with(
        sandbox: &Image,
        more_shims: &[&Path],
        runtimes: &[(&str, &str)],
    ) -> Containerd {
        let bin = containerd_bin();
        let cni_bin = fetched(".ci/cni-plugins");
        let dir = tempfile::Builder::new().prefix("cri").tempdir().unwrap();
        shim_folder(dir.path(), more_shims);
        let more_runtimes: String = runtimes
            .iter()
            .map(|(name, kind)| {
                format!(
                    "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{name}]\n  runtime_type = \"{kind}\"\n"
                )
            })
            .collect();
        std::fs::create_dir_all(dir.path().join("cache")).unwrap();
        let d = dir.path().display();
        let conf = dir.path().join("cni/conf");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("10-pods.conflist"),
            serde_json::to_vec_pretty(&serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "pods",
                "plugins": [{
                    "type": "bridge",
                    "bridge": "wasmpool0",
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "dataDir": format!("{d}/cni/ipam"),
                    }
                }]
            }))
            .unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
{}
{more_runtimes}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{}"
    conf_dir = "{}"
"#,
                README_RUNTIME_ENTRY,
                cni_bin.display(),
                conf.display()
            ),
        )
        .unwrap();
        // The node: a network namespace kept by a bind mount on a file of
        // ours (util-linux's `unshare --net=FILE`), its loopback up.
        let node = dir.path().join("node-net");
        std::fs::write(&node, "").unwrap();
        let made = Command::new("unshare")
            .arg(format!("--net={}", node.display()))
            .arg("true")
            .status()
            .expect("unshare");
        assert!(made.success(), "cannot make the node's network namespace");
        let up = Command::new("nsenter")
            .arg(format!("--net={}", node.display()))
            .args(["ip", "link", "set", "lo", "up"])
            .status()
            .expect("nsenter ip");
        assert!(up.success(), "cannot bring up the node's loopback");
        let mut containerd = Containerd {
            dir,
            bin,
            child: None,
            namespace: CRI_NAMESPACE.to_string(),
            env: Vec::new(),
            node_network: Some(node),
        };
        containerd.launch();
        containerd.import(SANDBOX_IMAGE, &sandbox.tar(SANDBOX_IMAGE));
        containerd
    }

    /// containerd's socket (its gRPC API, CRI's included).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    /// Runs `work` on a thread in the node's network namespace (where
    /// host-network pods listen and from where pod IPs are reached).
    pub fn on_node<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let node = self.node_network.clone().expect("a CRI containerd");
        std::thread::spawn(move || {
            enter_network(&node);
            work()
        })
        .join()
        .unwrap()
    }

    fn launch(&mut self) {
        let d = self.dir.path();
        let path = format!(
            "{}:{}:{}",
            d.join("bin").display(),
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("containerd.log"))
            .unwrap();
        let mut command = Command::new(self.bin.join("containerd"));
        if let Some(node) = &self.node_network {
            use std::os::fd::{AsRawFd, OwnedFd};
            let namespace: OwnedFd = std::fs::File::open(node).unwrap().into();
            // SAFETY: setns is async-signal-safe; the descriptor stays open
            // in the parent until spawn returns.
            unsafe {
                command.pre_exec(move || {
                    if libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .arg("--config")
            .arg(d.join("config.toml"))
            .env("PATH", path)
            .env("WASMPOOL_SHIM_CACHE", d.join("cache"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start containerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops containerd (its shims go on) and starts it again on the same state.
    pub fn restart(&mut self) {
        self.stop_daemon();
        self.launch();
    }

    fn stop_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.bin.join("ctr"));
        command
            .arg("--address")
            .arg(self.dir.path().join("c.sock"))
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Runs `ctr ARGS`, bounded in time.
    pub fn ctr(&self, args: &[&str]) -> Output {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ctr");
        bounded(child, Duration::from_secs(120), args)
    }

    /// Runs `ctr ARGS` and returns its stdout; fails with its stderr otherwise.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Imports an OCI layout tar under `name`.
    pub fn import(&self, name: &str, tar: &[u8]) {
        let file = self
            .dir
            .path()
            .join(format!("{}.tar", name.replace(['/', ':'], "_")));
        std::fs::write(&file, tar).unwrap();
        self.ctr_ok(&["image", "import", "--all-platforms", file.to_str().unwrap()]);
    }

    /// `ctr run --rm --runtime … IMAGE ID EXTRA…` in the foreground.
    pub fn run(&self, flags: &[&str], image: &str, id: &str, command: &[&str]) -> Output {
        let mut args = vec!["run", "--rm", "--runtime", RUNTIME];
        args.extend_from_slice(flags);
        args.push(image);
        args.push(id);
        args.extend_from_slice(command);
        self.ctr(&args)
    }

    /// `ctr run -d --runtime … FLAGS IMAGE ID`, on our shim.
    pub fn run_detached(&self, flags: &[&str], image: &str, id: &str) {
        let mut args = vec!["run", "-d", "--runtime", RUNTIME];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[image, id]);
        self.ctr_ok(&args);
    }

    /// The pids of the wasmpool shim processes serving this containerd.
    pub fn shims(&self) -> Vec<u32> {
        self.processes("containerd-shim-wasmpool-v1")
    }

    /// The pids of the processes whose command line names `binary` and this
    /// containerd's socket.
    pub fn processes(&self, binary: &str) -> Vec<u32> {
        let socket = self.dir.path().join("c.sock");
        let socket = socket.to_str().unwrap();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains(binary) && cmdline.contains(socket) {
                pids.push(pid);
            }
        }
        pids
    }

    /// A task's status as `ctr task ls` says it (`RUNNING`, `STOPPED`…).
    pub fn task_status(&self, id: &str) -> Option<String> {
        let listing = self.ctr_ok(&["task", "ls"]);
        listing.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.first() == Some(&id)).then(|| fields.last().unwrap().to_string())
        })
    }

    /// Waits (bounded) until `id`'s task is `status`.
    pub fn until_status(&self, id: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.task_status(id);
            if now.as_deref() == Some(status) {
                return;
            }
            assert!(Instant::now() < deadline, "{id} is {now:?}, not {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for pid in self.processes("containerd-shim") {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        // The sockets of shims that were killed (a shim removes its own when it exits).
        let tasks = self.dir.path().join("state/io.containerd.runtime.v2.task");
        for bundle in std::fs::read_dir(tasks.join(&self.namespace))
            .into_iter()
            .flatten()
            .flatten()
        {
            let address =
                std::fs::read_to_string(bundle.path().join("address")).unwrap_or_default();
            if let Some(socket) = address.trim().strip_prefix("unix://") {
                let _ = std::fs::remove_file(socket);
            }
        }
        self.stop_daemon();
        // Rootfs mounts the shims or snapshotter left under our folder.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let root = self.dir.path().to_str().unwrap().to_string();
        let mut targets: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split_whitespace().nth(1))
            .filter(|target| target.starts_with(&root))
            .collect();
        targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for target in targets {
            let path = std::ffi::CString::new(target).unwrap();
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// The containerd config lines that register wasmpool with CRI, as the
/// README's Kubernetes recipe gives them (a test holds the README to them).
pub const README_RUNTIME_ENTRY: &str = r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmpool]
  runtime_type = "io.containerd.wasmpool.v1""#;

/// `DIR/bin`, put first on containerd's PATH: our shim and these others, by
/// their file names.
fn shim_folder(dir: &Path, more_shims: &[&Path]) {
    let shims = dir.join("bin");
    std::fs::create_dir_all(&shims).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_containerd-shim-wasmpool-v1"),
        shims.join("containerd-shim-wasmpool-v1"),
    )
    .unwrap();
    for shim in more_shims {
        std::os::unix::fs::symlink(shim, shims.join(shim.file_name().unwrap())).unwrap();
    }
}

/// Moves this thread into the network namespace at `path`.
pub fn enter_network(path: &Path) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    let done = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        done,
        0,
        "setns {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Runs a `.ci` fetch script and returns the folder it prints.
fn fetched(script: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run a .ci fetch script");
    assert!(out.status.success(), "{} failed", script.display());
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn bounded(mut child: Child, limit: Duration, what: &[&str]) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "ctr {what:?} hung: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An OCI image layout tar of one manifest.
pub struct Image {
    blobs: Vec<Vec<u8>>,
    config: serde_json::Value,
    layers: Vec<serde_json::Value>,
}

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": digest(bytes), "size": bytes.len()})
}

impl Image {
    /// An image whose one layer is the raw WebAssembly, of `media_type`.
    pub fn wasm_layer(wasm: &[u8], media_type: &str, os: &str) -> Image {
        Image {
            blobs: vec![wasm.to_vec()],
            // The layer's digest in the config, as the wasm OCI artifact
            // config's `layerDigests` has it: CRI knows an image by its
            // config's digest, so two images whose configs were the same
            // bytes would be one image to it.
            config: serde_json::json!({
                "architecture": "wasm", "os": os,
                "config": {"Entrypoint": ["/app.wasm"]},
                "layerDigests": [digest(wasm)],
                "rootfs": {"type": "layers", "diff_ids": []}
            }),
            layers: vec![descriptor(media_type, wasm)],
        }
    }

    /// A Linux image whose one layer (a tar) holds these files; runs `entrypoint`.
    pub fn rootfs(files: &[(&str, &[u8])], entrypoint: &str) -> Image {
        Image::rootfs_of(tar(files), entrypoint)
    }

    /// A Linux image whose one layer (a tar) holds these files; runs `argv`.
    pub fn rootfs_argv(files: &[(&str, &[u8])], argv: &[&str]) -> Image {
        let mut image = Image::rootfs(files, argv[0]);
        image.config["config"]["Entrypoint"] = serde_json::json!(argv);
        image
    }

    /// A Linux image whose one layer is the tar `layer`; runs `entrypoint`.
    pub fn rootfs_of(layer: Vec<u8>, entrypoint: &str) -> Image {
        Image {
            blobs: vec![layer.clone()],
            config: serde_json::json!({
                "architecture": "amd64", "os": "linux",
                "config": {"Entrypoint": [entrypoint]},
                "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]}
            }),
            layers: vec![descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
        }
    }

    /// The layout tar, naming the image `name` (`docker.io/library/x:latest`).
    pub fn tar(&self, name: &str) -> Vec<u8> {
        let config = serde_json::to_vec(&self.config).unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": self.layers,
        }))
        .unwrap();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest(&manifest),
                "size": manifest.len(),
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": "latest"
                }
            }]
        }))
        .unwrap();
        let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
        for blob in self.blobs.iter().chain([&config, &manifest]) {
            let name = format!("blobs/sha256/{}", &digest(blob)["sha256:".len()..]);
            blobs.push((name, blob.clone()));
        }
        let mut files: Vec<(&str, &[u8])> = vec![
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            ("index.json", &index),
        ];
        for (name, bytes) in &blobs {
            files.push((name, bytes));
        }
        tar(&files)
    }
}

/// A ustar archive of regular files (folders are implied by their paths).
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let entries: Vec<Entry> = files
        .iter()
        .map(|(name, bytes)| Entry::File(name, bytes))
        .collect();
    tar_of(&entries)
}

/// An entry of a layer: a regular file, or a special file a hostile image holds.
pub enum Entry<'a> {
    File(&'a str, &'a [u8]),
    /// A character device (`mknod NAME c MAJOR MINOR`).
    CharDevice(&'a str, u32, u32),
    Fifo(&'a str),
}

/// A ustar archive of these entries.
pub fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let (name, bytes, kind, device): (&str, &[u8], u8, (u32, u32)) = match entry {
            Entry::File(name, bytes) => (name, bytes, b'0', (0, 0)),
            Entry::CharDevice(name, major, minor) => (name, &[], b'3', (*major, *minor)),
            Entry::Fifo(name) => (name, &[], b'6', (0, 0)),
        };
        let mut header = [0u8; 512];
        let field = |header: &mut [u8; 512], at: usize, len: usize, text: &[u8]| {
            header[at..at + text.len().min(len)].copy_from_slice(&text[..text.len().min(len)]);
        };
        assert!(name.len() < 100, "short names only");
        field(&mut header, 0, 100, name.as_bytes());
        field(&mut header, 100, 8, b"0000755\0");
        field(&mut header, 108, 8, b"0000000\0");
        field(&mut header, 116, 8, b"0000000\0");
        field(
            &mut header,
            124,
            12,
            format!("{:011o}\0", bytes.len()).as_bytes(),
        );
        field(&mut header, 136, 12, b"00000000000\0");
        field(&mut header, 148, 8, b"        ");
        header[156] = kind;
        field(&mut header, 257, 6, b"ustar\0");
        field(&mut header, 263, 2, b"00");
        field(
            &mut header,
            329,
            8,
            format!("{:07o}\0", device.0).as_bytes(),
        );
        field(
            &mut header,
            337,
            8,
            format!("{:07o}\0", device.1).as_bytes(),
        );
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        field(&mut header, 148, 8, format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(bytes);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}
