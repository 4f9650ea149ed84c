//! Registry pulls: WebAssembly OCI artifacts into the image cache, blocking.
//!
//! The transport is `oci-client` (auth challenges, token exchange, digest
//! checks), whose futures run on wasmtime-wasi's own tokio runtime while the
//! blocking call waits (`run_within`): our code starts no async runtime. What
//! is kept is the seed's cache file
//! `{cache_dir}/{name with '/', ':', '@' as '_'}.wasm`, written atomically, with
//! the digest the reference resolved to in `….wasm.digest` beside it.

use crate::config::WasmConfig;
use crate::error::{Error, Result};
use crate::runtime::image_path;
use crate::spec::PullPolicy;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth as OciAuth;
use oci_client::{Client, Reference};
use parking_lot::Mutex;
use sha2::Digest as _;
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Layer media types that carry a WebAssembly binary: `application/wasm` (oras,
/// wkg, wasm-pkg-tools) and the older `application/vnd.wasm.content.layer.v1+wasm`
/// (wasm-to-oci, krustlet).
pub const WASM_LAYER_MEDIA_TYPES: [&str; 2] = [
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
];

/// Config media types of an artifact whose layer is WebAssembly: the wasm
/// configs (`v0` of wkg and oras, `v1` of wasm-to-oci) and the empty or unknown
/// configs oras writes when none is given.
const WASM_CONFIG_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.wasm.config.v0+json",
    "application/vnd.wasm.config.v1+json",
    "application/vnd.oci.empty.v1+json",
    "application/vnd.unknown.config.v1+json",
];

/// Manifest types asked for: OCI and Docker image manifests, and their indexes.
const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Credentials for one registry, as `WasmConfig::registry_auth` maps them by host.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum RegistryAuth {
    /// No credentials (a bearer token is still fetched anonymously if the registry asks).
    #[default]
    Anonymous,
    /// HTTP basic credentials, also used to obtain a bearer token when the registry asks.
    Basic {
        /// The user name.
        username: String,
        /// The password or access token.
        password: String,
    },
    /// A bearer token sent as is.
    Bearer(String),
}

