//! What a container gets from its OCI runtime spec: arguments, environment,
//! working directory, mounts as preopens, the network, and limits.

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wasmpool::{CommandSpec, EndpointSpec, ImageSpec, ServiceSpec, StorageSpec, WasmSpec};

/// The annotation that sets a container's fuel budget (instructions, roughly).
pub const FUEL_ANNOTATION: &str = "io.wasmpool.fuel";
/// The annotation that sets a container's wall-clock deadline (`30s`, `500ms`, `2m`).
pub const DEADLINE_ANNOTATION: &str = "io.wasmpool.deadline";
/// The annotation that caps a container's open resources (descriptors, streams…).
pub const RESOURCES_ANNOTATION: &str = "io.wasmpool.max-open-resources";

/// Mount types that are the container's own kernel file systems, never a
/// host directory a guest could open.
const KERNEL_MOUNTS: &[&str] = &[
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "shm",
];

/// `arg0` and the rest of the command line.
pub fn argv(spec: &Spec) -> (String, Vec<String>) {
    let args = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default();
    match args.split_first() {
        Some((arg0, rest)) => (arg0.clone(), rest.to_vec()),
        None => (String::new(), Vec::new()),
    }
}

/// The container's root directory on the host.
pub fn rootfs(spec: &Spec, bundle: &Path) -> PathBuf {
    let root = spec
        .root()
        .as_ref()
        .map(|root| root.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    }
}

/// The `.wasm` file that arg0 names inside the rootfs, which it may not
/// leave: opened without following a last symlink and without blocking (a
/// FIFO would hang the open), checked to be a regular file on the open
/// descriptor, and read from it — at most `limit` bytes, by its size and as
/// it is read.
pub fn wasm_in_rootfs(rootfs: &Path, arg0: &str, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    if arg0.is_empty() {
        bail!("the container has no command (arg0) and its image no wasm layer");
    }
    let root = rootfs
        .canonicalize()
        .with_context(|| format!("rootfs {}", rootfs.display()))?;
    let named = root.join(arg0.trim_start_matches('/'));
    let path = named
        .canonicalize()
        .with_context(|| format!("`{arg0}` is not a file in the container's rootfs"))?;
    if !path.starts_with(&root) {
        bail!("`{arg0}` leads out of the container's rootfs");
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("cannot open `{arg0}`"))?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        bail!(
            "`{arg0}` is not a regular file ({}): a WebAssembly module or component is",
            kind_of(&meta.file_type())
        );
    }
    if meta.len() > limit {
        bail!(
            "`{arg0}` is {} bytes, more than the shim reads ({limit}, max_artifact_size)",
            meta.len()
        );
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        bail!("`{arg0}` grew past {limit} bytes (max_artifact_size) while it was read");
    }
    Ok(bytes)
}

/// The most entries the shim looks at in a container's preopened folders.
const MAX_ENTRIES: usize = 100_000;

/// Refuses a folder the guest would see (its rootfs, its bind mounts) that
/// holds a device node, a FIFO or a socket anywhere: the rootfs is unpacked as
/// root from the image, so `mknod` in a layer could hand a guest a raw disk,
/// and a FIFO hangs whoever opens it. A guest can make none of them (WASI has
/// no `mknod`), so a check at create holds for the container's life.
pub fn refuse_special_files(dir: &Path) -> Result<()> {
    let mut pending = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(folder) = pending.pop() {
        let entries = std::fs::read_dir(&folder)
            .with_context(|| format!("cannot read {}", folder.display()))?;
        for entry in entries {
            let entry = entry?;
            seen += 1;
            if seen > MAX_ENTRIES {
                bail!(
                    "{} holds more than {MAX_ENTRIES} entries: the shim checks every one a guest could open",
                    dir.display()
                );
            }
            // The entry itself, never what a symlink names (a link is
            // resolved inside the preopen by WASI, onto entries checked here).
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if !kind.is_file() && !kind.is_symlink() {
                bail!(
                    "{} is a {}: a guest's folders hold only files, folders and symlinks",
                    entry.path().display(),
                    kind_of(&kind)
                );
            }
        }
    }
    Ok(())
}

fn kind_of(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_dir() {
        "directory"
    } else if kind.is_symlink() {
        "symlink"
    } else {
        "special file"
    }
}

