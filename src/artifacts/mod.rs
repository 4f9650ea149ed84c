//! Artifacts: an image's bytes, known by their BLAKE3 digest, and their compiled
//! form. The compile path goes down once, a file per step:
//!
//! 1. identity: [`images`] (an image file known by its identity, unread when
//!    unchanged) and [`ArtifactCache`] (one artifact per content digest);
//! 2. native code: [`native`] (the compiled cache's file, else compiled now
//!    and saved there — [`disk_cache`]);
//! 3. engines: [`fit`] (the pooled engine if the code fits a slot, else the
//!    on-demand one — [`engine`]).
//!
//! What comes after — linking against WASI and picking the entry point — is
//! the guest's: an artifact carries it in [`Compiled::prepared`], a slot of
//! whatever type the guest prepares, filled once per compiled form.

pub(crate) mod detect;
pub(crate) mod disk_cache;
pub(crate) mod engine;
pub(crate) mod fit;
pub(crate) mod images;
pub(crate) mod native;
pub(crate) mod preinit;

pub use detect::{detect_wasm_version_from_binary, http_handler_export, WasiVersion};
pub use preinit::{pre_initialize, pre_initialize_cached, DEFAULT_INIT_FUNC};

pub(crate) use disk_cache::DiskCache;
pub(crate) use engine::Engines;
pub(crate) use images::{image_path, ImageFiles};
pub(crate) use native::is_component;

use fit::{compile, compile_with};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

/// The BLAKE3 digest of an image's bytes: its identity here and in the
/// compiled cache. A cryptographic hash, since it names native code that is
/// loaded for these bytes alone; BLAKE3 rather than SHA-256 because a cache
/// hit of a small image spent most of its time hashing (a 196 KiB image:
/// SHA-256 0.12 ms with SHA-NI, BLAKE3 a fraction of that with AVX2/AVX-512).
pub(crate) type Digest = [u8; 32];

/// The BLAKE3 digest of `bytes`.
pub(crate) fn digest_of(bytes: &[u8]) -> Digest {
    blake3::hash(bytes).into()
}

/// One image (by content) and, once a worker needed it, its compiled form;
/// `P` is what the guest prepares from compiled code (see [`Compiled::prepared`]).
pub(crate) struct Artifact<P> {
    digest: Digest,
    source: Source,
    /// Compiled for the pooled engine when it fits a slot, else on demand.
    compiled: OnceLock<Result<Compiled<P>, String>>,
    /// Compiled for the on-demand engine, for a run that finds every pooled slot taken.
    on_demand: OnceLock<Result<Compiled<P>, String>>,
    /// Compiled for the reused instances' engine when it fits a slot, else on demand.
    reused: OnceLock<Result<Compiled<P>, String>>,
    /// Whether its native code was in the compiled cache, small enough to
    /// load quickly, when a start first looked (see [`Artifact::loads_quickly`]).
    cached: OnceLock<bool>,
}

/// Native code up to this size loads from the compiled cache in about a
/// millisecond or less (wasmtime maps the file and reads its tables: a
/// 200 KiB module takes some 0.2 ms here): short enough for a host thread
/// waiting on its own guest to load it itself rather than wait for a worker.
const QUICK_LOAD: u64 = 4 << 20;

/// Native code loaded into one engine, and what the guest prepared from it.
pub(crate) struct Compiled<P> {
    pub(crate) code: Code,
    /// Filled once by the guest: the linking and entry point of this code.
    pub(crate) prepared: OnceLock<P>,
}

/// A compiled module or component.
#[derive(Clone)]
pub(crate) enum Code {
    Module(Module),
    Component(Component),
}

impl<P> Compiled<P> {
    fn new(code: Code) -> Self {
        Compiled {
            code,
            prepared: OnceLock::new(),
        }
    }

