//! containerd's task service over one `WasmRuntime`: each container of the
//! group is a container of the runtime.

use crate::content;
use crate::oci;
use crate::output::Output;
use containerd_shim::api::{
    ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest,
    DeleteResponse, Empty, ExecProcessRequest, KillRequest, PidsRequest, PidsResponse,
    ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest,
    StatsResponse, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::event::Event;
use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskIO, TaskStart};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::types::task::{ProcessInfo, Status};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Error, ExitSignal, Task, TtrpcContext, TtrpcResult};
use oci_spec::runtime::Spec;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmpool::{ContainerId, Outcome, Runtime, WasmConfig, WasmRuntime};

/// Where the shim keeps compiled code unless `WASMPOOL_SHIM_CACHE` says
/// otherwise: a root-owned folder (the runtime refuses one others can write).
const DEFAULT_CACHE: &str = "/var/lib/wasmpool/shim";

/// How long a TERM lets a service finish its requests before they are stopped.
const TERM_GRACE: Duration = Duration::from_secs(10);

pub struct Tasks {
    runtime: Arc<WasmRuntime>,
    /// The most bytes of WebAssembly the shim reads for a container (a layer
    /// or a rootfs file): the runtime's `max_artifact_size`.
    max_artifact: u64,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    events: Arc<Events>,
    namespace: String,
    address: String,
    exit: Arc<ExitSignal>,
}

/// containerd's view of one container.
struct Container {
    id: ContainerId,
    /// A guest of the runtime, or a pod's sandbox (its placeholder).
    kind: Kind,
    /// The memory limit its spec gave at create (bytes), if any.
    memory_limit: Option<i64>,
    bundle: String,
    stdio: [String; 3],
    rootfs: PathBuf,
    phase: Mutex<Phase>,
    ended: Condvar,
    /// The signal that ended it, once a kill asked (its exit status is 128 + it).
    signal: Mutex<Option<u32>>,
    output: Mutex<Option<Output>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A WebAssembly guest: a container of the runtime.
    Guest,
    /// A pod's sandbox container (CRI's pause container): nothing runs, it
    /// is the pod's placeholder from its start until it is killed, and its
    /// end stops what is left of the pod.
    Sandbox,
}

#[derive(Clone, Copy)]
enum Phase {
    Created,
    Running,
    Exited { status: u32, at: Moment },
}

#[derive(Clone, Copy)]
struct Moment {
    seconds: i64,
    nanos: i32,
}

impl Moment {
    fn now() -> Moment {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Moment {
            seconds: since.as_secs() as i64,
            nanos: since.subsec_nanos() as i32,
        }
    }

    fn timestamp(self) -> Timestamp {
        Timestamp {
            seconds: self.seconds,
            nanos: self.nanos,
            ..Default::default()
        }
    }
}

/// containerd's event service. Its connection is made again when a publish
/// fails — containerd restarted, say — and the event sent once more, for a
/// while: an exit event must not be lost to a restart.
struct Events {
    publisher: Mutex<RemotePublisher>,
    /// containerd's ttrpc address (`TTRPC_ADDRESS`), to connect again.
    address: Option<String>,
    namespace: String,
}

/// How long an event is tried again while containerd cannot be reached.
const PUBLISH_RETRY: Duration = Duration::from_secs(30);
/// How long one publish may wait for containerd's answer.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

impl Events {
    fn send<E: Event + Clone>(&self, event: E) {
        let topic = event.topic();
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let context = containerd_shim::protos::ttrpc::context::with_timeout(
                PUBLISH_TIMEOUT.as_nanos() as i64,
            );
            let sent = self.publisher.lock().publish(
                context,
                &topic,
                &self.namespace,
                Box::new(event.clone()),
            );
            let Err(error) = sent else {
                return;
            };
            let Some(address) = &self.address else {
                log::warn!("cannot publish {topic}: {error}");
                return;
            };
            if started.elapsed() > PUBLISH_RETRY {
                log::warn!("cannot publish {topic} (tried again for {PUBLISH_RETRY:?}): {error}");
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
            match RemotePublisher::new(address) {
                Ok(publisher) => *self.publisher.lock() = publisher,
                Err(again) => log::debug!("containerd's event service at {address}: {again}"),
            }
        }
    }
}

