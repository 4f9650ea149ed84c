//! A CRI client, as kubelet speaks to containerd: the `runtime.v1` gRPC API
//! over containerd's socket, with the messages the tests send and read
//! declared with prost's derive (their fields by the numbers of the CRI's own
//! `api.proto`, k8s.io/cri-api; prost skips the fields left out), so no build
//! step runs `protoc`. Its futures run on a current-thread tokio runtime of
//! the test's own; every call is bounded in time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// The CRI's messages, as far as the tests use them.
pub mod api {
    use std::collections::HashMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct VersionRequest {
        #[prost(string, tag = "1")]
        pub version: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct VersionResponse {
        #[prost(string, tag = "1")]
        pub version: String,
        #[prost(string, tag = "2")]
        pub runtime_name: String,
        #[prost(string, tag = "3")]
        pub runtime_version: String,
        #[prost(string, tag = "4")]
        pub runtime_api_version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxMetadata {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub uid: String,
        #[prost(string, tag = "3")]
        pub namespace: String,
        #[prost(uint32, tag = "4")]
        pub attempt: u32,
    }
    /// `NamespaceMode`: POD = 0, CONTAINER = 1, NODE = 2.
    pub const NODE: i32 = 2;
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamespaceOption {
        #[prost(int32, tag = "1")]
        pub network: i32,
        #[prost(int32, tag = "2")]
        pub pid: i32,
        #[prost(int32, tag = "3")]
        pub ipc: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxSandboxSecurityContext {
        #[prost(message, optional, tag = "1")]
        pub namespace_options: Option<NamespaceOption>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxPodSandboxConfig {
        #[prost(string, tag = "1")]
        pub cgroup_parent: String,
        #[prost(message, optional, tag = "2")]
        pub security_context: Option<LinuxSandboxSecurityContext>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxConfig {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<PodSandboxMetadata>,
        #[prost(string, tag = "2")]
        pub hostname: String,
        #[prost(string, tag = "3")]
        pub log_directory: String,
        #[prost(map = "string, string", tag = "6")]
        pub labels: HashMap<String, String>,
        #[prost(map = "string, string", tag = "7")]
        pub annotations: HashMap<String, String>,
        #[prost(message, optional, tag = "8")]
        pub linux: Option<LinuxPodSandboxConfig>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RunPodSandboxRequest {
        #[prost(message, optional, tag = "1")]
        pub config: Option<PodSandboxConfig>,
        #[prost(string, tag = "2")]
        pub runtime_handler: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RunPodSandboxResponse {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxIdRequest {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Nothing {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxStatusResponse {
        #[prost(message, optional, tag = "1")]
        pub status: Option<PodSandboxStatus>,
    }
    /// `PodSandboxState`: SANDBOX_READY = 0, SANDBOX_NOTREADY = 1.
    pub const SANDBOX_READY: i32 = 0;
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxStatus {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(int32, tag = "3")]
        pub state: i32,
        #[prost(message, optional, tag = "5")]
        pub network: Option<PodSandboxNetworkStatus>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxNetworkStatus {
        #[prost(string, tag = "1")]
        pub ip: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerMetadata {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(uint32, tag = "2")]
        pub attempt: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ImageSpec {
        #[prost(string, tag = "1")]
        pub image: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxContainerResources {
        #[prost(int64, tag = "1")]
        pub cpu_period: i64,
        #[prost(int64, tag = "2")]
        pub cpu_quota: i64,
        #[prost(int64, tag = "3")]
        pub cpu_shares: i64,
        #[prost(int64, tag = "4")]
        pub memory_limit_in_bytes: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxContainerConfig {
        #[prost(message, optional, tag = "1")]
        pub resources: Option<LinuxContainerResources>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerConfig {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<ContainerMetadata>,
        #[prost(message, optional, tag = "2")]
        pub image: Option<ImageSpec>,
        #[prost(string, repeated, tag = "3")]
        pub command: Vec<String>,
        #[prost(string, repeated, tag = "4")]
        pub args: Vec<String>,
        #[prost(message, repeated, tag = "6")]
        pub envs: Vec<KeyValue>,
        #[prost(map = "string, string", tag = "10")]
        pub annotations: HashMap<String, String>,
        #[prost(string, tag = "11")]
        pub log_path: String,
        #[prost(message, optional, tag = "15")]
        pub linux: Option<LinuxContainerConfig>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateContainerRequest {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
        #[prost(message, optional, tag = "2")]
        pub config: Option<ContainerConfig>,
        #[prost(message, optional, tag = "3")]
        pub sandbox_config: Option<PodSandboxConfig>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerIdMessage {
        #[prost(string, tag = "1")]
        pub container_id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StopContainerRequest {
        #[prost(string, tag = "1")]
        pub container_id: String,
        #[prost(int64, tag = "2")]
        pub timeout: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStatusResponse {
        #[prost(message, optional, tag = "1")]
        pub status: Option<ContainerStatus>,
    }
    /// `ContainerState`.
    pub const CONTAINER_CREATED: i32 = 0;
    pub const CONTAINER_RUNNING: i32 = 1;
    pub const CONTAINER_EXITED: i32 = 2;
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStatus {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(int32, tag = "3")]
        pub state: i32,
        #[prost(int32, tag = "7")]
        pub exit_code: i32,
        #[prost(string, tag = "10")]
        pub reason: String,
        #[prost(string, tag = "11")]
        pub message: String,
        #[prost(string, tag = "15")]
        pub log_path: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UInt64Value {
        #[prost(uint64, tag = "1")]
        pub value: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerAttributes {
        #[prost(string, tag = "1")]
        pub id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CpuUsage {
        #[prost(int64, tag = "1")]
        pub timestamp: i64,
        #[prost(message, optional, tag = "2")]
        pub usage_core_nano_seconds: Option<UInt64Value>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryUsage {
        #[prost(int64, tag = "1")]
        pub timestamp: i64,
        #[prost(message, optional, tag = "2")]
        pub working_set_bytes: Option<UInt64Value>,
        #[prost(message, optional, tag = "4")]
        pub usage_bytes: Option<UInt64Value>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStats {
        #[prost(message, optional, tag = "1")]
        pub attributes: Option<ContainerAttributes>,
        #[prost(message, optional, tag = "2")]
        pub cpu: Option<CpuUsage>,
        #[prost(message, optional, tag = "3")]
        pub memory: Option<MemoryUsage>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStatsResponse {
        #[prost(message, optional, tag = "1")]
        pub stats: Option<ContainerStats>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStatsFilter {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(string, tag = "2")]
        pub pod_sandbox_id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListContainerStatsRequest {
        #[prost(message, optional, tag = "1")]
        pub filter: Option<ContainerStatsFilter>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListContainerStatsResponse {
        #[prost(message, repeated, tag = "1")]
        pub stats: Vec<ContainerStats>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExecSyncRequest {
        #[prost(string, tag = "1")]
        pub container_id: String,
        #[prost(string, repeated, tag = "2")]
        pub cmd: Vec<String>,
        #[prost(int64, tag = "3")]
        pub timeout: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExecRequest {
        #[prost(string, tag = "1")]
        pub container_id: String,
        #[prost(string, repeated, tag = "2")]
        pub cmd: Vec<String>,
        #[prost(bool, tag = "5")]
        pub stdout: bool,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UpdateContainerResourcesRequest {
        #[prost(string, tag = "1")]
        pub container_id: String,
        #[prost(message, optional, tag = "2")]
        pub linux: Option<LinuxContainerResources>,
    }
}

use api::*;

const SERVICE: &str = "/runtime.v1.RuntimeService/";

/// A CRI client of one containerd.
pub struct Cri {
    runtime: tokio::runtime::Runtime,
    grpc: tonic::client::Grpc<Channel>,
}

/// What one call may take before the test fails instead of hanging.
const CALL_LIMIT: Duration = Duration::from_secs(120);

impl Cri {
    pub fn connect(socket: &Path) -> Cri {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let path = socket.to_path_buf();
        let channel = runtime
            .block_on(async {
                Endpoint::from_static("http://[::]")
                    .connect_with_connector(tower::service_fn(move |_| {
                        let path: PathBuf = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    }))
                    .await
            })
            .expect("connect to containerd's CRI");
        Cri {
            runtime,
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    /// One unary call of `RuntimeService/{method}`.
    pub fn call<Q, A>(&mut self, method: &str, message: Q) -> Result<A, tonic::Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        let path: http::uri::PathAndQuery = format!("{SERVICE}{method}").parse().unwrap();
        let grpc = &mut self.grpc;
        self.runtime.block_on(async {
            let call = async {
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                let codec = tonic_prost::ProstCodec::<Q, A>::default();
                Ok(grpc
                    .unary(tonic::Request::new(message), path, codec)
                    .await?
                    .into_inner())
            };
            match tokio::time::timeout(CALL_LIMIT, call).await {
                Ok(result) => result,
                Err(_) => panic!("CRI {method} took more than {CALL_LIMIT:?}"),
            }
        })
    }

    /// Waits (bounded) until CRI answers: after containerd starts, CRI
    /// recovers its pods first and answers "server is not initialized yet".
    pub fn until_ready(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let asked: Result<VersionResponse, _> = self.call(
                "Version",
                VersionRequest {
                    version: "v1".into(),
                },
            );
            match asked {
                Ok(_) => return,
                Err(status) => assert!(
                    std::time::Instant::now() < deadline,
                    "CRI is not ready after 60 s: {status:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn version(&mut self) -> VersionResponse {
        self.call(
            "Version",
            VersionRequest {
                version: "v1".into(),
            },
        )
        .expect("Version")
    }

    pub fn run_pod(
        &mut self,
        config: &PodSandboxConfig,
        handler: &str,
    ) -> Result<String, tonic::Status> {
        let reply: RunPodSandboxResponse = self.call(
            "RunPodSandbox",
            RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            },
        )?;
        Ok(reply.pod_sandbox_id)
    }

    pub fn pod_status(&mut self, pod: &str) -> PodSandboxStatus {
        let reply: PodSandboxStatusResponse = self
            .call(
                "PodSandboxStatus",
                PodSandboxIdRequest {
                    pod_sandbox_id: pod.into(),
                },
            )
            .expect("PodSandboxStatus");
        reply.status.expect("a pod status")
    }

    pub fn stop_pod(&mut self, pod: &str) {
        let _: Nothing = self
            .call(
                "StopPodSandbox",
                PodSandboxIdRequest {
                    pod_sandbox_id: pod.into(),
                },
            )
            .expect("StopPodSandbox");
    }

    pub fn remove_pod(&mut self, pod: &str) {
        let _: Nothing = self
            .call(
                "RemovePodSandbox",
                PodSandboxIdRequest {
                    pod_sandbox_id: pod.into(),
                },
            )
            .expect("RemovePodSandbox");
    }

    pub fn create(
        &mut self,
        pod: &str,
        config: &ContainerConfig,
        pod_config: &PodSandboxConfig,
    ) -> Result<String, tonic::Status> {
        let reply: ContainerIdMessage = self.call(
            "CreateContainer",
            CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config.clone()),
                sandbox_config: Some(pod_config.clone()),
            },
        )?;
        Ok(reply.container_id)
    }

    fn by_id<A>(&mut self, method: &str, id: &str) -> Result<A, tonic::Status>
    where
        A: prost::Message + Default + Send + Sync + 'static,
    {
        self.call(
            method,
            ContainerIdMessage {
                container_id: id.into(),
            },
        )
    }

    pub fn start(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.by_id::<Nothing>("StartContainer", id).map(drop)
    }

    /// `StopContainer`, asked again (as kubelet asks again) when containerd
    /// answers that its connection to the shim closed under it: seen once,
    /// right after a containerd restart, while containerd dropped the
    /// connection of a task it had just deleted. A shim that is really gone
    /// fails all three.
    pub fn stop(&mut self, id: &str, grace_seconds: i64) {
        let mut tries = 0;
        loop {
            tries += 1;
            let asked: Result<Nothing, _> = self.call(
                "StopContainer",
                StopContainerRequest {
                    container_id: id.into(),
                    timeout: grace_seconds,
                },
            );
            match asked {
                Ok(_) => return,
                Err(status) if tries < 3 && status.message().contains("ttrpc: closed") => {
                    eprintln!("StopContainer {id}, try {tries}: {}", status.message());
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(status) => panic!("StopContainer {id}: {status:?}"),
            }
        }
    }

    pub fn remove(&mut self, id: &str) {
        self.by_id::<Nothing>("RemoveContainer", id)
            .expect("RemoveContainer");
    }

    pub fn status(&mut self, id: &str) -> ContainerStatus {
        let reply: ContainerStatusResponse =
            self.by_id("ContainerStatus", id).expect("ContainerStatus");
        reply.status.expect("a container status")
    }

    pub fn stats(&mut self, id: &str) -> ContainerStats {
        let reply: ContainerStatsResponse =
            self.by_id("ContainerStats", id).expect("ContainerStats");
        reply.stats.expect("container stats")
    }

    pub fn list_stats(&mut self, pod: &str) -> Vec<ContainerStats> {
        let reply: ListContainerStatsResponse = self
            .call(
                "ListContainerStats",
                ListContainerStatsRequest {
                    filter: Some(ContainerStatsFilter {
                        id: String::new(),
                        pod_sandbox_id: pod.into(),
                    }),
                },
            )
            .expect("ListContainerStats");
        reply.stats
    }

    pub fn reopen_log(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.by_id::<Nothing>("ReopenContainerLog", id).map(drop)
    }

    /// Creates a container in the pod and starts it, failing the test with
    /// containerd's word if either is refused.
    pub fn launch(
        &mut self,
        pod: &str,
        config: &ContainerConfig,
        pod_config: &PodSandboxConfig,
    ) -> String {
        let name = config.metadata.as_ref().map_or("", |m| m.name.as_str());
        let id = self
            .create(pod, config, pod_config)
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"));
        self.start(&id)
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}"));
        id
    }

    /// `StopContainer` with this grace period; returns the container's status,
    /// checked to be exited.
    pub fn stop_ended(&mut self, id: &str, grace_seconds: i64) -> ContainerStatus {
        self.stop(id, grace_seconds);
        let status = self.status(id);
        assert_eq!(status.state, CONTAINER_EXITED, "{status:?}");
        status
    }

    /// Waits (bounded) until the container is in `state`; returns its status.
    pub fn until_state(&mut self, id: &str, state: i32) -> ContainerStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.status(id);
            if status.state == state {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "container {id} is {status:?}, not in state {state}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A pod's config: host network or its own, its logs under `log_directory`.
pub fn pod_config(name: &str, log_directory: &Path, host_network: bool) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_directory.display().to_string(),
        labels: HashMap::new(),
        annotations: HashMap::new(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: if host_network { NODE } else { 0 },
                    pid: 0,
                    ipc: 0,
                }),
            }),
        }),
    }
}

/// A container's config: its image, args, environment and log file (relative
/// to the pod's log directory).
pub fn container_config(
    name: &str,
    attempt: u32,
    image: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt,
        }),
        image: Some(ImageSpec {
            image: image.into(),
        }),
        command: Vec::new(),
        args: args.iter().map(|a| a.to_string()).collect(),
        envs: env
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        annotations: HashMap::new(),
        log_path: format!("{name}/{attempt}.log"),
        linux: None,
    }
}

/// The lines of a CRI log file (`TIMESTAMP STREAM TAG MESSAGE`, where TAG is
/// `F` for a full line and `P` for part of one): (stream, message) with the
/// partial lines joined, and the timestamp checked to be RFC 3339.
pub fn log_lines(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = Vec::new();
    let mut partial: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        let mut fields = line.splitn(4, ' ');
        let (Some(time), Some(stream), Some(tag)) = (fields.next(), fields.next(), fields.next())
        else {
            panic!("not a CRI log line: {line:?}");
        };
        let message = fields.next().unwrap_or("");
        assert!(
            time.len() >= 20 && time.as_bytes()[4] == b'-' && time.contains('T'),
            "not an RFC 3339 time: {line:?}"
        );
        assert!(stream == "stdout" || stream == "stderr", "{line:?}");
        let joined = partial.entry(stream.to_string()).or_default();
        joined.push_str(message);
        match tag {
            "F" => lines.push((stream.to_string(), std::mem::take(joined))),
            "P" => {}
            other => panic!("tag {other:?} in {line:?}"),
        }
    }
    lines
}