impl fmt::Debug for RegistryAuth {
    /// Names the kind of credentials, never the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryAuth::Anonymous => f.write_str("Anonymous"),
            RegistryAuth::Basic { username, .. } => write!(f, "Basic({username:?}, ***)"),
            RegistryAuth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl RegistryAuth {
    fn to_oci(&self) -> OciAuth {
        match self {
            RegistryAuth::Anonymous => OciAuth::Anonymous,
            RegistryAuth::Basic { username, password } => {
                OciAuth::Basic(username.clone(), password.clone())
            }
            RegistryAuth::Bearer(token) => OciAuth::Bearer(token.clone()),
        }
    }
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The cache file the image is in.
    pub path: PathBuf,
    /// The digest the reference resolved to (of the manifest, or of the index
    /// holding it), when known: an image put in the cache by hand has none.
    pub digest: Option<String>,
    /// Whether bytes were downloaded; false when the cache already held them.
    pub downloaded: bool,
}

/// Pulls images into one cache directory; concurrent pulls of one image download
/// once, within the runtime (a mutex per file) and across runtimes and processes
/// (an `flock` in the cache folder's `.pulls/`).
pub(crate) struct Puller {
    cache_dir: PathBuf,
    auth: HashMap<String, RegistryAuth>,
    insecure: Vec<String>,
    max_size: u64,
    connect_timeout: Duration,
    read_timeout: Duration,
    pull_timeout: Duration,
    /// One lock per cache file being pulled.
    in_flight: Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
}

impl Puller {
    pub(crate) fn new(config: &WasmConfig) -> Self {
        Puller {
            cache_dir: config.cache_dir.clone(),
            auth: config
                .registry_auth
                .iter()
                .map(|(host, auth)| (registry_key(host), auth.clone()))
                .collect(),
            insecure: config
                .insecure_registries
                .iter()
                .map(|h| registry_key(h))
                .collect(),
            max_size: config.max_artifact_size,
            connect_timeout: config.registry_connect_timeout,
            read_timeout: config.registry_read_timeout,
            pull_timeout: config.registry_pull_timeout,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Makes `image` present in the cache as `policy` says, pulling when it must.
    pub(crate) fn pull(&self, image: &str, policy: PullPolicy) -> Result<PulledImage> {
        let path = image_path(&self.cache_dir, image)?;
        // Reading the cache needs no lock: pulls replace the file by renaming.
        if policy == PullPolicy::Never || (policy == PullPolicy::IfNotPresent && path.is_file()) {
            return self.pull_locked(image, &path, policy);
        }
        let lock = self.lock_for(&path);
        let pulling = lock.lock();
        // Other runtimes and processes on this cache folder wait too.
        let result = FileLock::acquire(&path)
            .map_err(|e| Error::Pull {
                image: image.to_string(),
                reason: format!("cannot lock '{}': {e}", path.display()),
            })
            .and_then(|_file_lock| self.pull_locked(image, &path, policy));
        drop(pulling);
        drop(lock);
        // Forget locks nobody holds or waits for (a waiter holds a clone).
        self.in_flight
            .lock()
            .retain(|_, lock| Arc::strong_count(lock) > 1);
        result
    }

    fn lock_for(&self, path: &Path) -> Arc<Mutex<()>> {
        self.in_flight
            .lock()
            .entry(path.to_path_buf())
            .or_default()
            .clone()
    }

    fn pull_locked(&self, image: &str, path: &Path, policy: PullPolicy) -> Result<PulledImage> {
        let refuse = |reason: String| Error::Pull {
            image: image.to_string(),
            reason,
        };
        let recorded = recorded_digest(path);
        let cached = path.is_file();
        let present = || PulledImage {
            path: path.to_path_buf(),
            digest: recorded.clone(),
            downloaded: false,
        };
        match policy {
            PullPolicy::Never if cached => return Ok(present()),
            PullPolicy::Never => {
                return Err(refuse(format!(
                    "not in the cache ('{}') and the pull policy is Never",
                    path.display()
                )))
            }
            PullPolicy::IfNotPresent if cached => return Ok(present()),
            _ => {}
        }
        let reference: Reference = image
            .parse()
            .map_err(|e| refuse(format!("invalid reference: {e}")))?;
        // Content named by digest cannot change: a verified copy needs no network.
        if cached && reference.digest().is_some() && recorded.as_deref() == reference.digest() {
            return Ok(present());
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let fetch = Fetch {
            client: self.client(reference.resolve_registry()).map_err(refuse)?,
            auth: self.auth_for(&reference),
            reference,
            path: path.to_path_buf(),
            known: if cached { recorded.clone() } else { None },
            limit: self.max_size,
            cancel: cancel.clone(),
        };
        run_within(self.pull_timeout, cancel, fetch.run()).map_err(refuse)
    }

    /// The credentials for the reference's registry: `WasmConfig::registry_auth`,
    /// else docker's `config.json`, else anonymous.
    fn auth_for(&self, reference: &Reference) -> OciAuth {
        let hosts = [reference.registry(), reference.resolve_registry()];
        for host in hosts {
            if let Some(auth) = self.auth.get(&registry_key(host)) {
                return auth.to_oci();
            }
        }
        hosts
            .into_iter()
            .find_map(docker_config_auth)
            .map_or(OciAuth::Anonymous, |auth| auth.to_oci())
    }

    /// Plain HTTP for loopback registries and those listed as insecure; TLS for all others.
    fn protocol_for(&self, registry: &str) -> ClientProtocol {
        let host = host_of(registry);
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let listed = self
            .insecure
            .iter()
            .any(|entry| entry == registry || entry == host);
        if loopback || listed {
            ClientProtocol::HttpsExcept(vec![registry.to_string()])
        } else {
            ClientProtocol::Https
        }
    }

    fn client(&self, registry: &str) -> std::result::Result<Client, String> {
        install_crypto_provider();
        let config = ClientConfig {
            protocol: self.protocol_for(registry),
            connect_timeout: Some(self.connect_timeout),
            read_timeout: Some(self.read_timeout),
            max_concurrent_download: 1,
            user_agent: concat!("wasmpool/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        Client::try_from(config).map_err(|e| format!("cannot set up the registry client: {e}"))
    }
}

/// An exclusive `flock` on `.pulls/{file}.lock` in the cache folder, released when dropped.
struct FileLock(#[allow(dead_code)] std::fs::File);

impl FileLock {
    fn acquire(path: &Path) -> std::io::Result<FileLock> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let folder = path.with_file_name(".pulls");
        std::fs::create_dir_all(&folder)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(folder.join(format!("{name}.lock")))?;
        file.lock()?;
        Ok(FileLock(file))
    }
}

/// One pull of one reference, run on wasmtime-wasi's tokio runtime.
struct Fetch {
    client: Client,
    reference: Reference,
    auth: OciAuth,
    path: PathBuf,
    /// The digest of the copy in the cache, if any: `Always` downloads only when it changed.
    known: Option<String>,
    /// `max_artifact_size`.
    limit: u64,
    /// Set when the caller gave up (`registry_pull_timeout`): nothing more is written.
    cancel: Arc<AtomicBool>,
}

impl Fetch {
    async fn run(self) -> std::result::Result<PulledImage, String> {
        let registry = self.reference.resolve_registry();
        let client = &self.client;
        let reference = &self.reference;
        if let Some(known) = &self.known {
            let current = client
                .fetch_manifest_digest(reference, &self.auth)
                .await
                .map_err(|e| describe(&e, registry))?;
            if &current == known {
                log::debug!("{reference}: unchanged at {current}");
                return Ok(self.unchanged(current));
            }
        }
        let (manifest, digest) = client
            .pull_manifest(reference, &self.auth)
            .await
            .map_err(|e| describe(&e, registry))?;
        let manifest = match manifest {
            OciManifest::Image(manifest) => manifest,
            OciManifest::ImageIndex(index) => {
                let entry = wasm_platform_entry(&index)?;
                let by_digest = reference.clone_with_digest(entry);
                match client.pull_manifest(&by_digest, &self.auth).await {
                    Ok((OciManifest::Image(manifest), _)) => manifest,
                    Ok((OciManifest::ImageIndex(_), _)) => {
                        return Err("the index's wasi/wasm entry is another index".into())
                    }
                    Err(e) => return Err(describe(&e, registry)),
                }
            }
        };
        if self.known.as_ref() == Some(&digest) {
            return Ok(self.unchanged(digest));
        }
        let layer = wasm_layer(&manifest)?;
        let size = u64::try_from(layer.size).unwrap_or(0);
        let limit = self.limit;
        if size > limit {
            return Err(too_large(size, limit));
        }
        let file = self.download(client, layer, limit).await?;
        self.check_cancel()?;
        file.persist(&self.path)
            .map_err(|e| format!("cannot write '{}': {}", self.path.display(), e.error))?;
        record_digest(&self.path, &digest)?;
        log::info!("pulled {reference} ({digest}, {size} bytes)");
        Ok(PulledImage {
            path: self.path.to_path_buf(),
            digest: Some(digest),
            downloaded: true,
        })
    }

    fn check_cancel(&self) -> std::result::Result<(), String> {
        if self.cancel.load(Ordering::Acquire) {
            return Err("cancelled: the caller's registry_pull_timeout passed".into());
        }
        Ok(())
    }

    fn unchanged(&self, digest: String) -> PulledImage {
        PulledImage {
            path: self.path.to_path_buf(),
            digest: Some(digest),
            downloaded: false,
        }
    }

    /// Streams the layer into a private temporary file beside the cache file,
    /// refusing it past `limit` bytes or when its digest differs from the manifest's.
    async fn download(
        &self,
        client: &Client,
        layer: &OciDescriptor,
        limit: u64,
    ) -> std::result::Result<tempfile::NamedTempFile, String> {
        let registry = self.reference.resolve_registry();
        let folder = self.path.parent().unwrap_or(Path::new("."));
        let mut file = tempfile::Builder::new()
            .prefix(".pulling-")
            .suffix(".wasm")
            .tempfile_in(folder)
            .map_err(|e| format!("cannot write in '{}': {e}", folder.display()))?;
        let mut hasher = LayerHasher::new(&layer.digest)?;
        let mut stream = client
            .pull_blob_stream(&self.reference, layer)
            .await
            .map_err(|e| describe(&e, registry))?;
        if let Some(length) = stream.content_length {
            if length > limit {
                return Err(too_large(length, limit));
            }
        }
        let declared = u64::try_from(layer.size).unwrap_or(0);
        let mut written: u64 = 0;
        let mut magic = Vec::with_capacity(4);
        while let Some(chunk) = stream.next().await {
            self.check_cancel()?;
            let chunk = chunk.map_err(|e| describe_io(&e, &layer.digest))?;
            written += chunk.len() as u64;
            if written > limit {
                return Err(too_large(written, limit));
            }
            if written > declared {
                return Err(format!(
                    "layer {} is larger than the {declared} bytes its manifest declares",
                    layer.digest
                ));
            }
            if magic.len() < 4 {
                let take = (4 - magic.len()).min(chunk.len());
                magic.extend_from_slice(&chunk[..take]);
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .map_err(|e| format!("cannot write in '{}': {e}", folder.display()))?;
        }
        let actual = hasher.finish();
        if actual != layer.digest {
            return Err(mismatch(&layer.digest, &actual));
        }
        if written != declared {
            return Err(format!(
                "layer {} has {written} bytes, its manifest declares {declared}",
                layer.digest
            ));
        }
        if magic != b"\0asm" {
            return Err(format!(
                "layer {} ({}) is not WebAssembly: it does not start with \\0asm",
                layer.digest, layer.media_type
            ));
        }
        file.as_file()
            .sync_all()
            .map_err(|e| format!("cannot write in '{}': {e}", folder.display()))?;
        Ok(file)
    }
}

/// The one WebAssembly layer of a manifest, or an error naming the media types found.
fn wasm_layer(manifest: &OciImageManifest) -> std::result::Result<&OciDescriptor, String> {
    let found = || {
        let layers: Vec<&str> = manifest
            .layers
            .iter()
            .map(|l| l.media_type.as_str())
            .collect();
        format!(
            "config {}, layers [{}]",
            manifest.config.media_type,
            layers.join(", ")
        )
    };
    let expected = format!(
        "expected one layer of {} with a wasm config ({})",
        WASM_LAYER_MEDIA_TYPES.join(" or "),
        WASM_CONFIG_MEDIA_TYPES[0]
    );
    let wasm: Vec<&OciDescriptor> = manifest
        .layers
        .iter()
        .filter(|l| WASM_LAYER_MEDIA_TYPES.contains(&l.media_type.as_str()))
        .collect();
    if !WASM_CONFIG_MEDIA_TYPES.contains(&manifest.config.media_type.as_str()) || wasm.len() != 1 {
        return Err(format!(
            "not a WebAssembly artifact: found {}; {expected}",
            found()
        ));
    }
    Ok(wasm[0])
}

/// The digest of an index's `wasi/wasm` entry (os `wasi`, `wasip1` or `wasip2`;
/// architecture `wasm` or `wasm32`).
fn wasm_platform_entry(index: &OciImageIndex) -> std::result::Result<String, String> {
    let is_wasm = |os: &str, arch: &str| {
        matches!(os, "wasi" | "wasip1" | "wasip2") && matches!(arch, "wasm" | "wasm32")
    };
    let platforms: Vec<String> = index
        .manifests
        .iter()
        .map(|entry| match &entry.platform {
            Some(p) => format!("{}/{}", p.os, p.architecture),
            None => "(none)".into(),
        })
        .collect();
    index
        .manifests
        .iter()
        .find(|entry| {
            entry
                .platform
                .as_ref()
                .is_some_and(|p| is_wasm(&p.os.to_string(), &p.architecture.to_string()))
        })
        .map(|entry| entry.digest.clone())
        .ok_or_else(|| {
            format!(
                "the index has no wasi/wasm platform entry (platforms: {})",
                platforms.join(", ")
            )
        })
}

/// SHA-256 or SHA-512 of a layer as it streams in.
enum LayerHasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl LayerHasher {
    fn new(digest: &str) -> std::result::Result<Self, String> {
        match digest.split_once(':') {
            Some(("sha256", _)) => Ok(LayerHasher::Sha256(sha2::Sha256::new())),
            Some(("sha512", _)) => Ok(LayerHasher::Sha512(sha2::Sha512::new())),
            _ => Err(format!("unsupported digest algorithm in '{digest}'")),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            LayerHasher::Sha256(h) => h.update(bytes),
            LayerHasher::Sha512(h) => h.update(bytes),
        }
    }

    fn finish(self) -> String {
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        match self {
            LayerHasher::Sha256(h) => format!("sha256:{}", hex(&h.finalize())),
            LayerHasher::Sha512(h) => format!("sha512:{}", hex(&h.finalize())),
        }
    }
}

fn too_large(size: u64, limit: u64) -> String {
    format!("too large: the artifact has {size} bytes, the limit (max_artifact_size) is {limit}")
}

fn mismatch(expected: &str, actual: &str) -> String {
    format!("digest mismatch: expected {expected}, got {actual}")
}

/// Where the digest of a cache file is recorded: `{file}.digest`.
fn digest_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".digest");
    PathBuf::from(name)
}

/// The digest recorded beside a cache file, if any.
pub(crate) fn recorded_digest(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(digest_path(path)).ok()?;
    let digest = text.trim();
    (!digest.is_empty()).then(|| digest.to_string())
}

fn record_digest(path: &Path, digest: &str) -> std::result::Result<(), String> {
    let target = digest_path(path);
    let folder = path.parent().unwrap_or(Path::new("."));
    let write = || -> std::io::Result<()> {
        let mut file = tempfile::Builder::new()
            .prefix(".pulling-")
            .tempfile_in(folder)?;
        writeln!(file, "{digest}")?;
        file.persist(&target).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|e| format!("cannot write '{}': {e}", target.display()))
}

/// Runs `future` on wasmtime-wasi's tokio runtime (on a thread of its own, so
/// the caller may even be inside another tokio runtime) and waits for it up to
/// `timeout`; past that, sets `cancel` — the pull then writes nothing more and
/// ends at its next read, or by its read timeout — and gives up.
fn run_within<T: Send + 'static>(
    timeout: Duration,
    cancel: Arc<AtomicBool>,
    future: impl std::future::Future<Output = std::result::Result<T, String>> + Send + 'static,
) -> std::result::Result<T, String> {
    let (done, result) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("wasmpool-pull".into())
        .spawn(move || {
            let _ = done.send(wasmtime_wasi::runtime::in_tokio(future));
        })
        .map_err(|e| format!("cannot start the registry client: {e}"))?;
    match result.recv_timeout(timeout) {
        Ok(result) => result,
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
            cancel.store(true, Ordering::Release);
            Err(format!(
                "timed out after {timeout:?} (registry_pull_timeout)"
            ))
        }
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
            Err("the registry client panicked".into())
        }
    }
}

/// Makes ring rustls' process default unless the host installed one: reqwest
/// (without its own provider) needs one, and ring is the provider the rest of
/// the tree compiles in, so this changes nothing else.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// One line for a failed registry operation: what failed, with the HTTP status where known.
fn describe(error: &OciDistributionError, registry: &str) -> String {
    match error {
        OciDistributionError::AuthenticationFailure(why) => {
            format!("unauthorized (401) at {registry}: {}", one_line(why))
        }
        OciDistributionError::UnauthorizedError { url } => {
            format!("unauthorized (401): {url} needs credentials, or refused those given")
        }
        OciDistributionError::RegistryError { envelope, url } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let messages: Vec<&str> = envelope.errors.iter().map(|e| e.message.as_str()).collect();
            let status = if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                "not found (404)"
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                "unauthorized (401)"
            } else {
                "registry error"
            };
            format!("{status}: {} ({url})", one_line(&messages.join("; ")))
        }
        OciDistributionError::ServerError { code, url, message } => {
            let what = match code {
                401 => "unauthorized (401)".to_string(),
                403 => "forbidden (403)".to_string(),
                404 => "not found (404)".to_string(),
                _ => format!("HTTP {code}"),
            };
            format!("{what}: {url} {}", one_line(message)).trim_end().to_string()
        }
        OciDistributionError::ImageManifestNotFoundError(why) => {
            format!("not found (404): {}", one_line(why))
        }
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            mismatch(expected, actual)
        }
        OciDistributionError::DigestError(e) => format!("digest error: {}", chain(e)),
        OciDistributionError::UnsupportedMediaTypeError(media_type) => format!(
            "not a WebAssembly artifact: the manifest's media type is {media_type}; expected one of {}",
            MANIFEST_MEDIA_TYPES.join(", ")
        ),
        OciDistributionError::RequestError(e) => {
            let kind = if e.is_timeout() {
                "timed out talking to"
            } else if e.is_connect() {
                "cannot connect to"
            } else {
                "request failed at"
            };
            format!("{kind} {registry}: {}", chain(e))
        }
        other => one_line(&chain(other)),
    }
}