fn pid() -> u32 {
    std::process::id()
}

impl Tasks {
    pub fn new(
        namespace: &str,
        address: &str,
        publisher: RemotePublisher,
        exit: Arc<ExitSignal>,
    ) -> Tasks {
        let cache_dir = std::env::var_os("WASMPOOL_SHIM_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE));
        let mut config = WasmConfig {
            cache_dir,
            ..Default::default()
        };
        if let Some(size) = std::env::var("WASMPOOL_SHIM_MAX_ARTIFACT_SIZE")
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            config.max_artifact_size = size;
        }
        let max_artifact = config.max_artifact_size;
        let runtime = match WasmRuntime::new(config) {
            Ok(runtime) => runtime,
            Err(error) => {
                // Without a runtime no container can run: say why and let
                // containerd see the shim fail.
                log::error!("wasmpool: cannot start the runtime: {error}");
                eprintln!("wasmpool: cannot start the runtime: {error}");
                std::process::exit(1);
            }
        };
        Tasks {
            runtime: Arc::new(runtime),
            max_artifact,
            containers: Mutex::new(HashMap::new()),
            events: Arc::new(Events {
                publisher: Mutex::new(publisher),
                address: std::env::var("TTRPC_ADDRESS").ok(),
                namespace: namespace.to_string(),
            }),
            namespace: namespace.to_string(),
            address: address.to_string(),
            exit,
        }
    }

