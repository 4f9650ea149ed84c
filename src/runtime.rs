//! The public facade: `WasmRuntime`, the container registry, and the `Runtime` trait.

use crate::artifacts::{image_path, images, ArtifactCache, DiskCache, Engines, ImageFiles};
use crate::guest::instance::Serving;
use crate::guest::keyvalue::KeyValue;
use crate::guest::{
    self, Artifact, Instance, Linking, LogEntry, LogFollower, Phase, Prepared, RunPlan, Shared,
};
use crate::registry::{PulledImage, Puller};
use crate::scheduler::{self, Admission, RunQueue, Task, Timers, WaitHandle};
#[cfg(feature = "serve")]
use crate::serve::{ResponseBody, Service};
use crate::settings::{
    CachedImage, ContainerId, ContainerState, ContainerStats, DiskUsage, Error, Outcome,
    PruneReport, PullPolicy, Result, ServiceSpec, WasmConfig,
};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The container lifecycle, blocking: the same operations as an async container
/// agent's runtime, each returning when it is done.
///
/// The trait is object safe, so hosts can hold a `Box<dyn Runtime>`.
pub trait Runtime: Send + Sync {
    /// Pulls the image into the cache unless it is there already (`PullPolicy::IfNotPresent`).
    fn pull_image(&self, image: &str) -> Result<()>;
    /// Pulls the image as `policy` says: `Never` only checks the cache,
    /// `IfNotPresent` pulls a missing image, `Always` resolves the reference
    /// again and downloads when its digest changed.
    fn pull_image_with_policy(&self, image: &str, policy: PullPolicy) -> Result<()>;
    /// Reads the spec's image from the cache — pulled first as its
    /// `pull_policy` says — and registers a container in `Pending`.
    fn create_container(&self, id: &ContainerId, spec: &ServiceSpec) -> Result<()>;
    /// Queues a created container for a worker.
    fn start_container(&self, id: &ContainerId) -> Result<()>;
    /// Ends the container and waits up to `timeout` for it to have ended.
    fn stop_container(&self, id: &ContainerId, timeout: Duration) -> Result<()>;
    /// Stops the container if it runs, then forgets it.
    fn remove_container(&self, id: &ContainerId) -> Result<()>;
    /// Where the container is in its life.
    fn container_state(&self, id: &ContainerId) -> Result<ContainerState>;
    /// Blocks until the started container ended; its exit code (see [`Outcome`](crate::Outcome)).
    fn wait_container(&self, id: &ContainerId) -> Result<i32>;
    /// The last `tail` log lines (all of them when `tail` is 0).
    fn container_logs(&self, id: &ContainerId, tail: usize) -> Result<Vec<LogEntry>>;
    /// Every log line kept.
    fn get_logs(&self, id: &ContainerId) -> Result<Vec<LogEntry>>;
    /// CPU, memory, fuel and wall time of the container.
    fn get_container_stats(&self, id: &ContainerId) -> Result<ContainerStats>;
    /// Refused: a WASM guest has no shell or process table to exec into.
    fn exec(&self, id: &ContainerId, cmd: &[String]) -> Result<(i32, String, String)>;
}

