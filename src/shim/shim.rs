//! The shim's process protocol: `start` (find or spawn the group's shim),
//! `delete` (clean up after a shim that is gone), and serving the task service.

use crate::oci::{self, Network};
use crate::tasks::Tasks;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::write_address;
use containerd_shim::{api, Config, DeleteResponse, ExitSignal, Flags, StartOpts};
use oci_spec::runtime::Spec;
use std::path::Path;
use std::sync::Arc;

/// The runtime's name, as containerd calls it.
pub const RUNTIME_ID: &str = "io.containerd.wasmpool.v1";

/// The annotation CRI puts on every container of a pod, the sandbox included.
pub const SANDBOX_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// The annotation CRI puts on a pod's containers: `sandbox` for the pod's
/// placeholder (the pause container), `container` for the others.
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";

/// The annotation that groups unrelated containers into one shim process.
pub const GROUP_ANNOTATION: &str = "io.wasmpool.group";

pub struct WasmpoolShim {
    namespace: String,
    address: String,
    exit: Arc<ExitSignal>,
}

impl containerd_shim::Shim for WasmpoolShim {
    type T = Tasks;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        WasmpoolShim {
            namespace: args.namespace.clone(),
            address: args.address.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    /// Called in the container's bundle: returns the address of the shim that
    /// serves the container's group, spawning it when there is none yet.
    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let spec = Spec::load("config.json").map_err(|error| {
            containerd_shim::Error::InvalidArgument(format!("cannot read config.json: {error}"))
        })?;
        let grouping = group_of(&spec, &opts.id);
        // A pod with a network of its own (CNI's namespace, named by its
        // sandbox): this thread enters it, so the shim process spawned below
        // is born there, before it makes any thread or socket. For a shim
        // that already runs, this start process only hands back its address.
        if let Network::Joins(path) = oci::network(&spec) {
            oci::enter_network(&path)
                .map_err(|error| containerd_shim::Error::InvalidArgument(format!("{error:#}")))?;
        }
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        write_address(&address)?;
        Ok(address)
    }

    /// Called in the bundle of a container whose shim is gone (it crashed or
    /// was killed): the guest went with it.
    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        crate::tasks::unmount(Path::new("rootfs"));
        Ok(api::DeleteResponse {
            exit_status: 137,
            exited_at: Some(containerd_shim::util::timestamp()?).into(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Tasks {
        Tasks::new(&self.namespace, &self.address, publisher, self.exit.clone())
    }
}

/// Which shim process serves a container: its pod's, its group's, or its own.
fn group_of(spec: &Spec, id: &str) -> String {
    let annotations = spec.annotations().as_ref();
    let named = |key: &str| {
        annotations
            .and_then(|a| a.get(key))
            .filter(|value| !value.is_empty())
            .cloned()
    };
    if let Some(sandbox) = named(SANDBOX_ANNOTATION) {
        return sandbox;
    }
    match named(GROUP_ANNOTATION) {
        // A group's socket name never equals a container id's by accident.
        Some(group) => format!("wasmpool-group-{group}"),
        None => id.to_string(),
    }
}