/// The service spec of a container: everything but its output, which the
/// caller adds.
pub fn service_spec(spec: &Spec, rootfs: &Path) -> Result<ServiceSpec> {
    let (arg0, args) = argv(spec);
    let process = spec.process().as_ref();
    let env: HashMap<String, String> = process
        .and_then(|p| p.env().clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.to_string(), value.to_string()))
        })
        .collect();
    let workdir = process
        .map(|p| p.cwd().to_string_lossy().into_owned())
        .filter(|cwd| !cwd.is_empty() && cwd != "/");
    let annotations = spec.annotations().clone().unwrap_or_default();
    let storage = storage(spec, rootfs);
    for preopen in &storage {
        if let StorageSpec::Bind { source, .. } = preopen {
            refuse_special_files(source)?;
        }
    }
    Ok(ServiceSpec {
        image: ImageSpec::new(arg0),
        env,
        command: CommandSpec {
            entrypoint: None,
            args: Some(args),
            workdir,
        },
        storage,
        wasm: Some(limits(spec, &annotations)?),
        network: network_allowed(spec)?,
        ..Default::default()
    })
}

/// Bind mounts of host directories, as preopens at their destination; the
/// rootfs itself is `/` when the image has one (a rootfs-file image).
fn storage(spec: &Spec, rootfs: &Path) -> Vec<StorageSpec> {
    let mut storage = Vec::new();
    let root_has_files = std::fs::read_dir(rootfs)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if root_has_files {
        let readonly = spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false);
        storage.push(StorageSpec::Bind {
            source: rootfs.to_path_buf(),
            target: "/".into(),
            readonly,
        });
    }
    for mount in spec.mounts().as_deref().unwrap_or_default() {
        let options = mount.options().clone().unwrap_or_default();
        let kind = mount.typ().as_deref().unwrap_or("");
        let is_bind = kind == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        if KERNEL_MOUNTS.contains(&kind) || !is_bind {
            continue;
        }
        let Some(source) = mount.source() else {
            continue;
        };
        if !source.is_dir() {
            // A file mount (resolv.conf, hosts…): WASI preopens are directories.
            continue;
        }
        storage.push(StorageSpec::Bind {
            source: source.clone(),
            target: mount.destination().to_string_lossy().into_owned(),
            readonly: options.iter().any(|o| o == "ro"),
        });
    }
    storage
}

/// Where a container's network is, as its spec's namespaces say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// No network namespace of its own: the shim's (the host's for
    /// `ctr run --net-host` and host-network pods; the pod's, which the shim
    /// entered at its start, for any other container of a pod's shim).
    Shared,
    /// Joins the namespace at this path: a pod's, made by CNI (the sandbox
    /// names `/var/run/netns/cni-…`), or `/proc/PID/ns/net` of its sandbox.
    Joins(PathBuf),
    /// A new, empty namespace (`ctr run` without `--net-host`).
    New,
}

pub fn network(spec: &Spec) -> Network {
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.namespaces().clone())
        .unwrap_or_default();
    match namespaces
        .iter()
        .find(|ns| ns.typ() == LinuxNamespaceType::Network)
    {
        None => Network::Shared,
        Some(ns) => match ns.path() {
            Some(path) if !path.as_os_str().is_empty() => Network::Joins(path.clone()),
            _ => Network::New,
        },
    }
}

/// Moves the calling thread into the network namespace at `path`. The shim's
/// `start` does this before it spawns the pod's shim process, which so is
/// born in the pod's namespace: every thread it makes, and every socket a
/// guest or a served listener opens, is the pod's.
pub fn enter_network(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the network namespace {}", path.display()))?;
    // SAFETY: a valid descriptor; setns changes this thread's namespace only.
    let done = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if done != 0 {
        let error = std::io::Error::last_os_error();
        bail!(
            "cannot enter the network namespace {}: {error}",
            path.display()
        );
    }
    Ok(())
}

/// Whether `path` names the network namespace this thread is in (the same
/// namespace file system inode, as `ip netns identify` compares them).
pub fn is_our_network(path: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::metadata(path)
        .with_context(|| format!("cannot read the network namespace {}", path.display()))?;
    let ours = std::fs::metadata("/proc/thread-self/ns/net")
        .context("cannot read the shim's own network namespace")?;
    Ok(theirs.dev() == ours.dev() && theirs.ino() == ours.ino())
}

/// Whether the container's guest may open sockets: when its network is the
/// shim's own (the host's, or the pod's). A container that asked for a new,
/// empty namespace gets no network at all; one that names a namespace the
/// shim is not in is refused (a shim process serves one network).
pub fn network_allowed(spec: &Spec) -> Result<bool> {
    match network(spec) {
        Network::Shared => Ok(true),
        Network::New => Ok(false),
        Network::Joins(path) => {
            if is_our_network(&path)? {
                Ok(true)
            } else {
                bail!(
                    "the container joins the network namespace {}, which is not its pod's: \
                     one shim process serves one pod and its one network",
                    path.display()
                )
            }
        }
    }
}

