//! The on-disk compiled cache: serialized artifacts keyed by the SHA-256 of
//! their bytes and by the engine's compatibility hash, so a new process runs a
//! known artifact without compiling it.

use sha2::{Digest, Sha256};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::{Engine, Module, Precompiled};

/// A directory of `{sha256}-{engine}.cwasm` files that only this runtime writes.
///
/// The trust model: compiled artifacts are native code, so they are loaded
/// only from a folder and files that belong to the current user and that
/// neither group nor others may write.
pub(crate) struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    /// Opens (creating it 0700 if missing) the cache folder `dir`; `None`, with
    /// a warning, when the folder cannot be trusted or made: artifacts then
    /// compile in memory.
    pub(crate) fn open(dir: PathBuf) -> Option<Self> {
        let created = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir);
        match created
            .map_err(|e| e.to_string())
            .and_then(|()| trusted(&dir, true))
        {
            Ok(()) => Some(DiskCache { dir }),
            Err(why) => {
                log::warn!(
                    "not using the compiled cache '{}': {why}; artifacts compile in memory",
                    dir.display()
                );
                None
            }
        }
    }

    /// Where the artifact compiled from `bytes` by an engine with compatibility
    /// hash `compat` lives: `{sha256 of bytes}-{compat}.cwasm`.
    pub(crate) fn path(&self, compat: u64, bytes: &[u8]) -> PathBuf {
        let digest = Sha256::digest(bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}-{compat:016x}.cwasm"))
    }

    /// The cached module at `path`, if there is one and it loads.
    pub(crate) fn module(&self, engine: &Engine, path: &Path) -> Option<Module> {
        trusted_file(path, Precompiled::Module)?;
        load_or_discard(path, |p| deserialize_module(engine, p))
    }

    /// The cached component at `path`, if there is one and it loads.
    pub(crate) fn component(&self, engine: &Engine, path: &Path) -> Option<Component> {
        trusted_file(path, Precompiled::Component)?;
        load_or_discard(path, |p| deserialize_component(engine, p))
    }

    /// Saves a serialized artifact at `path`; a failure only costs a compile next time.
    pub(crate) fn store(&self, path: &Path, serialized: wasmtime::Result<Vec<u8>>) {
        let result = serialized
            .map_err(|e| std::io::Error::other(format!("{e:#}")))
            .and_then(|data| write_atomically(&self.dir, path, &data));
        if let Err(e) = result {
            log::warn!("cannot save compiled artifact '{}': {e}", path.display());
        }
    }
}

/// Whether `path` exists and holds a precompiled artifact of the expected kind.
///
/// Files are trusted because of who may have written them and how they are
/// named: the folder and the file belong to the current user and no one else
/// may write them (checked here, before every load), every file was written
/// by `store` from wasmtime's own serializer, and its name carries the
/// SHA-256 of the exact source bytes and the engine's compatibility hash, so a
/// file is only ever loaded for the bytes and engine it was compiled from.
fn trusted_file(path: &Path, kind: Precompiled) -> Option<()> {
    let dir = path.parent()?;
    if let Err(why) = trusted(dir, true).and_then(|()| trusted(path, false)) {
        if path.exists() {
            log::warn!("not loading cached artifact '{}': {why}", path.display());
        }
        return None;
    }
    match Engine::detect_precompiled_file(path) {
        Ok(Some(found)) if found == kind => Some(()),
        Ok(_) => None,
        Err(e)
            if e.downcast_ref::<std::io::Error>().map(|e| e.kind())
                == Some(std::io::ErrorKind::NotFound) =>
        {
            None
        }
        Err(e) => {
            log::warn!(
                "ignoring unreadable cached artifact '{}': {e:#}",
                path.display()
            );
            None
        }
    }
}

/// Loads with `load`; a stale or corrupt file is removed and reads as a miss.
fn load_or_discard<T>(path: &Path, load: impl FnOnce(&Path) -> wasmtime::Result<T>) -> Option<T> {
    match load(path) {
        Ok(artifact) => Some(artifact),
        Err(e) => {
            log::warn!("discarding cached artifact '{}': {e:#}", path.display());
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

#[allow(unsafe_code)]
fn deserialize_module(engine: &Engine, path: &Path) -> wasmtime::Result<Module> {
    // SAFETY: `path` passed `trusted_file`: written by `DiskCache::store` from
    // `Module::serialize` into the runtime's own cache directory, named by the
    // SHA-256 of its source and the engine's compatibility hash; wasmtime
    // itself refuses files from other versions or settings.
    unsafe { Module::deserialize_file(engine, path) }
}

#[allow(unsafe_code)]
fn deserialize_component(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: as for `deserialize_module`, for `Component::serialize`.
    unsafe { Component::deserialize_file(engine, path) }
}

fn write_atomically(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut temp = tempfile_in(dir)?;
    temp.1.write_all(data)?;
    // Renamed only once whole: a reader sees the old file, the new one, or none.
    std::fs::rename(&temp.0, path)
}

/// A new file in `dir` with a name no other writer uses.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    Ok((path, file))
}

/// The engine's compatibility hash: which compiled artifacts it can load.
pub(crate) fn compatibility(engine: &Engine) -> u64 {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

/// Refuses a folder (`is_dir`) or file that is a symbolic link, is of the
/// other kind, belongs to another user, or that group or others may write.
fn trusted(path: &Path, is_dir: bool) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    let kind_ok = if is_dir {
        meta.file_type().is_dir()
    } else {
        meta.file_type().is_file()
    };
    if !kind_ok {
        let expected = if is_dir {
            "a directory"
        } else {
            "a regular file"
        };
        return Err(format!("'{}' is not {expected}", path.display()));
    }
    let me = current_user();
    if meta.uid() != me {
        return Err(format!(
            "'{}' belongs to user {}, not to the current user {me}",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "'{}' may be written by others (mode {:o})",
            path.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

#[allow(unsafe_code)]
pub(crate) fn current_user() -> u32 {
    // SAFETY: `geteuid` has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
