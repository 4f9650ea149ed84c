//! A real OCI registry for the pull tests: Debian's `docker-registry` (the CNCF
//! distribution registry) on a free loopback port, with a private storage folder,
//! stopped when dropped; and pushes through `oci-client`, as outside tools push.

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::Digest;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Where Debian's package puts the registry when it is installed.
const INSTALLED_REGISTRY: &str = "/usr/bin/docker-registry";

/// The registry program: Debian's installed one, else the same package fetched
/// by `.ci/docker-registry` into `target/debian` (run here, once, when needed).
fn registry_binary() -> &'static Path {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        if Path::new(INSTALLED_REGISTRY).exists() {
            return PathBuf::from(INSTALLED_REGISTRY);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/docker-registry");
        let out = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run .ci/docker-registry");
        assert!(
            out.status.success(),
            ".ci/docker-registry could not fetch Debian's registry: the pull tests need it \
             (or: apt-get install -y docker-registry)"
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("docker-registry")
    })
}

/// The oras manifest shape: config `application/vnd.wasm.config.v0+json`, layer `application/wasm`.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER: &str = "application/wasm";

/// A running registry; the process is killed and its storage deleted on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub host: String,
    storage: PathBuf,
    /// The credentials it requires, if any.
    pub credentials: Option<(String, String)>,
    _dir: TempDir,
}

impl Registry {
    /// Starts an anonymous registry.
    pub fn start() -> Registry {
        Registry::launch(None, "127.0.0.1")
    }

    /// Starts a registry that requires HTTP basic auth with these credentials.
    pub fn with_basic_auth(user: &str, password: &str) -> Registry {
        Registry::launch(Some((user.into(), password.into())), "127.0.0.1")
    }

    /// Starts an anonymous registry listening on every interface.
    pub fn on_all_interfaces() -> Registry {
        Registry::launch(None, "0.0.0.0")
    }

    fn launch(credentials: Option<(String, String)>, bind: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).unwrap();
        let mut auth = String::new();
        if let Some((user, password)) = &credentials {
            let hash = bcrypt::hash(password, 4).unwrap();
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: wasmpool-test\n    path: {}\n",
                file.display()
            );
        }
        // A port can be taken between our probe and the registry's bind: retry.
        let config = dir.path().join("config.yml");
        let log_file = dir.path().join("registry.log");
        for _ in 0..5 {
            let port = TcpListener::bind((bind, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: {bind}:{port}\n{auth}",
                    storage.display()
                ),
            )
            .unwrap();
            let log = std::fs::File::create(&log_file).unwrap();
            let mut child = Command::new(registry_binary())
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("cannot start docker-registry");
            let host = format!("127.0.0.1:{port}");
            if wait_ready(&mut child, &host) {
                return Registry {
                    child,
                    host,
                    storage,
                    credentials,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "registry did not start on port {port}: {}",
                std::fs::read_to_string(&log_file).unwrap_or_default()
            );
        }
        panic!("docker-registry did not start in five tries");
    }

    /// `HOST/repository:tag`.
    pub fn reference(&self, repository_and_tag: &str) -> String {
        format!("{}/{repository_and_tag}", self.host)
    }

    /// Stops the registry process now.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The file the registry keeps a blob in.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn auth(&self) -> RegistryAuth {
        match &self.credentials {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Pushes `wasm` as oras does (config `WASM_CONFIG`, one `WASM_LAYER` layer); the manifest digest.
    pub fn push_wasm(&self, repository_and_tag: &str, wasm: &[u8]) -> String {
        self.push(
            repository_and_tag,
            WASM_CONFIG,
            b"{}",
            &[(WASM_LAYER, wasm)],
        )
    }

    /// Pushes blobs and a manifest with these media types; the manifest's digest.
    pub fn push(
        &self,
        repository_and_tag: &str,
        config_media_type: &str,
        config: &[u8],
        layers: &[(&str, &[u8])],
    ) -> String {
        let layers_json: Vec<String> = layers
            .iter()
            .map(|(media_type, bytes)| {
                self.push_blob(repository_and_tag, bytes);
                format!(
                    r#"{{"mediaType": "{media_type}", "size": {}, "digest": "{}", "annotations": {{"org.opencontainers.image.title": "module.wasm"}}}}"#,
                    bytes.len(),
                    digest_of(bytes)
                )
            })
            .collect();
        self.push_blob(repository_and_tag, config);
        let manifest = format!(
            r#"{{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {{"mediaType": "{config_media_type}", "size": {}, "digest": "{}"}}, "layers": [{}]}}"#,
            config.len(),
            digest_of(config),
            layers_json.join(", ")
        );
        self.push_manifest(
            repository_and_tag,
            manifest.as_bytes(),
            "application/vnd.oci.image.manifest.v1+json",
        )
    }

    /// Pushes an index tagged `repository_and_tag` with these `(digest, size, os, arch)` entries.
    pub fn push_index(
        &self,
        repository_and_tag: &str,
        entries: &[(String, usize, &str, &str)],
    ) -> String {
        let manifests: Vec<String> = entries
            .iter()
            .map(|(digest, size, os, arch)| {
                format!(
                    r#"{{"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": {size}, "digest": "{digest}", "platform": {{"architecture": "{arch}", "os": "{os}"}}}}"#
                )
            })
            .collect();
        let index = format!(
            r#"{{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{}]}}"#,
            manifests.join(", ")
        );
        self.push_manifest(
            repository_and_tag,
            index.as_bytes(),
            "application/vnd.oci.image.index.v1+json",
        )
    }

    /// The size of the manifest with this digest in `repository`.
    pub fn manifest_size(&self, digest: &str) -> usize {
        std::fs::metadata(self.blob_file(digest)).unwrap().len() as usize
    }

    fn push_blob(&self, repository_and_tag: &str, bytes: &[u8]) {
        let reference = self.parse(repository_and_tag);
        let client = self.client_for(&reference);
        block_on(client.push_blob(&reference, bytes.to_vec(), &digest_of(bytes)))
            .expect("push blob");
    }

    fn push_manifest(&self, repository_and_tag: &str, manifest: &[u8], media_type: &str) -> String {
        let reference = self.parse(repository_and_tag);
        let client = self.client_for(&reference);
        let content_type: http::HeaderValue = media_type.parse().unwrap();
        block_on(client.push_manifest_raw(&reference, manifest.to_vec(), content_type))
            .expect("push manifest");
        digest_of(manifest)
    }

    /// A client holding this registry's credentials.
    fn client_for(&self, reference: &Reference) -> Client {
        let client = client();
        block_on(client.store_auth_if_needed(reference.resolve_registry(), &self.auth()));
        client
    }

    fn parse(&self, repository_and_tag: &str) -> Reference {
        self.reference(repository_and_tag).parse().unwrap()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits up to 20 s for `GET /v2/` to answer (200, or 401 with auth).
fn wait_ready(child: &mut Child, host: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Some(200 | 401) = http_status(host, "/v2/") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `sha256:…` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    let hash = sha2::Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The status of a plain `GET path` to `host`, if it answers.
pub fn http_status(host: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_from(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    })
    .unwrap()
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    wasmtime_wasi::runtime::in_tokio(future)
}
