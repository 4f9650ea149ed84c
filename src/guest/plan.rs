//! A container's run plan: its spec resolved against the runtime's defaults at create.

use crate::settings::{
    parse_size, EndpointSpec, Error, OutputSink, Protocol, Result, ServiceSpec, StdinSpec,
    StorageSpec, WasmConfig,
};
use std::path::PathBuf;
use std::time::Duration;

/// Everything a worker needs to run a container, resolved from its spec at create.
pub(crate) struct RunPlan {
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    /// The `wasi:config` values, sorted by key.
    pub(crate) config: Vec<(String, String)>,
    pub(crate) workdir: Option<String>,
    pub(crate) mounts: Vec<Mount>,
    pub(crate) stdin: StdinSpec,
    pub(crate) output: Option<OutputSink>,
    pub(crate) network: bool,
    pub(crate) max_fuel: Option<u64>,
    pub(crate) memory_limit: Option<u64>,
    pub(crate) trap_on_grow_failure: bool,
    pub(crate) max_execution_time: Option<Duration>,
    pub(crate) max_open_resources: usize,
    pub(crate) invoke: Option<String>,
    pub(crate) trap_unknown_imports: bool,
    /// Where a service listens; empty for a command.
    pub(crate) endpoints: Vec<EndpointSpec>,
    /// The deadline of each request's handler.
    pub(crate) request_timeout: Duration,
    /// How long a stopped service lets its requests in flight finish.
    pub(crate) stop_grace: Duration,
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
        if let Some(cap) = wasm.max_open_resources {
            if cap < 16 {
                return Err(Error::InvalidSpec {
                    field: "wasm.max_open_resources",
                    value: cap.to_string(),
                    reason: "a guest needs at least 16 (its stdio and preopens are resources too)"
                        .into(),
                });
            }
        }
        if wasm.invoke.as_deref() == Some("") {
            return Err(Error::InvalidSpec {
                field: "wasm.invoke",
                value: String::new(),
                reason: "name an exported function".into(),
            });
        }
        let mut argv = vec![spec.image.name.clone()];
        argv.extend(spec.command.entrypoint.iter().flatten().cloned());
        argv.extend(spec.command.args.iter().flatten().cloned());
        let mut env: Vec<_> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.sort();
        let mut config_values: Vec<_> = spec
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        config_values.sort();
        let mounts = spec
            .storage
            .iter()
            .map(|storage| resolve_mount(storage, config))
            .collect::<Result<_>>()?;
        Ok(RunPlan {
            argv,
            env,
            config: config_values,
            workdir: spec.command.workdir.clone(),
            mounts,
            stdin: spec.stdin.clone(),
            output: spec.output.clone(),
            network: spec.network,
            max_fuel: wasm.max_fuel.or(config.max_fuel),
            memory_limit,
            trap_on_grow_failure: wasm.trap_on_grow_failure,
            max_execution_time: (max_execution_time != Duration::MAX).then_some(max_execution_time),
            max_open_resources: wasm.max_open_resources.unwrap_or(config.max_open_resources),
            invoke: wasm.invoke.clone(),
            trap_unknown_imports: wasm.trap_unknown_imports,
            endpoints: endpoints(spec)?,
            request_timeout: wasm.request_timeout.unwrap_or(config.http_request_timeout),
            stop_grace: config.stop_timeout,
        })
    }
}

/// The spec's endpoints: at most one, and HTTP (a guest that listens on a raw
/// socket itself uses WASIp2 sockets and needs no endpoint).
fn endpoints(spec: &ServiceSpec) -> Result<Vec<EndpointSpec>> {
    if let Some(endpoint) = spec.endpoints.iter().find(|e| e.protocol != Protocol::Http) {
        return Err(Error::InvalidSpec {
            field: "endpoints.protocol",
            value: format!("{:?}", endpoint.protocol),
            reason: "only HTTP endpoints are served".into(),
        });
    }
    if spec.endpoints.len() > 1 {
        return Err(Error::InvalidSpec {
            field: "endpoints",
            value: spec.endpoints.len().to_string(),
            reason: "a service listens on one endpoint".into(),
        });
    }
    Ok(spec.endpoints.clone())
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
