//! One container as the runtime holds it: its plan, its artifact, its phase and
//! the shared cells (completion, logs, stats, stop control) that outlive a run.

use crate::artifact::Artifact;
use crate::config::WasmConfig;
use crate::container::{ContainerId, ContainerState};
use crate::error::{Error, Result};
use crate::handle::Completion;
use crate::logs::LogBuffer;
use crate::outcome::Outcome;
use crate::spec::{parse_size, OutputSink, ServiceSpec, StdinSpec, StorageSpec};
use crate::stats::StatsCell;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::Duration;

/// Everything a worker needs to run a container, resolved from its spec at create.
pub(crate) struct RunPlan {
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) workdir: Option<String>,
    pub(crate) mounts: Vec<Mount>,
    pub(crate) stdin: StdinSpec,
    pub(crate) output: Option<OutputSink>,
    pub(crate) network: bool,
    pub(crate) max_fuel: Option<u64>,
    pub(crate) memory_limit: Option<u64>,
    pub(crate) trap_on_grow_failure: bool,
    pub(crate) max_execution_time: Option<Duration>,
}

/// A directory the guest sees at `guest`.
pub(crate) struct Mount {
    pub(crate) host: PathBuf,
    pub(crate) guest: String,
    pub(crate) readonly: bool,
}

impl RunPlan {
    /// Resolves `spec` against the runtime's defaults, refusing values it cannot use.
    pub(crate) fn new(spec: &ServiceSpec, config: &WasmConfig) -> Result<Self> {
        let wasm = spec.wasm.clone().unwrap_or_default();
        let memory_limit = match &wasm.max_memory {
            Some(text) => Some(parse_size(text).map_err(|_| Error::InvalidSpec {
                field: "wasm.max_memory",
                value: text.clone(),
                reason: "expected a size such as 64Mi, 1G or 65536".into(),
            })?),
            None => None,
        };
        let max_execution_time = wasm.max_execution_time.unwrap_or(config.max_execution_time);
        let mut argv = vec![spec.image.name.clone()];
        argv.extend(spec.command.entrypoint.iter().flatten().cloned());
        argv.extend(spec.command.args.iter().flatten().cloned());
        let mut env: Vec<_> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.sort();
        let mounts = spec
            .storage
            .iter()
            .map(|storage| resolve_mount(storage, config))
            .collect::<Result<_>>()?;
        Ok(RunPlan {
            argv,
            env,
            workdir: spec.command.workdir.clone(),
            mounts,
            stdin: spec.stdin.clone(),
            output: spec.output.clone(),
            network: spec.network,
            max_fuel: wasm.max_fuel.or(config.max_fuel),
            memory_limit,
            trap_on_grow_failure: wasm.trap_on_grow_failure,
            max_execution_time: (max_execution_time != Duration::MAX).then_some(max_execution_time),
        })
    }
}

fn resolve_mount(storage: &StorageSpec, config: &WasmConfig) -> Result<Mount> {
    let (host, target, readonly) = match storage {
        StorageSpec::Bind {
            source,
            target,
            readonly,
        } => {
            if !source.is_dir() {
                return Err(Error::InvalidSpec {
                    field: "storage.source",
                    value: source.display().to_string(),
                    reason: "not a directory".into(),
                });
            }
            (source.clone(), target, *readonly)
        }
        StorageSpec::Named {
            name,
            target,
            readonly,
        } => {
            let valid = !name.is_empty()
                && name != "."
                && name != ".."
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(Error::InvalidSpec {
                    field: "storage.name",
                    value: name.clone(),
                    reason: "a volume name has only letters, digits, '-', '_' and '.'".into(),
                });
            }
            let dir = config.cache_dir.join("volumes").join(name);
            std::fs::create_dir_all(&dir).map_err(|e| Error::InvalidSpec {
                field: "storage.name",
                value: name.clone(),
                reason: format!("cannot create '{}': {e}", dir.display()),
            })?;
            (dir, target, *readonly)
        }
    };
    if target.is_empty() {
        return Err(Error::InvalidSpec {
            field: "storage.target",
            value: target.clone(),
            reason: "a mount needs a guest path".into(),
        });
    }
    Ok(Mount {
        host,
        guest: target.clone(),
        readonly,
    })
}

/// Where a container is in its life; the outcome itself lives in the completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Created,
    Queued,
    Running,
    Ended,
}

/// Lets the host ask a running guest to stop, waking its worker if it is parked.
#[derive(Default)]
pub(crate) struct Control {
    stop: AtomicBool,
    worker: Mutex<Option<Thread>>,
}

impl Control {
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(worker) = self.worker.lock().as_ref() {
            worker.unpark();
        }
    }

    pub(crate) fn attach(&self, worker: Thread) {
        *self.worker.lock() = Some(worker);
    }

    pub(crate) fn detach(&self) {
        *self.worker.lock() = None;
    }
}

/// One container: what to run and the cells hosts observe it through.
pub(crate) struct Instance {
    pub(crate) id: ContainerId,
    pub(crate) plan: RunPlan,
    pub(crate) artifact: Arc<Artifact>,
    pub(crate) phase: Mutex<Phase>,
    pub(crate) completion: Arc<Completion>,
    pub(crate) control: Control,
    pub(crate) logs: Arc<LogBuffer>,
    pub(crate) stats: Arc<StatsCell>,
}

impl Instance {
    pub(crate) fn new(
        id: ContainerId,
        plan: RunPlan,
        artifact: Arc<Artifact>,
        log_limit: usize,
    ) -> Self {
        let stats = Arc::new(StatsCell::new(plan.memory_limit));
        Instance {
            id,
            plan,
            artifact,
            phase: Mutex::new(Phase::Created),
            completion: Arc::default(),
            control: Control::default(),
            logs: Arc::new(LogBuffer::new(log_limit)),
            stats,
        }
    }

    pub(crate) fn state(&self) -> ContainerState {
        let phase = self.phase.lock();
        match *phase {
            Phase::Created | Phase::Queued => ContainerState::Pending,
            Phase::Running => ContainerState::Running,
            Phase::Ended => self
                .completion
                .probe()
                .expect("an ended container has an outcome")
                .state(),
        }
    }

    /// Ends the container with `outcome` unless it already ended. Logs close
    /// first so a waiter that wakes sees every line; the phase lock is held
    /// throughout so `state` never sees an end without its outcome.
    pub(crate) fn finish(&self, outcome: Outcome) {
        let mut phase = self.phase.lock();
        self.end_locked(&mut phase, outcome);
    }

    fn end_locked(&self, phase: &mut Phase, outcome: Outcome) {
        if *phase != Phase::Ended {
            *phase = Phase::Ended;
            self.logs.close();
            self.completion.set(outcome);
        }
    }

    /// Asks the container to end: a container that has not run ends now as
    /// stopped; a running one is told to stop at its next check.
    pub(crate) fn request_stop(&self) {
        let mut phase = self.phase.lock();
        match *phase {
            Phase::Created | Phase::Queued => self.end_locked(&mut phase, Outcome::Stopped),
            Phase::Running => {
                drop(phase);
                self.control.request_stop();
            }
            Phase::Ended => {}
        }
    }
}