/// Runs WASI workloads as containers on a fixed pool of worker threads.
///
/// Every operation blocks the caller only as long as it must: `start` queues
/// and returns, `wait_container` blocks on a condition variable until the
/// guest ended. Dropping the runtime stops every guest, gives every waiter an
/// outcome and joins the workers.
///
/// # Examples
/// ```
/// use wasmpool::{ContainerId, Runtime, ServiceSpec, WasmConfig, WasmRuntime};
/// let dir = tempfile::tempdir().unwrap();
/// let runtime = WasmRuntime::new(WasmConfig { cache_dir: dir.path().into(), workers: 1, ..Default::default() }).unwrap();
/// let wasm = wat::parse_str(r#"
///     (module
///         (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
///         (memory (export "memory") 1)
///         (func (export "_start") (call $exit (i32.const 7))))
/// "#).unwrap();
/// let id = ContainerId::new("doc", 1);
/// runtime.create_container_from_bytes(&id, &ServiceSpec::default(), wasm).unwrap();
/// runtime.start_container(&id).unwrap();
/// assert_eq!(runtime.wait_container(&id).unwrap(), 7);
/// runtime.remove_container(&id).unwrap();
/// ```
pub struct WasmRuntime {
    shared: Arc<Shared>,
    containers: RwLock<HashMap<ContainerId, Arc<Instance>>>,
    /// Every artifact this runtime knows, by content.
    artifacts: ArtifactCache<Prepared>,
    /// Image files already read, by path and file identity.
    images: ImageFiles<Prepared>,
    /// Registry pulls into the cache directory.
    puller: Puller,
    /// Removed containers that had not ended when `remove_container` gave up waiting.
    lingering: Mutex<Vec<Arc<Instance>>>,
    /// The servers of served containers.
    #[cfg(feature = "serve")]
    services: RwLock<HashMap<ContainerId, Arc<Service>>>,
    queue: Arc<RunQueue>,
    admission: Arc<Admission>,
    timers: Arc<Timers>,
    workers: Vec<JoinHandle<()>>,
    /// Disconnected once every worker thread has left its loop.
    workers_exited: Receiver<()>,
    timer_thread: Option<JoinHandle<()>>,
}

impl WasmRuntime {
    /// Creates the engine, the cache directory and the worker threads.
    pub fn new(config: WasmConfig) -> Result<Self> {
        config.validate()?;
        std::fs::create_dir_all(&config.cache_dir).map_err(|e| {
            Error::Setup(format!(
                "cannot create cache directory '{}': {e}",
                config.cache_dir.display()
            ))
        })?;
        let engines = Engines::new(&config).map_err(|e| Error::Setup(format!("{e:#}")))?;
        let linking = Linking::new(&engines).map_err(|e| Error::Setup(format!("{e:#}")))?;
        let disk = config
            .compiled_cache
            .then(|| {
                DiskCache::open(
                    config.cache_dir.join("compiled"),
                    config.compiled_cache_limit,
                )
            })
            .flatten();
        let queue = RunQueue::new();
        let admission = Admission::new(config.queue_limit);
        let (timers, timer_thread) = Timers::start()
            .map_err(|e| Error::Setup(format!("cannot start the timer thread: {e}")))?;
        let workers = config.workers;
        let (exited, workers_exited) = crossbeam_channel::bounded(0);
        let keyvalue = crate::keyvalue::open(&config).map_err(Error::Setup)?;
        let shared = Arc::new(Shared {
            engines,
            linking,
            disk,
            config,
            keyvalue,
            counters: Arc::default(),
        });
        let mut runtime = WasmRuntime {
            shared: shared.clone(),
            containers: RwLock::new(HashMap::new()),
            artifacts: ArtifactCache::new(shared.config.artifact_cache_size),
            images: ImageFiles::new(shared.config.artifact_cache_size),
            puller: Puller::new(&shared.config),
            lingering: Mutex::new(Vec::new()),
            #[cfg(feature = "serve")]
            services: RwLock::new(HashMap::new()),
            queue: queue.clone(),
            admission,
            timers: timers.clone(),
            workers: Vec::new(),
            workers_exited,
            timer_thread: Some(timer_thread),
        };
        let spawned = (0..workers).try_for_each(|index| {
            let worker = scheduler::spawn_worker(&queue, index, exited.clone())?;
            runtime.workers.push(worker);
            Ok(())
        });
        // Only the workers hold senders: the channel disconnects once they all left.
        drop(exited);
        // On failure, dropping `runtime` stops the threads started so far.
        spawned.map_err(|e: std::io::Error| {
            Error::Setup(format!("cannot start worker threads: {e}"))
        })?;
        Ok(runtime)
    }