    /// The engine the code was compiled for; its stores must use it.
    pub(crate) fn engine(&self) -> &Engine {
        match &self.code {
            Code::Module(module) => module.engine(),
            Code::Component(component) => component.engine(),
        }
    }
}

/// Where an artifact's bytes are: in memory, or in an image file whose content
/// digest is known (read only if the compiled cache lacks its native code).
enum Source {
    Bytes(Arc<[u8]>),
    File {
        path: std::path::PathBuf,
        read: Mutex<Option<Arc<[u8]>>>,
    },
}

impl<P> Artifact<P> {
    /// The digest of its bytes, in hex: how the compiled cache names it.
    pub(crate) fn digest_hex(&self) -> String {
        hex::encode(self.digest)
    }

    /// The compiled form, compiling on first use; the error says why it cannot run.
    pub(crate) fn compiled(
        &self,
        engines: &Engines,
        disk: Option<&DiskCache>,
    ) -> Result<&Compiled<P>, String> {
        self.compiled
            .get_or_init(|| compile(engines, disk, self))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The image's bytes, read from its file on first need (and checked
    /// against the digest it was known by).
    pub(crate) fn bytes(&self) -> Result<Arc<[u8]>, String> {
        match &self.source {
            Source::Bytes(bytes) => Ok(bytes.clone()),
            Source::File { path, read } => {
                let mut read = read.lock();
                if let Some(bytes) = &*read {
                    return Ok(bytes.clone());
                }
                let bytes: Arc<[u8]> = std::fs::read(path)
                    .map_err(|e| format!("cannot read image '{}': {e}", path.display()))?
                    .into();
                if digest_of(&bytes) != self.digest {
                    return Err(format!(
                        "image '{}' changed while it was being used; create the container again",
                        path.display()
                    ));
                }
                *read = Some(bytes.clone());
                Ok(bytes)
            }
        }
    }

    /// Whether the artifact was compiled (or found uncompilable) already.
    pub(crate) fn is_compiled(&self) -> bool {
        self.compiled.get().is_some()
    }

    /// Whether getting its compiled form is quick: compiled already, or its
    /// native code is in the compiled cache and small ([`QUICK_LOAD`]) — looked
    /// up once, by the first start. Only a hint of where a first run goes (a
    /// file evicted since is compiled by whoever runs it).
    pub(crate) fn loads_quickly(&self, engines: &Engines, disk: Option<&DiskCache>) -> bool {
        self.is_compiled()
            || *self.cached.get_or_init(|| {
                let Some(disk) = disk else {
                    return false;
                };
                // The file the first engine tried looks for (see `fit`).
                let first = engines.pooled.as_ref().unwrap_or(&engines.on_demand);
                let path = disk.path(first.compat, &self.digest);
                std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() <= QUICK_LOAD)
            })
    }

    /// What [`Artifact::loads_quickly`] found, without looking.
    pub(crate) fn loaded_quickly(&self) -> bool {
        self.is_compiled() || self.cached.get().copied().unwrap_or(false)
    }