/// A failure while streaming a blob: a digest check of oci-client's, or the transport's.
fn describe_io(error: &std::io::Error, digest: &str) -> String {
    let inner = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<DigestError>());
    if let Some(DigestError::VerificationError { expected, actual }) = inner {
        return format!("layer {}", mismatch(expected, actual));
    }
    let text = chain(error);
    if text.contains("digest") {
        format!("digest mismatch for layer {digest}: {text}")
    } else {
        format!("download of layer {digest} failed: {text}")
    }
}

/// An error and its sources, joined into one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    one_line(&text)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A registry host as configured or written in docker's config.json, without
/// scheme or path: `https://index.docker.io/v1/` → `index.docker.io`.
fn registry_key(host: &str) -> String {
    let host = host
        .strip_prefix("https://")
        .or_else(|| host.strip_prefix("http://"))
        .unwrap_or(host);
    host.split('/').next().unwrap_or(host).to_ascii_lowercase()
}

/// The host of `host:port` (or `[v6]:port`).
fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry
            .split(']')
            .next()
            .map_or(registry, |h| &registry[..h.len() + 1]);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// Credentials for `registry` from docker's `config.json` (`$DOCKER_CONFIG`,
/// else `~/.docker`): its `auths` entries (`auth`, or `username` and
/// `password`, or `registrytoken`). Credential helpers are not consulted.
fn docker_config_auth(registry: &str) -> Option<RegistryAuth> {
    let folder = match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".docker"),
    };
    let text = std::fs::read_to_string(folder.join("config.json")).ok()?;
    let config: serde_json::Value = match serde_json::from_str(&text) {
        Ok(config) => config,
        Err(e) => {
            log::warn!("ignoring {}: {e}", folder.join("config.json").display());
            return None;
        }
    };
    let wanted = registry_key(registry);
    let entry = config
        .get("auths")?
        .as_object()?
        .iter()
        .find(|(key, _)| registry_key(key) == wanted)?
        .1;
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
    };
    if let Some(encoded) = field("auth") {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (username, password) = text.split_once(':')?;
        return Some(RegistryAuth::Basic {
            username: username.to_string(),
            password: password.to_string(),
        });
    }
    if let (Some(username), Some(password)) = (field("username"), field("password")) {
        return Some(RegistryAuth::Basic {
            username: username.to_string(),
            password: password.to_string(),
        });
    }
    field("registrytoken").map(|token| RegistryAuth::Bearer(token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_keys_drop_scheme_and_path() {
        assert_eq!(
            registry_key("https://index.docker.io/v1/"),
            "index.docker.io"
        );
        assert_eq!(registry_key("localhost:5000"), "localhost:5000");
        assert_eq!(host_of("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:5000"), "[::1]");
    }
}
