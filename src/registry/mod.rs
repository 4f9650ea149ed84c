//! Registry pulls: WebAssembly OCI artifacts into the image cache, blocking.
//!
//! - [`auth`]: credentials from the settings or docker's `config.json`;
//! - [`transport`]: the HTTP client (TLS or loopback plain HTTP), auth
//!   challenges, bounded bodies, running its futures within a time limit,
//!   one-line error texts;
//! - [`media`]: which manifests, indexes and layers are WebAssembly;
//! - [`fetch`]: one pull — resolve, choose the layer, stream it in, verify;
//! - [`store`]: the cache file's lock and the digest recorded beside it.
//!
//! The transport is our own on reqwest (auth challenges, token exchange,
//! digest checks, a bound on every body a registry sends), whose futures run
//! on wasmtime-wasi's own tokio runtime while the blocking call waits
//! (`run_within`): our code starts no async runtime. oci-client provides the
//! reference grammar and the manifest types. What
//! is kept is the seed's cache file
//! `{cache_dir}/{name with '/', ':', '@' as '_'}.wasm`, written atomically, with
//! the digest the reference resolved to in `….wasm.digest` beside it.
//!
//! Without the `registry` cargo feature only the cache is read: a policy
//! that needs the network gets an error saying the client is not built in.

#[cfg(feature = "registry")]
mod auth;
#[cfg(feature = "registry")]
mod fetch;
#[cfg(feature = "registry")]
mod media;
mod store;
#[cfg(feature = "registry")]
mod transport;

use crate::artifacts::images::{image_path, recorded_digest};
#[cfg(feature = "registry")]
use crate::settings::RegistryAuth;
use crate::settings::{Error, PullPolicy, Result, WasmConfig};
#[cfg(feature = "registry")]
use auth::{docker_config_auth, registry_key};
#[cfg(feature = "registry")]
use oci_client::Reference;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
#[cfg(feature = "registry")]
use std::time::Duration;
use store::FileLock;
#[cfg(feature = "registry")]
use transport::Transport;

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
    /// One lock per cache file being pulled.
    in_flight: Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
    #[cfg(feature = "registry")]
    client: Client,
}

/// What reaches registries.
#[cfg(feature = "registry")]
struct Client {
    auth: HashMap<String, RegistryAuth>,
    transport: Transport,
    max_size: u64,
    pull_timeout: Duration,
}

/// Told the bytes of a layer downloaded so far, and its size.
pub(crate) type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

impl Puller {
    pub(crate) fn new(config: &WasmConfig) -> Self {
        Puller {
            cache_dir: config.cache_dir.clone(),
            in_flight: Mutex::new(HashMap::new()),
            #[cfg(feature = "registry")]
            client: Client {
                auth: config
                    .registry_auth
                    .iter()
                    .map(|(host, auth)| (registry_key(host), auth.clone()))
                    .collect(),
                transport: Transport::new(config),
                max_size: config.max_artifact_size,
                pull_timeout: config.registry_pull_timeout,
            },
        }
    }

    /// Makes `image` present in the cache as `policy` says, pulling when it must.
    pub(crate) fn pull(&self, image: &str, policy: PullPolicy) -> Result<PulledImage> {
        self.pull_reporting(image, policy, None)
    }

    /// As [`Puller::pull`], telling `progress` the bytes of the layer
    /// downloaded so far and its size, as they come.
    pub(crate) fn pull_reporting(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: Option<Progress>,
    ) -> Result<PulledImage> {
        let path = image_path(&self.cache_dir, image)?;
        // Reading the cache needs no lock: pulls replace the file by renaming.
        if policy == PullPolicy::Never || (policy == PullPolicy::IfNotPresent && path.is_file()) {
            return self.pull_locked(image, &path, policy, progress);
        }
        let lock = self.lock_for(&path);
        let pulling = lock.lock();
        // Other runtimes and processes on this cache folder wait too.
        let result = FileLock::acquire(&path)
            .map_err(|e| Error::Pull {
                image: image.to_string(),
                reason: format!("cannot lock '{}': {e}", path.display()),
            })
            .and_then(|_file_lock| self.pull_locked(image, &path, policy, progress));
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

    fn pull_locked(
        &self,
        image: &str,
        path: &Path,
        policy: PullPolicy,
        progress: Option<Progress>,
    ) -> Result<PulledImage> {
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
        #[cfg(not(feature = "registry"))]
        {
            drop((present, progress));
            Err(refuse(
                "this wasmpool is built without its registry client (cargo feature \
                 `registry`): only images already in the cache run"
                    .into(),
            ))
        }
        #[cfg(feature = "registry")]
        {
            let reference: Reference = image
                .parse()
                .map_err(|e| refuse(format!("invalid reference: {e}")))?;
            // Content named by digest cannot change: a verified copy needs no network.
            if cached && reference.digest().is_some() && recorded.as_deref() == reference.digest() {
                return Ok(present());
            }
            let known = if cached { recorded.clone() } else { None };
            self.client
                .fetch(reference, path, known, progress)
                .map_err(refuse)
        }
    }
}

#[cfg(feature = "registry")]
impl Client {
    /// Downloads `reference` into the cache file `path` (unless the registry
    /// still names the `known` digest), within the pull timeout.
    fn fetch(
        &self,
        reference: Reference,
        path: &Path,
        known: Option<String>,
        progress: Option<Progress>,
    ) -> std::result::Result<PulledImage, String> {
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fetch = fetch::Fetch {
            session: self
                .transport
                .session(&reference, self.auth_for(&reference))?,
            reference,
            path: path.to_path_buf(),
            known,
            limit: self.max_size,
            cancel: cancel.clone(),
            progress,
        };
        transport::run_within(self.pull_timeout, cancel, fetch.run())
    }

    /// The credentials for the reference's registry: `WasmConfig::registry_auth`,
    /// else docker's `config.json`, else anonymous.
    fn auth_for(&self, reference: &Reference) -> RegistryAuth {
        let hosts = [reference.registry(), reference.resolve_registry()];
        for host in hosts {
            if let Some(auth) = self.auth.get(&registry_key(host)) {
                return auth.clone();
            }
        }
        hosts
            .into_iter()
            .find_map(docker_config_auth)
            .unwrap_or_default()
    }
}