    /// The form compiled for the on-demand engine, compiling on first use.
    pub(crate) fn compiled_on_demand(
        &self,
        engines: &Engines,
        disk: Option<&DiskCache>,
    ) -> Result<&Compiled<P>, String> {
        self.on_demand
            .get_or_init(|| compile_with(None, &engines.on_demand, disk, self))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The form compiled for instances that serve many requests
    /// ([`Engines::reused`]), compiling on first use.
    pub(crate) fn compiled_for_reuse(
        &self,
        engines: &Engines,
        disk: Option<&DiskCache>,
    ) -> Result<&Compiled<P>, String> {
        self.reused
            .get_or_init(|| {
                let reused = engines.reused();
                // Without the compiled cache, code compiled already moves over
                // rather than being compiled again.
                if let (None, Some(reused), Some(Ok(compiled))) =
                    (disk, reused, self.compiled.get())
                {
                    if let Some(moved) = fit::moved(compiled, reused, &engines.on_demand) {
                        return Ok(moved);
                    }
                }
                compile_with(reused, &engines.on_demand, disk, self)
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Every artifact this runtime knows, by content: equal bytes share one compilation.
pub(crate) struct ArtifactCache<P> {
    entries: Mutex<Entries<P>>,
    /// How many artifacts no container uses are kept.
    keep_unused: usize,
}

/// The artifacts, each with when it was last asked for (a tick of `clock`).
struct Entries<P> {
    by_digest: HashMap<Digest, (Arc<Artifact<P>>, u64)>,
    clock: u64,
}

impl<P> ArtifactCache<P> {
    pub(crate) fn new(keep_unused: usize) -> Self {
        ArtifactCache {
            entries: Mutex::new(Entries {
                by_digest: HashMap::new(),
                clock: 0,
            }),
            keep_unused,
        }
    }

    /// The artifact with exactly these bytes, added if new.
    pub(crate) fn intern(&self, bytes: &[u8]) -> Arc<Artifact<P>> {
        self.intern_digested(digest_of(bytes), bytes)
    }

    /// As [`ArtifactCache::intern`], for bytes whose digest is known.
    pub(crate) fn intern_digested(&self, digest: Digest, bytes: &[u8]) -> Arc<Artifact<P>> {
        let artifact = self.intern_with(digest, || Source::Bytes(bytes.into()));
        // Known by its file until now: keep these bytes, the file may change.
        if let Source::File { read, .. } = &artifact.source {
            read.lock().get_or_insert_with(|| bytes.into());
        }
        artifact
    }

    /// The artifact whose bytes have `digest`, known to be in the image file
    /// at `path`: its bytes are read only if its native code must be compiled.
    pub(crate) fn intern_file(&self, digest: Digest, path: &std::path::Path) -> Arc<Artifact<P>> {
        self.intern_with(digest, || Source::File {
            path: path.to_path_buf(),
            read: Mutex::new(None),
        })
    }

    fn intern_with(&self, digest: Digest, source: impl FnOnce() -> Source) -> Arc<Artifact<P>> {
        let mut entries = self.entries.lock();
        entries.clock += 1;
        let now = entries.clock;
        if let Some((found, used)) = entries.by_digest.get_mut(&digest) {
            *used = now;
            return found.clone();
        }
        let artifact = Arc::new(Artifact {
            digest,
            source: source(),
            compiled: OnceLock::new(),
            on_demand: OnceLock::new(),
            reused: OnceLock::new(),
            cached: OnceLock::new(),
        });
        entries.by_digest.insert(digest, (artifact.clone(), now));
        self.evict_unused(&mut entries);
        artifact
    }

    /// Drops the least recently asked-for artifacts only the cache holds,
    /// once there are more than `keep_unused`.
    fn evict_unused(&self, entries: &mut Entries<P>) {
        let mut unused: Vec<(u64, Digest)> = entries
            .by_digest
            .iter()
            .filter(|(_, (a, _))| Arc::strong_count(a) == 1)
            .map(|(digest, (_, used))| (*used, *digest))
            .collect();
        let excess = unused.len().saturating_sub(self.keep_unused);
        if excess == 0 {
            return;
        }
        unused.sort_unstable();
        for (_, digest) in unused.into_iter().take(excess) {
            entries.by_digest.remove(&digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_asked_for_unused_artifact_goes_first() {
        let cache: ArtifactCache<()> = ArtifactCache::new(2);
        let kept = |cache: &ArtifactCache<()>, bytes: &[u8]| {
            cache
                .entries
                .lock()
                .by_digest
                .contains_key(&digest_of(bytes))
        };
        drop(cache.intern(b"a"));
        drop(cache.intern(b"b"));
        // `a` is asked for again: now `b` is the least recently used.
        drop(cache.intern(b"a"));
        drop(cache.intern(b"c"));
        // Eviction runs as an artifact is added: three unused, two kept.
        let held = cache.intern(b"d");
        assert!(kept(&cache, b"a") && kept(&cache, b"c"));
        assert!(!kept(&cache, b"b"), "evicted in map order, not by use");
        // One in use is never evicted, however old.
        for bytes in [&b"e"[..], b"f", b"g"] {
            drop(cache.intern(bytes));
        }
        assert!(kept(&cache, b"d"));
        drop(held);
    }

    #[test]
    fn code_in_the_compiled_cache_loads_quickly_and_code_to_compile_does_not() {
        let config = crate::settings::WasmConfig {
            pooling: false,
            ..Default::default()
        };
        let engines = Engines::new(&config).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskCache::open(dir.path().join("cache"), u64::MAX).unwrap();
        let bytes = wat::parse_str("(module (func (export \"_start\")))").unwrap();
        let other = wat::parse_str("(module (func (export \"_start\") nop))").unwrap();
        // Not compiled, not cached: a compile is owed.
        let first: ArtifactCache<()> = ArtifactCache::new(4);
        assert!(!first.intern(&bytes).loads_quickly(&engines, Some(&disk)));
        // Another artifact of the same bytes: compiled, and saved in the cache.
        let compiling: ArtifactCache<()> = ArtifactCache::new(4);
        let artifact = compiling.intern(&bytes);
        assert!(artifact.compiled(&engines, Some(&disk)).is_ok());
        assert!(artifact.loads_quickly(&engines, Some(&disk)));
        // A new runtime's artifact of those bytes finds them in the cache;
        // of other bytes, or with no cache, it does not.
        let fresh: ArtifactCache<()> = ArtifactCache::new(4);
        let cached = fresh.intern(&bytes);
        assert!(!cached.loaded_quickly(), "not looked up yet");
        assert!(cached.loads_quickly(&engines, Some(&disk)));
        assert!(cached.loaded_quickly());
        assert!(!fresh.intern(&other).loads_quickly(&engines, Some(&disk)));
        let uncached: ArtifactCache<()> = ArtifactCache::new(4);
        assert!(!uncached.intern(&bytes).loads_quickly(&engines, None));
    }

    #[test]
    fn code_for_reused_instances_is_on_their_engine_and_compiled_once() {
        use std::sync::atomic::Ordering;
        let engines = Engines::new(&crate::settings::WasmConfig::default()).unwrap();
        let reused = engines
            .reused()
            .expect("a pooling runtime has a reused engine");
        let bytes = wat::parse_str("(module (memory 1) (func (export \"_start\")))").unwrap();
        let misses = || engines.on_demand.loads.misses.load(Ordering::Relaxed);
        // With the compiled cache: the reused engine loads the file the first compile saved.
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskCache::open(dir.path().join("cache"), u64::MAX).unwrap();
        let cache: ArtifactCache<()> = ArtifactCache::new(4);
        let artifact = cache.intern(&bytes);
        let pooled = artifact.compiled(&engines, Some(&disk)).unwrap();
        let for_reuse = artifact.compiled_for_reuse(&engines, Some(&disk)).unwrap();
        assert!(Engine::same(
            pooled.engine(),
            &engines.pooled.as_ref().unwrap().engine
        ));
        assert!(Engine::same(for_reuse.engine(), &reused.engine));
        assert_eq!(misses(), 1);
        // Without it: the code compiled for the pooled engine moves over.
        let cache: ArtifactCache<()> = ArtifactCache::new(4);
        let artifact = cache.intern(&bytes);
        artifact.compiled(&engines, None).unwrap();
        let for_reuse = artifact.compiled_for_reuse(&engines, None).unwrap();
        assert!(Engine::same(for_reuse.engine(), &reused.engine));
        assert_eq!(
            misses(),
            2,
            "compiled once more for the second artifact, not twice"
        );
    }
}