/// The port a service listens on when its environment names none: Knative's
/// and Cloud Run's default.
pub const DEFAULT_PORT: u16 = 8080;

/// Where a container whose component exports `handler` is served: every
/// address of its network (the pod's IP, in a pod of its own network), on
/// `$PORT` from its environment (the convention of Knative and Cloud Run),
/// else 8080. A service needs a network to listen on: the pod's, or the
/// host's (`ctr run --net-host`).
pub fn endpoint(service: &ServiceSpec, handler: &str) -> Result<EndpointSpec> {
    if !service.network {
        bail!(
            "a wasi:http service (it exports `{handler}`) needs a network to listen on: \
             its pod's, or the host's (`ctr run --net-host`); this container has a network \
             namespace of its own that no pod made"
        );
    }
    let port = match service.env.get("PORT") {
        None => DEFAULT_PORT,
        Some(text) => text
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|port| *port > 0)
            .with_context(|| format!("PORT={text:?} is not a port from 1 to 65535"))?,
    };
    Ok(EndpointSpec {
        port,
        host: Some(std::net::Ipv4Addr::UNSPECIFIED.into()),
        ..EndpointSpec::http(port)
    })
}

/// The memory limit of the spec, in bytes.
pub fn memory_limit(spec: &Spec) -> Option<i64> {
    spec.linux()
        .as_ref()
        .and_then(|linux| linux.resources().as_ref())
        .and_then(|resources| resources.memory().as_ref())
        .and_then(|memory| memory.limit())
        .filter(|limit| *limit > 0)
}

fn limits(spec: &Spec, annotations: &HashMap<String, String>) -> Result<WasmSpec> {
    let memory = memory_limit(spec);
    let fuel = match annotations.get(FUEL_ANNOTATION) {
        Some(text) => Some(
            text.trim()
                .parse::<u64>()
                .with_context(|| format!("annotation {FUEL_ANNOTATION}={text:?}: not a number"))?,
        ),
        None => None,
    };
    let deadline = match annotations.get(DEADLINE_ANNOTATION) {
        Some(text) => Some(parse_duration(text).with_context(|| {
            format!("annotation {DEADLINE_ANNOTATION}={text:?}: not a duration such as 30s")
        })?),
        None => None,
    };
    let resources = match annotations.get(RESOURCES_ANNOTATION) {
        Some(text) => Some(text.trim().parse::<usize>().with_context(|| {
            format!("annotation {RESOURCES_ANNOTATION}={text:?}: not a number")
        })?),
        None => None,
    };
    Ok(WasmSpec {
        max_fuel: fuel,
        max_memory: memory.map(|limit| limit.to_string()),
        max_execution_time: deadline,
        max_open_resources: resources,
        ..Default::default()
    })
}

/// `250ms`, `30s`, `5m`, `1m30s`, or a bare number of seconds: the library's one way.
fn parse_duration(text: &str) -> Result<Duration> {
    Ok(wasmpool::parse_duration(text)?)
}

#[cfg(test)]
mod tests {
    use super::{endpoint, parse_duration, DEFAULT_PORT};
    use std::time::Duration;
    use wasmpool::ServiceSpec;

    #[test]
    fn a_service_listens_on_port_or_8080_on_every_address_of_its_network() {
        let handler = "wasi:http/incoming-handler@0.2.0";
        let mut spec = ServiceSpec {
            network: true,
            ..Default::default()
        };
        let served = endpoint(&spec, handler).unwrap();
        assert_eq!(served.port, DEFAULT_PORT);
        assert_eq!(served.host, Some(std::net::Ipv4Addr::UNSPECIFIED.into()));
        spec.env.insert("PORT".into(), " 9090 ".into());
        assert_eq!(endpoint(&spec, handler).unwrap().port, 9090);
        for bad in ["0", "65536", "http", "-1", ""] {
            spec.env.insert("PORT".into(), bad.into());
            let error = format!("{:#}", endpoint(&spec, handler).unwrap_err());
            assert!(error.contains("is not a port"), "{bad}: {error}");
        }
        spec.env.remove("PORT");
        spec.network = false;
        let error = format!("{:#}", endpoint(&spec, handler).unwrap_err());
        assert!(error.contains("needs a network to listen on"), "{error}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