    /// Makes `image` present in the image cache as `policy` says, pulling it from
    /// its registry when it must, and says what it did.
    ///
    /// References are `registry/repository:tag` or `registry/repository@sha256:…`;
    /// the artifact is a manifest (or an index with a `wasi/wasm` entry) with one
    /// `application/wasm` (or `application/vnd.wasm.content.layer.v1+wasm`) layer.
    /// Concurrent pulls of one image download it once.
    pub fn pull(&self, image: &str, policy: PullPolicy) -> Result<PulledImage> {
        self.puller.pull(image, policy)
    }

    /// As [`WasmRuntime::pull`], calling `progress(downloaded, size)` as the
    /// artifact's bytes come (from the thread the download runs on; not at
    /// all when nothing is downloaded). For a progress bar.
    pub fn pull_with_progress(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Result<PulledImage> {
        self.puller
            .pull_reporting(image, policy, Some(std::sync::Arc::new(progress)))
    }

    /// The images in the image cache, with what their pulls recorded.
    pub fn images(&self) -> Vec<CachedImage> {
        images::list(&self.shared.config.cache_dir)
    }

    /// Removes an image from the image cache, by the reference it was pulled
    /// by (or its cache name); whether there was one. Its compiled code stays
    /// until a prune or the compiled cache's bound removes it.
    pub fn remove_image(&self, reference: &str) -> Result<bool> {
        let path = match self.images().into_iter().find(|i| i.reference == reference) {
            Some(image) => image.path,
            None => image_path(&self.shared.config.cache_dir, reference)?,
        };
        match images::remove(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::UnreadableArtifact {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// How much the image cache and the compiled cache hold.
    pub fn disk_usage(&self) -> DiskUsage {
        let images = self.images();
        let compiled = self
            .shared
            .disk
            .as_ref()
            .map(|d| d.artifacts())
            .unwrap_or_default();
        DiskUsage {
            images: images.len(),
            image_bytes: images.iter().map(|i| i.size).sum(),
            compiled: compiled.len(),
            compiled_bytes: compiled.iter().map(|a| a.size).sum(),
            compiled_limit: self.shared.disk.as_ref().map_or(0, |d| d.limit()),
        }
    }

    /// Removes what no one needs: compiled artifacts of no cached image (and
    /// of no container of this runtime), records of images that are gone, and
    /// files that dead writers left behind; with `all`, also every image and
    /// every compiled artifact no container of this runtime uses. `dry_run`
    /// only reports. Runtimes sharing the folders keep working: a loaded
    /// artifact stays mapped, and one removed is compiled again when needed.
    pub fn prune(&self, all: bool, dry_run: bool) -> PruneReport {
        let mut report = PruneReport::default();
        let remove = |path: &Path, report: &mut PruneReport| {
            let Ok(meta) = std::fs::symlink_metadata(path) else {
                return;
            };
            if dry_run || std::fs::remove_file(path).is_ok() {
                report.freed_bytes += meta.len();
                report.removed.push(path.to_path_buf());
            }
        };
        let in_use: std::collections::HashSet<String> = self
            .containers
            .read()
            .values()
            .chain(self.lingering.lock().iter())
            .map(|instance| instance.artifact.digest_hex())
            .collect();
        let cache_dir = &self.shared.config.cache_dir;
        let disk = self.shared.disk.as_ref();
        let records = disk.map(|d| d.identity_records()).unwrap_or_default();
        let digest_of_image = |path: &Path| {
            records
                .iter()
                .find(|(_, image, _)| image == path)
                .map(|(_, _, hex)| hex.clone())
        };
        let mut kept_images = Vec::new();
        for image in self.images() {
            let used = digest_of_image(&image.path).is_some_and(|hex| in_use.contains(&hex));
            if all && !used {
                remove(&image.path, &mut report);
                let mut record = image.path.clone().into_os_string();
                record.push(".digest");
                remove(Path::new(&record), &mut report);
            } else {
                kept_images.push(image.path);
            }
        }
        let mut keep = in_use;
        keep.extend(kept_images.iter().filter_map(|path| digest_of_image(path)));
        if let Some(disk) = disk {
            for artifact in disk.artifacts() {
                if !keep.contains(&artifact.digest) {
                    remove(&artifact.path, &mut report);
                    remove(&artifact.path.with_extension("misfit"), &mut report);
                }
            }
            for (record, image, hex) in &records {
                if !image.is_file() || !keep.contains(hex) {
                    remove(record, &mut report);
                }
            }
            for leftover in disk.leftovers() {
                remove(&leftover, &mut report);
            }
        }
        // Digest records whose image is gone, and dead pulls' temporary files.
        if let Ok(entries) = std::fs::read_dir(cache_dir) {
            let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
            for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let orphan_record =
                    name.ends_with(".wasm.digest") && !path.with_extension("").is_file();
                let dead_pull = name.starts_with(".pulling-")
                    && std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t < hour_ago);
                if (orphan_record || dead_pull) && !report.removed.contains(&path) {
                    remove(&path, &mut report);
                }
            }
        }
        report
    }

    /// Compiles the container's image now, on this thread, unless it is
    /// compiled already (in this runtime, or in the compiled cache on disk);
    /// `start` would otherwise do it on a worker. Answers how long it took,
    /// so that a caller can say what a large image's first start waits for.
    pub fn compile(&self, id: &ContainerId) -> Result<Duration> {
        let instance = self.get(id)?;
        let started = Instant::now();
        instance
            .artifact
            .compiled(&self.shared.engines, self.shared.disk.as_ref())
            .map_err(|reason| Error::Failed {
                id: id.clone(),
                reason,
            })?;
        Ok(started.elapsed())
    }

    /// The settings this runtime was created with.
    pub fn config(&self) -> &WasmConfig {
        &self.shared.config
    }

    /// Registers a container that runs `wasm` (a module, a component or WAT text)
    /// instead of an image from the cache; the spec's image name becomes `argv[0]`.
    pub fn create_container_from_bytes(
        &self,
        id: &ContainerId,
        spec: &ServiceSpec,
        wasm: impl AsRef<[u8]>,
    ) -> Result<()> {
        let artifact = self.artifacts.intern(wasm.as_ref());
        self.register(id, spec, artifact)
    }

    /// Registers a container that runs the module or component in the file at
    /// `path` (as `create_container` reads cache images): a file unchanged since
    /// it was last read — by this runtime, or by any runtime sharing the compiled
    /// cache — is neither read nor hashed again.
    pub fn create_container_from_file(
        &self,
        id: &ContainerId,
        spec: &ServiceSpec,
        path: impl AsRef<Path>,
    ) -> Result<()> {
        let artifact =
            self.images
                .artifact(path.as_ref(), &self.artifacts, self.shared.disk.as_ref())?;
        self.register(id, spec, artifact)
    }

    fn register(
        &self,
        id: &ContainerId,
        spec: &ServiceSpec,
        artifact: Arc<Artifact>,
    ) -> Result<()> {
        let plan = RunPlan::new(spec, &self.shared.config)?;
        if artifact.is_compiled() {
            // Its compiled code is in memory already: a hit of the cache.
            let loads = &self.shared.engines.on_demand.loads;
            loads
                .hits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut containers = self.containers.write();
        if containers.contains_key(id) {
            return Err(Error::AlreadyExists(id.clone()));
        }
        let instance = Instance::new(
            id.clone(),
            plan,
            artifact,
            self.shared.config.log_limit_bytes,
            self.admission.clone(),
            KeyValue {
                store: self.shared.keyvalue.clone(),
                service: id.service.as_str().into(),
                limits: crate::keyvalue::Limits::of(&self.shared.config),
                counts: Arc::default(),
            },
            self.shared.counters.clone(),
        );
        containers.insert(id.clone(), Arc::new(instance));
        Ok(())
    }

    /// Queues a created container and returns a handle on its end.
    ///
    /// A container whose spec has an HTTP endpoint is a service: its component
    /// must export `wasi:http/incoming-handler@0.2.x`; this compiles it, binds
    /// the endpoint and serves it — a fresh instance per request — until it is
    /// stopped. Errors say why it cannot serve (such as an address in use).
    pub fn start(&self, id: &ContainerId) -> Result<WaitHandle> {
        let instance = self.get(id)?;
        if let Err(refused) = instance.enqueue() {
            return Err(match refused {
                Some(phase) => wrong_state(&instance, phase, "start"),
                None => Error::QueueFull {
                    id: id.clone(),
                    limit: self.admission.limit(),
                },
            });
        }
        if !instance.plan.endpoints.is_empty() {
            return self.serve(&instance);
        }
        let future = guest::run::future(self.shared.clone(), instance.clone());
        let task = Arc::new(Task::new(
            instance.clone(),
            Box::pin(future),
            &self.queue,
            &self.timers,
            self.shared.config.fuel_slice,
        ));
        instance.control.attach(&task);
        // A first run that only loads cached code is short: its waiter may run it.
        instance
            .artifact
            .loads_quickly(&self.shared.engines, self.shared.disk.as_ref());
        task.schedule_start();
        Ok(instance.wait_handle())
    }

    /// Without the `serve` feature a service cannot start: it fails, saying so.
    #[cfg(not(feature = "serve"))]
    fn serve(&self, instance: &Arc<Instance>) -> Result<WaitHandle> {
        let reason = "this wasmpool is built without its HTTP server (cargo feature `serve`)";
        instance.finish(Outcome::Failed(reason.into()));
        Err(Error::Failed {
            id: instance.id.clone(),
            reason: reason.into(),
        })
    }

    /// Starts serving an admitted container.
    #[cfg(feature = "serve")]
    fn serve(&self, instance: &Arc<Instance>) -> Result<WaitHandle> {
        let service = match Service::start(instance, &self.shared, &self.queue, &self.timers) {
            Ok(service) => service,
            Err(error) => {
                let reason = match &error {
                    Error::Failed { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                instance.finish(Outcome::Failed(reason));
                return Err(error);
            }
        };
        let serving: Arc<dyn Serving> = service.clone();
        let _ = instance.serving.set(Arc::downgrade(&serving));
        self.services
            .write()
            .insert(instance.id.clone(), service.clone());
        if !instance.begin_running() {
            // Stopped while it compiled: stop what was started.
            service.stop(Duration::ZERO);
        } else {
            instance.stats.begin(false);
        }
        Ok(instance.wait_handle())
    }

    /// The runtime's metrics now: guests, workers, caches, and each
    /// container's own series (services' requests among them); render them
    /// for Prometheus with [`Metrics::encode`](crate::Metrics::encode).
    pub fn metrics(&self) -> crate::Metrics {
        use crate::metrics::ContainerMetrics;
        #[cfg(not(feature = "serve"))]
        use crate::metrics::HttpMetrics;
        use std::sync::atomic::Ordering::Relaxed;
        let counters = &self.shared.counters;
        let guest_outcomes = crate::guest::stats::OUTCOMES
            .iter()
            .zip(&counters.outcomes)
            .map(|(name, n)| (*name, n.load(Relaxed)))
            .collect();
        let instances: Vec<_> = self.containers.read().values().cloned().collect();
        #[cfg(feature = "serve")]
        let services = self.services.read().clone();
        let mut states = [0u64; 4];
        let mut per_container = Vec::with_capacity(instances.len());
        for instance in &instances {
            states[match instance.state() {
                ContainerState::Pending => 0,
                ContainerState::Running => 1,
                ContainerState::Exited { .. } => 2,
                ContainerState::Failed { .. } => 3,
            }] += 1;
            #[cfg(feature = "serve")]
            let (stats, http) = served_figures(instance, services.get(&instance.id));
            #[cfg(not(feature = "serve"))]
            let (stats, http): (_, Option<HttpMetrics>) = (instance.stats.snapshot(0), None);
            let keyvalue_operations = crate::guest::keyvalue::OP_NAMES
                .iter()
                .zip(&instance.keyvalue.counts.0)
                .map(|(op, n)| (*op, n.load(Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect();
            per_container.push(ContainerMetrics {
                container: instance.id.to_string(),
                cpu_seconds: stats.cpu_usage_usec as f64 / 1e6,
                memory_bytes: stats.memory_bytes,
                log_bytes_dropped: instance.logs.dropped_bytes(),
                keyvalue_operations,
                http,
            });
        }
        per_container.sort_by(|a, b| a.container.cmp(&b.container));
        let (queued, idle) = self.queue.load();
        let workers = self.workers.len() as u64;
        let loads = &self.shared.engines.on_demand.loads;
        crate::Metrics {
            guest_starts: counters.starts.load(Relaxed),
            guest_outcomes,
            containers: ["pending", "running", "exited", "failed"]
                .into_iter()
                .zip(states)
                .collect(),
            workers_busy: workers.saturating_sub(idle as u64),
            workers_idle: (idle as u64).min(workers),
            run_queue_depth: queued as u64,
            compiled_cache_hits: loads.hits.load(Relaxed),
            compiled_cache_misses: loads.misses.load(Relaxed),
            per_container,
        }
    }

    /// The address a served container listens on (its port, when the
    /// endpoint asked for port 0).
    #[cfg(feature = "serve")]
    pub fn service_address(&self, id: &ContainerId) -> Result<SocketAddr> {
        Ok(self.service(id)?.address())
    }

    /// Handles one HTTP request with a served container's handler, for hosts
    /// with a listener of their own; blocks until the response head is ready.
    /// The request body streams into the handler as it reads; the response
    /// body streams out as the handler writes ([`ResponseBody`] is an
    /// `http_body::Body` and a blocking [`std::io::Read`]). The service's
    /// bounds apply as to requests it receives itself.
    #[cfg(feature = "serve")]
    pub fn handle_request<B>(
        &self,
        id: &ContainerId,
        request: http::Request<B>,
    ) -> Result<http::Response<ResponseBody>>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let service = self.service(id)?;
        let served = service.served().clone();
        // The request goes to the runtime the service's server runs on, and
        // this thread waits for its answer: so this blocks, and works, from
        // any thread — inside another async runtime too (where it blocks that
        // runtime's thread: call it from `spawn_blocking` there).
        let (sent, answer) = std::sync::mpsc::sync_channel(1);
        let runtime = served.runtime.clone();
        drop(runtime.spawn(async move {
            let _ = sent.send(crate::serve::request::respond(served, request).await);
        }));
        answer.recv().map_err(|_| Error::Failed {
            id: id.clone(),
            reason: "the service stopped before it answered".into(),
        })
    }

    #[cfg(feature = "serve")]
    fn service(&self, id: &ContainerId) -> Result<Arc<Service>> {
        let instance = self.get(id)?;
        match self.services.read().get(id) {
            Some(service) if !instance.has_ended() => Ok(service.clone()),
            _ => {
                let phase = *instance.phase.lock();
                Err(wrong_state(&instance, phase, "serve a request with"))
            }
        }
    }

    /// Creates and starts a container in one call.
    pub fn run(&self, id: &ContainerId, spec: &ServiceSpec) -> Result<WaitHandle> {
        self.create_container(id, spec)?;
        self.start(id)
    }

    /// A handle on the container's end, valid even after the container is removed.
    pub fn wait_handle(&self, id: &ContainerId) -> Result<WaitHandle> {
        Ok(self.get(id)?.wait_handle())
    }

    /// Follows the container's log from its first kept line until the container ended.
    pub fn follow_logs(&self, id: &ContainerId) -> Result<LogFollower> {
        Ok(LogFollower::new(self.get(id)?.logs.clone()))
    }

    /// The ids of every container, in no particular order.
    pub fn container_ids(&self) -> Vec<ContainerId> {
        self.containers.read().keys().cloned().collect()
    }

    fn get(&self, id: &ContainerId) -> Result<Arc<Instance>> {
        self.containers
            .read()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.clone()))
    }
}

fn wrong_state(instance: &Instance, phase: Phase, operation: &'static str) -> Error {
    let state = match phase {
        Phase::Created => "created and not started".to_string(),
        Phase::Queued => "queued for a worker".to_string(),
        Phase::Running => "running".to_string(),
        Phase::Ended => match instance.completion.probe() {
            Some(outcome) => format!("ended ({outcome})"),
            None => "ended".to_string(),
        },
    };
    Error::WrongState {
        id: instance.id.clone(),
        operation,
        state,
    }
}

impl Runtime for WasmRuntime {
    fn pull_image(&self, image: &str) -> Result<()> {
        self.pull(image, PullPolicy::IfNotPresent).map(drop)
    }

    fn pull_image_with_policy(&self, image: &str, policy: PullPolicy) -> Result<()> {
        self.pull(image, policy).map(drop)
    }

    fn create_container(&self, id: &ContainerId, spec: &ServiceSpec) -> Result<()> {
        let path = match spec.image.pull_policy {
            PullPolicy::Never => image_path(&self.shared.config.cache_dir, &spec.image.name)?,
            policy => self.pull(&spec.image.name, policy)?.path,
        };
        let artifact = self
            .images
            .artifact(&path, &self.artifacts, self.shared.disk.as_ref())?;
        self.register(id, spec, artifact)
    }

    fn start_container(&self, id: &ContainerId) -> Result<()> {
        self.start(id).map(drop)
    }

    fn stop_container(&self, id: &ContainerId, timeout: Duration) -> Result<()> {
        let instance = self.get(id)?;
        // A service drains for most of `timeout`, then stops what still runs.
        instance.request_stop_within(timeout.saturating_sub(timeout / 10));
        match instance.wait_handle().wait_timeout(timeout) {
            Some(_) => Ok(()),
            None => Err(Error::Timeout {
                id: id.clone(),
                operation: "stop",
            }),
        }
    }

    fn remove_container(&self, id: &ContainerId) -> Result<()> {
        let instance = self.get(id)?;
        instance.request_stop();
        let ended = instance
            .wait_handle()
            .wait_timeout(self.shared.config.stop_timeout)
            .is_some();
        {
            // Remove the container looked up above, not one re-created under its id meanwhile.
            let mut containers = self.containers.write();
            match containers.get(id) {
                Some(current) if Arc::ptr_eq(current, &instance) => {
                    containers.remove(id);
                    #[cfg(feature = "serve")]
                    self.services.write().remove(id);
                }
                _ => return Err(Error::NotFound(id.clone())),
            }
        }
        if !ended {
            log::warn!("container '{id}' did not stop in time; it ends in the background");
            let mut lingering = self.lingering.lock();
            lingering.retain(|instance| !instance.has_ended());
            lingering.push(instance);
        }
        Ok(())
    }

    fn container_state(&self, id: &ContainerId) -> Result<ContainerState> {
        Ok(self.get(id)?.state())
    }

    fn wait_container(&self, id: &ContainerId) -> Result<i32> {
        let instance = self.get(id)?;
        let phase = *instance.phase.lock();
        if phase == Phase::Created {
            return Err(wrong_state(&instance, phase, "wait for"));
        }
        let outcome = instance.wait_handle().wait();
        if outcome.ran() {
            Ok(outcome.exit_code())
        } else {
            Err(Error::Failed {
                id: id.clone(),
                reason: outcome.to_string(),
            })
        }
    }

    fn container_logs(&self, id: &ContainerId, tail: usize) -> Result<Vec<LogEntry>> {
        Ok(self.get(id)?.logs.tail(tail))
    }

    fn get_logs(&self, id: &ContainerId) -> Result<Vec<LogEntry>> {
        self.container_logs(id, 0)
    }

    fn get_container_stats(&self, id: &ContainerId) -> Result<ContainerStats> {
        let instance = self.get(id)?;
        #[cfg(feature = "serve")]
        if let Some(service) = self.services.read().get(id) {
            return Ok(service
                .served()
                .stats
                .snapshot(instance.logs.dropped(), instance.stats.ended_at()));
        }
        Ok(instance.stats.snapshot(instance.logs.dropped()))
    }

    fn exec(&self, _id: &ContainerId, _cmd: &[String]) -> Result<(i32, String, String)> {
        Err(Error::unsupported(
            "exec",
            "a guest has no shell or process table to run a command in",
        ))
    }
}

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        let instances: Vec<_> = self
            .containers
            .read()
            .values()
            .chain(self.lingering.lock().iter())
            .cloned()
            .collect();
        // Services drain for part of stop_timeout, leaving time to end what still runs.
        let grace = self.shared.config.stop_timeout.saturating_mul(3) / 4;
        for instance in &instances {
            instance.request_stop_within(grace);
        }
        // Stops end at the guests' next poll; a worker stuck in a host callback
        // or a long compile gets stop_timeout, for the whole drop.
        let deadline = Instant::now().checked_add(self.shared.config.stop_timeout);
        if !self.admission.wait_idle(deadline) {
            log::warn!("some containers did not stop in time; abandoning them");
        }
        for _ in &self.workers {
            self.queue.push_shutdown();
        }
        let all_left = loop {
            let next = match deadline {
                Some(deadline) => self.workers_exited.recv_deadline(deadline),
                None => self
                    .workers_exited
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match next {
                Ok(()) => continue,
                Err(RecvTimeoutError::Disconnected) => break true,
                Err(RecvTimeoutError::Timeout) => break false,
            }
        };
        if !all_left {
            log::warn!("a worker is still busy (compiling, or in a host call) after stop_timeout; leaving it to end by itself");
        }
        for worker in self.workers.drain(..) {
            // One still busy is detached: it takes its Shutdown message when its poll returns.
            if worker.is_finished() {
                // A worker that panicked outside a guest run has nothing left to hand over.
                let _ = worker.join();
            }
        }
        self.timers.shutdown();
        if let Some(thread) = self.timer_thread.take() {
            let _ = thread.join();
        }
        // No worker polls any more: whatever is left ends as stopped, and every waiter hears of it.
        for task in self.queue.drain_tasks() {
            task.fail(Outcome::Stopped);
        }
        for instance in &instances {
            if let Some(task) = instance.control.task() {
                task.fail(Outcome::Stopped);
            }
            instance.finish(Outcome::Stopped);
        }
    }
}

/// A container's stats, and its HTTP series when it is a service.
#[cfg(feature = "serve")]
fn served_figures(
    instance: &Instance,
    service: Option<&Arc<Service>>,
) -> (ContainerStats, Option<crate::metrics::HttpMetrics>) {
    let stats = match service {
        Some(service) => service
            .served()
            .stats
            .snapshot(0, instance.stats.ended_at()),
        None => instance.stats.snapshot(0),
    };
    let http = service.map(|service| {
        let figures = service.served().stats.figures();
        crate::metrics::HttpMetrics {
            requests: figures.by_code,
            duration_buckets: figures.buckets,
            duration_count: figures.count,
            duration_sum_seconds: figures.sum_seconds,
            in_flight: figures.in_flight,
            instances: figures.instances,
            refused: crate::serve::stats::REFUSALS
                .iter()
                .zip(figures.refused)
                .map(|(reason, n)| (*reason, n))
                .collect(),
        }
    });
    (stats, http)
}