    fn get(&self, id: &str) -> Result<Arc<Container>, Error> {
        self.containers
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFoundError(format!("container {id} not found")))
    }

    fn create_task(&self, req: &CreateTaskRequest) -> Result<CreateTaskResponse, Error> {
        if req.terminal {
            return Err(Error::InvalidArgument(
                "a WebAssembly container has no terminal: run it without -t".into(),
            ));
        }
        if !req.checkpoint.is_empty() || !req.parent_checkpoint.is_empty() {
            return Err(Error::Unimplemented("checkpoints are not supported".into()));
        }
        if self.containers.lock().contains_key(&req.id) {
            return Err(Error::InvalidArgument(format!(
                "container {} already exists",
                req.id
            )));
        }
        let bundle = Path::new(&req.bundle);
        let spec = Spec::load(bundle.join("config.json")).map_err(|error| {
            Error::InvalidArgument(format!("cannot read the OCI spec: {error}"))
        })?;
        let rootfs = oci::rootfs(&spec, bundle);
        if is_sandbox(&spec) {
            // The pause image is never run: its rootfs is not even mounted.
            let container = Container::new(req, Kind::Sandbox, &rootfs, None, None);
            return Ok(self.created(req, container));
        }
        let _ = std::fs::create_dir_all(&rootfs);
        for mount in req.rootfs.iter() {
            let none_if_empty = |text: &str| (!text.is_empty()).then(|| text.to_string());
            // `nodev`: a device node a layer holds cannot be opened through it.
            let mut options = mount.options.clone();
            options.push("nodev".to_string());
            containerd_shim::mount::mount_rootfs(
                none_if_empty(&mount.type_).as_deref(),
                none_if_empty(&mount.source).as_deref(),
                &options,
                &rootfs,
            )?;
        }
        match self.register(req, &spec, &rootfs) {
            Ok(container) => Ok(self.created(req, container)),
            Err(error) => {
                unmount(&rootfs);
                Err(error)
            }
        }
    }

    /// Keeps a created container and says so to containerd.
    fn created(&self, req: &CreateTaskRequest, container: Container) -> CreateTaskResponse {
        self.containers
            .lock()
            .insert(req.id.clone(), Arc::new(container));
        self.events.send(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: Some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                ..Default::default()
            })
            .into(),
            pid: pid(),
            ..Default::default()
        });
        CreateTaskResponse {
            pid: pid(),
            ..Default::default()
        }
    }

    /// Finds the container's WebAssembly and creates it in the runtime.
    fn register(
        &self,
        req: &CreateTaskRequest,
        spec: &Spec,
        rootfs: &Path,
    ) -> Result<Container, Error> {
        let invalid = |what: String| Error::InvalidArgument(what);
        let (arg0, _) = oci::argv(spec);
        let layer = content::wasm_layer(&self.address, &self.namespace, &req.id, self.max_artifact)
            .map_err(|error| {
                invalid(format!("cannot read the image from containerd: {error:#}"))
            })?;
        let mut service = oci::service_spec(spec, rootfs).map_err(|e| invalid(format!("{e:#}")))?;
        // The image's wasm layer, else the rootfs file arg0 names.
        let wasm = match layer {
            Some(bytes) => bytes,
            None => {
                let bytes =
                    oci::wasm_in_rootfs(rootfs, &arg0, self.max_artifact).map_err(|error| {
                        invalid(format!(
                            "not a WebAssembly image: it has no wasm layer ({}) and {error:#}",
                            content::WASM_LAYER_TYPES.join(", ")
                        ))
                    })?;
                check_wasm(&bytes, &arg0).map_err(invalid)?;
                bytes
            }
        };
        if let Some(handler) = wasmpool::http_handler_export(&wasm) {
            let endpoint =
                oci::endpoint(&service, &handler).map_err(|e| invalid(format!("{e:#}")))?;
            service.endpoints = vec![endpoint];
        }
        let (output, sink) = Output::open(&req.id, &req.stdout, &req.stderr)
            .map_err(|error| invalid(format!("cannot open the container's stdio: {error}")))?;
        service.output = Some(sink);
        let container = Container::new(
            req,
            Kind::Guest,
            rootfs,
            Some(output),
            oci::memory_limit(spec),
        );
        self.runtime
            .create_container_from_bytes(&container.id, &service, wasm)
            .map_err(|error| invalid(error.to_string()))?;
        Ok(container)
    }

    fn start_task(&self, req: &StartRequest) -> Result<StartResponse, Error> {
        refuse_exec(&req.exec_id)?;
        let container = self.get(&req.id)?;
        {
            let mut phase = container.phase.lock();
            if !matches!(*phase, Phase::Created) {
                return Err(Error::FailedPreconditionError(format!(
                    "container {} was started already",
                    req.id
                )));
            }
            *phase = Phase::Running;
        }
        if container.kind == Kind::Sandbox {
            // Running from now until a kill: nothing to start.
            self.events.send(TaskStart {
                container_id: req.id.clone(),
                pid: pid(),
                ..Default::default()
            });
            return Ok(StartResponse {
                pid: pid(),
                ..Default::default()
            });
        }
        let handle = match self.runtime.start(&container.id) {
            Ok(handle) => handle,
            Err(error) => {
                let note = format!("[wasmpool] {}: {error}", req.id);
                container.end(126, Some(note), None);
                return Err(Error::FailedPreconditionError(error.to_string()));
            }
        };
        self.events.send(TaskStart {
            container_id: req.id.clone(),
            pid: pid(),
            ..Default::default()
        });
        let events = self.events.clone();
        std::thread::Builder::new()
            .name(format!("wait-{}", req.id))
            .stack_size(256 << 10)
            .spawn(move || {
                // A deadline keeps this thread a waiter only: the guest runs
                // on the runtime's workers, never here.
                let outcome = loop {
                    if let Some(outcome) = handle.wait_timeout(Duration::from_secs(3600)) {
                        break outcome;
                    }
                };
                let signal = *container.signal.lock();
                let status = match (&outcome, signal) {
                    (Outcome::Stopped, Some(signal)) => 128 + signal,
                    (outcome, _) => outcome.exit_code() as u32,
                };
                let note = match &outcome {
                    Outcome::Exited(_) => None,
                    Outcome::Stopped if signal.is_some() => None,
                    other => Some(format!("[wasmpool] {}: {other}", container.id.service)),
                };
                container.end(status, note, Some(&events));
            })
            .map_err(|error| Error::Other(format!("cannot start a waiter: {error}")))?;
        Ok(StartResponse {
            pid: pid(),
            ..Default::default()
        })
    }

    fn kill_task(&self, req: &KillRequest) -> Result<Empty, Error> {
        refuse_exec(&req.exec_id)?;
        let container = self.get(&req.id)?;
        let signal = req.signal;
        let phase = *container.phase.lock();
        match phase {
            Phase::Exited { .. } => {
                return Err(Error::NotFoundError(format!(
                    "container {}: process already finished",
                    req.id
                )))
            }
            _ if signal == 0 || ignored(signal) => return Ok(Empty::new()),
            _ if stops_a_process(signal) => {
                return Err(Error::InvalidArgument(format!(
                    "signal {signal}: a WebAssembly container cannot be paused"
                )))
            }
            _ if container.kind == Kind::Sandbox => {
                self.end_pod(&container, signal);
                return Ok(Empty::new());
            }
            Phase::Created => {
                // Killed before it started: it ends here, as a process would.
                self.kill_at_once(&container, signal);
                return Ok(Empty::new());
            }
            Phase::Running => {}
        }
        let first = {
            let mut signalled = container.signal.lock();
            let first = signalled.is_none();
            signalled.get_or_insert(signal);
            first
        };
        if signal == libc::SIGKILL as u32 {
            // Asks and returns: the waiter sees the end (the error says only
            // that it has not ended yet).
            let _ = self.runtime.stop_container(&container.id, Duration::ZERO);
        } else if first {
            // A service drains its requests first; a command has nothing
            // to drain and stops at once either way. One drain per
            // container: a second TERM changes nothing.
            let runtime = self.runtime.clone();
            let id = container.id.clone();
            std::thread::spawn(move || {
                let _ = runtime.stop_container(&id, TERM_GRACE);
            });
        }
        Ok(Empty::new())
    }

    /// Stops a guest at once for `signal`: a running one ends on its waiter
    /// (with 128 + the first signal), one not yet started ends here.
    fn kill_at_once(&self, container: &Container, signal: u32) {
        container.signal.lock().get_or_insert(signal);
        let _ = self.runtime.stop_container(&container.id, Duration::ZERO);
        if matches!(*container.phase.lock(), Phase::Created) {
            container.end(128 + signal, None, Some(&self.events));
        }
    }

    /// The pod's sandbox is killed: it ends as the pause process would (0 on
    /// TERM or INT, which pause catches; 128 + the signal otherwise), and
    /// whatever of the pod still runs is stopped at once, as the kernel ends
    /// a pod's processes with its sandbox.
    fn end_pod(&self, sandbox: &Container, signal: u32) {
        let others: Vec<Arc<Container>> = self
            .containers
            .lock()
            .values()
            .filter(|c| c.kind == Kind::Guest)
            .cloned()
            .collect();
        for container in others {
            if matches!(*container.phase.lock(), Phase::Exited { .. }) {
                continue;
            }
            self.kill_at_once(&container, libc::SIGKILL as u32);
        }
        let status = if signal == libc::SIGTERM as u32 || signal == libc::SIGINT as u32 {
            0
        } else {
            128 + signal
        };
        sandbox.end(status, None, Some(&self.events));
    }

    fn delete_task(&self, req: &DeleteRequest) -> Result<DeleteResponse, Error> {
        refuse_exec(&req.exec_id)?;
        let container = self.get(&req.id)?;
        let (status, at) = match *container.phase.lock() {
            Phase::Running => {
                return Err(Error::FailedPreconditionError(format!(
                    "container {} is running: kill it first",
                    req.id
                )))
            }
            Phase::Created => (0, Moment::now()),
            Phase::Exited { status, at } => (status, at),
        };
        let _ = self.runtime.remove_container(&container.id);
        if let Some(mut output) = container.output.lock().take() {
            output.finish(None);
        }
        unmount(&container.rootfs);
        self.containers.lock().remove(&req.id);
        self.events.send(TaskDelete {
            container_id: req.id.clone(),
            pid: pid(),
            exit_status: status,
            exited_at: Some(at.timestamp()).into(),
            ..Default::default()
        });
        Ok(DeleteResponse {
            pid: pid(),
            exit_status: status,
            exited_at: Some(at.timestamp()).into(),
            ..Default::default()
        })
    }

    fn wait_task(&self, req: &WaitRequest) -> Result<WaitResponse, Error> {
        refuse_exec(&req.exec_id)?;
        let container = self.get(&req.id)?;
        let mut phase = container.phase.lock();
        loop {
            if let Phase::Exited { status, at } = *phase {
                return Ok(WaitResponse {
                    exit_status: status,
                    exited_at: Some(at.timestamp()).into(),
                    ..Default::default()
                });
            }
            container.ended.wait(&mut phase);
        }
    }

    fn state_task(&self, req: &StateRequest) -> Result<StateResponse, Error> {
        refuse_exec(&req.exec_id)?;
        let container = self.get(&req.id)?;
        let (status, exit_status, exited_at) = match *container.phase.lock() {
            Phase::Created => (Status::CREATED, 0, None),
            Phase::Running => (Status::RUNNING, 0, None),
            Phase::Exited { status, at } => (Status::STOPPED, status, Some(at.timestamp())),
        };
        let [stdin, stdout, stderr] = container.stdio.clone();
        Ok(StateResponse {
            id: req.id.clone(),
            bundle: container.bundle.clone(),
            pid: pid(),
            status: status.into(),
            stdin,
            stdout,
            stderr,
            exit_status,
            exited_at: exited_at.into(),
            ..Default::default()
        })
    }

    /// A new resource limit for a container (CRI's UpdateContainerResources).
    /// A guest's memory limit was fixed when it was created — its linear
    /// memories were reserved against it, and a service's request instances
    /// are sized by it — so a different limit is refused, saying so; the same
    /// limit, or none, changes nothing and is accepted. CPU shares, quotas and
    /// sets are not a guest's own (guests share the shim's workers in fuel
    /// slices), so they are accepted and have no effect here.
    fn update_task(&self, req: &UpdateTaskRequest) -> Result<Empty, Error> {
        let container = self.get(&req.id)?;
        let Some(any) = req.resources.as_ref() else {
            return Ok(Empty::new());
        };
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|error| {
                Error::InvalidArgument(format!(
                    "cannot read the resources ({}): {error}",
                    any.type_url
                ))
            })?;
        let wanted = resources
            .memory()
            .as_ref()
            .and_then(|memory| memory.limit())
            .filter(|limit| *limit > 0);
        match wanted {
            Some(limit) if Some(limit) != container.memory_limit => {
                Err(Error::FailedPreconditionError(format!(
                    "container {}: a WebAssembly guest's memory limit cannot be changed while \
                     it exists (it is {}; {limit} bytes asked): its memories were reserved \
                     against it at create — create the container again with the new limit",
                    req.id,
                    match container.memory_limit {
                        Some(limit) => format!("{limit} bytes"),
                        None => "the runtime's default".to_string(),
                    }
                )))
            }
            _ => Ok(Empty::new()),
        }
    }

    /// cgroup v1 metrics from the runtime's own accounting: the guest has no
    /// cgroup, its CPU time and memory are what the runtime measured.
    fn stats_task(&self, req: &StatsRequest) -> Result<StatsResponse, Error> {
        let container = self.get(&req.id)?;
        let stats = match container.kind {
            // The placeholder uses nothing of its own.
            Kind::Sandbox => wasmpool::ContainerStats::default(),
            Kind::Guest => self
                .runtime
                .get_container_stats(&container.id)
                .map_err(|error| Error::NotFoundError(error.to_string()))?,
        };
        let running = matches!(*container.phase.lock(), Phase::Running);
        let metrics = Metrics {
            pids: Some(PidsStat {
                current: u64::from(running),
                ..Default::default()
            })
            .into(),
            cpu: Some(CPUStat {
                usage: Some(CPUUsage {
                    total: stats.cpu_usage_usec.saturating_mul(1000),
                    user: stats.cpu_usage_usec.saturating_mul(1000),
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            })
            .into(),
            memory: Some(MemoryStat {
                usage: Some(MemoryEntry {
                    usage: stats.memory_bytes,
                    max: stats.memory_peak_bytes,
                    limit: stats.memory_limit,
                    ..Default::default()
                })
                .into(),
                rss: stats.memory_bytes,
                total_rss: stats.memory_bytes,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let any = containerd_shim::util::convert_to_any(Box::new(metrics))?;
        Ok(StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }
}

impl Container {
    fn new(
        req: &CreateTaskRequest,
        kind: Kind,
        rootfs: &Path,
        output: Option<Output>,
        memory_limit: Option<i64>,
    ) -> Container {
        Container {
            id: ContainerId::new(req.id.clone(), 0),
            kind,
            memory_limit,
            bundle: req.bundle.clone(),
            stdio: [req.stdin.clone(), req.stdout.clone(), req.stderr.clone()],
            rootfs: rootfs.to_path_buf(),
            phase: Mutex::new(Phase::Created),
            ended: Condvar::new(),
            signal: Mutex::new(None),
            output: Mutex::new(output),
        }
    }

    /// Ends the container once: its output flushed and closed first (so that
    /// `ctr run` has all of it), then — when `events` is given — `TaskExit`
    /// published, and only then its phase set and every `Wait` woken: a
    /// `ctr run --rm` that shuts the shim down once `Wait` returns has the
    /// exit event already.
    fn end(&self, status: u32, note: Option<String>, events: Option<&Events>) -> Moment {
        if let Some(mut output) = self.output.lock().take() {
            output.finish(note);
        }
        if let Phase::Exited { at, .. } = *self.phase.lock() {
            return at;
        }
        let at = Moment::now();
        if let Some(events) = events {
            events.send(TaskExit {
                container_id: self.id.service.clone(),
                id: self.id.service.clone(),
                pid: pid(),
                exit_status: status,
                exited_at: Some(at.timestamp()).into(),
                ..Default::default()
            });
        }
        let mut phase = self.phase.lock();
        if let Phase::Exited { at, .. } = *phase {
            return at;
        }
        *phase = Phase::Exited { status, at };
        self.ended.notify_all();
        at
    }
}

/// Whether the spec is a pod's sandbox container (CRI's annotation).
fn is_sandbox(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(crate::shim::CONTAINER_TYPE_ANNOTATION))
        .is_some_and(|kind| kind == "sandbox")
}

fn refuse_exec(exec_id: &str) -> Result<(), Error> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(exec_refused())
    }
}

/// The same words as `Runtime::exec`.
fn exec_refused() -> Error {
    Error::Unimplemented("exec: a guest has no shell or process table to run a command in".into())
}

/// Signals whose default action is to do nothing.
fn ignored(signal: u32) -> bool {
    [libc::SIGCHLD, libc::SIGCONT, libc::SIGURG, libc::SIGWINCH]
        .iter()
        .any(|s| *s as u32 == signal)
}

/// Signals that would stop (pause) a process.
fn stops_a_process(signal: u32) -> bool {
    [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU]
        .iter()
        .any(|s| *s as u32 == signal)
}

/// A rootfs file that is not WebAssembly is refused before the runtime
/// compiles it, with words a user of `ctr` understands.
fn check_wasm(bytes: &[u8], arg0: &str) -> Result<(), String> {
    if bytes.starts_with(b"\0asm") {
        Ok(())
    } else {
        Err(format!(
            "not a WebAssembly image: `{arg0}` is not a WebAssembly module or component"
        ))
    }
}

/// Unmounts a container's rootfs (a lazy unmount: nothing of ours holds it).
pub fn unmount(rootfs: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(rootfs.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path; umount2 touches no memory of ours.
    unsafe {
        libc::umount2(path.as_ptr(), libc::MNT_DETACH);
    }
}

impl Task for Tasks {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        Ok(self.create_task(&req)?)
    }

    fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        Ok(self.start_task(&req)?)
    }

    fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        Ok(self.kill_task(&req)?)
    }

    fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        Ok(self.delete_task(&req)?)
    }

    fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        Ok(self.wait_task(&req)?)
    }

    fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        Ok(self.state_task(&req)?)
    }

    fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        Ok(self.stats_task(&req)?)
    }

    fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        Ok(self.update_task(&req)?)
    }

    fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        self.get(&req.id)?;
        Ok(PidsResponse {
            processes: vec![ProcessInfo {
                pid: pid(),
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    fn exec(&self, _ctx: &TtrpcContext, _req: ExecProcessRequest) -> TtrpcResult<Empty> {
        Err(exec_refused().into())
    }

    fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        self.get(&req.id)?;
        Ok(ConnectResponse {
            shim_pid: pid(),
            task_pid: pid(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        if self.containers.lock().is_empty() {
            self.exit.signal();
        }
        Ok(Empty::new())
    }
}
