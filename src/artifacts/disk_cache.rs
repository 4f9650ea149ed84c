//! The on-disk compiled cache: serialized artifacts keyed by the BLAKE3 digest of
//! their bytes and by the engine's compatibility hash, so a new process runs a
//! known artifact without compiling it.

use crate::settings::current_user;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::{Engine, Module, Precompiled};

/// A directory of `{blake3}-{engine}.cwasm` files that only this runtime writes.
///
/// The trust model: compiled artifacts are native code, so they are loaded
/// only from a folder and files that belong to the current user and that
/// neither group nor others may write.
pub(crate) struct DiskCache {
    dir: PathBuf,
    /// The folder, open (not through a symlink): its files are opened
    /// relative to it, and it is checked on this descriptor at every open.
    folder: std::fs::File,
    /// The most bytes of artifacts kept; the least recently used go first.
    limit: u64,
}

impl DiskCache {
    /// Opens (creating it 0700 if missing) the cache folder `dir`; `None`, with
    /// a warning, when the folder cannot be trusted or made: artifacts then
    /// compile in memory.
    pub(crate) fn open(dir: PathBuf, limit: u64) -> Option<Self> {
        let created = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir);
        match created
            .map_err(|e| e.to_string())
            .and_then(|()| open_folder(&dir))
        {
            Ok(folder) => Some(DiskCache { dir, folder, limit }),
            Err(why) => {
                log::warn!(
                    "not using the compiled cache '{}': {why}; artifacts compile in memory",
                    dir.display()
                );
                None
            }
        }
    }

    /// Where the artifact compiled from the bytes with digest `digest` by an
    /// engine with compatibility hash `compat` lives: `{blake3}-{compat}.cwasm`.
    /// (Files named by the SHA-256 of earlier versions are never hit and age
    /// out as any unused artifact.)
    pub(crate) fn path(&self, compat: u64, digest: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}-{compat:016x}.cwasm", hex::encode(digest)))
    }

    /// The trusted artifact at `path`, opened, if there is one: what is
    /// loaded from it later is this descriptor, the one checked.
    pub(crate) fn open_artifact(&self, path: &Path) -> Option<CachedFile> {
        self.trusted_file(path)
    }

    /// The cached module; the error says why it did not load (the file is
    /// kept: an engine with a pooling allocator refuses what does not fit its
    /// slots, and another engine may load it).
    pub(crate) fn module(&self, engine: &Engine, cached: &CachedFile) -> Result<Module, String> {
        let file = cached.file.try_clone().map_err(|e| e.to_string())?;
        deserialize_module(engine, file)
            .inspect(|_| cached.touch())
            .map_err(|e| format!("{e:#}"))
    }

    /// The cached component, as for [`DiskCache::module`].
    pub(crate) fn component(
        &self,
        engine: &Engine,
        cached: &CachedFile,
    ) -> Result<Component, String> {
        deserialize_component(engine, &cached.file)
            .inspect(|_| cached.touch())
            .map_err(|e| format!("{e:#}"))
    }

    /// The content digest recorded for the image file at `image` while it had
    /// `identity` (device, inode, size, modification and change times), if
    /// any: a new process need not read and hash an unchanged image again.
    pub(crate) fn identity(&self, image: &Path, identity: &str) -> Option<[u8; 32]> {
        use std::io::Read;
        let path = self.identity_path(image);
        let mut text = String::new();
        self.open_trusted(&path)
            .ok()?
            .0
            .take(64 << 10)
            .read_to_string(&mut text)
            .ok()?;
        let (_image, recorded, hex) = parse_identity(&text)?;
        if recorded != identity {
            return None;
        }
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex, &mut digest).ok()?;
        Some(digest)
    }

    /// Records the content digest of the image file at `image` with `identity`
    /// (one record per image path, replaced when the file changes).
    pub(crate) fn record_identity(&self, image: &Path, identity: &str, digest: &[u8; 32]) {
        let path = self.identity_path(image);
        let hex = hex::encode(digest);
        let record = format!(
            "{}\n{}\n{DIGEST_TAG}{hex}\n",
            image.display().to_string().replace('\n', " "),
            identity.replace('\n', " ")
        );
        if let Err(e) = write_atomically(&self.dir, &path, record.as_bytes()) {
            log::debug!("cannot record image identity '{}': {e}", path.display());
        }
    }

    fn identity_path(&self, image: &Path) -> PathBuf {
        use sha2::Digest as _;
        let hash = sha2::Sha256::digest(image.as_os_str().as_encoded_bytes());
        let hex = hex::encode(&hash[..16]);
        self.dir.join(format!("{hex}.identity"))
    }

    /// Whether loading the artifact at `path` into a pooling engine failed
    /// before (it does not fit a slot): a new runtime then loads it once, not twice.
    pub(crate) fn known_misfit(&self, path: &Path) -> bool {
        path.with_extension("misfit").exists()
    }

    /// Notes that the artifact at `path` does not fit a pooling slot.
    pub(crate) fn record_misfit(&self, path: &Path) {
        let _ = write_atomically(&self.dir, &path.with_extension("misfit"), b"");
    }

    /// Removes a cached artifact no engine could load.
    pub(crate) fn discard(&self, path: &Path, why: &str) {
        log::warn!("discarding cached artifact '{}': {why}", path.display());
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(path.with_extension("misfit"));
    }

    /// Saves a serialized artifact at `path`, then keeps the folder within its
    /// bound; a failure only costs a compile next time.
    pub(crate) fn store(&self, path: &Path, serialized: &[u8]) {
        if let Err(e) = write_atomically(&self.dir, path, serialized) {
            log::warn!("cannot save compiled artifact '{}': {e}", path.display());
            return;
        }
        self.evict_beyond_limit(path);
    }

    /// The compiled artifacts in the folder: path, bytes, last use, content digest (hex).
    pub(crate) fn artifacts(&self) -> Vec<CachedArtifact> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let path = entry.path();
                let name = path.file_name()?.to_str()?;
                let digest = name.strip_suffix(".cwasm")?.split('-').next()?.to_string();
                let meta = entry.metadata().ok().filter(|m| m.is_file())?;
                Some(CachedArtifact {
                    size: meta.len(),
                    used: meta.accessed().unwrap_or(std::time::UNIX_EPOCH),
                    digest,
                    path,
                })
            })
            .collect()
    }

    /// The bound on the folder's artifacts, in bytes.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Removes the least recently used artifacts while the folder holds more
    /// than its bound; never `keep` (just written). Runtimes that loaded a
    /// removed artifact keep it mapped; a later load compiles it again.
    fn evict_beyond_limit(&self, keep: &Path) {
        let mut artifacts = self.artifacts();
        let mut total: u64 = artifacts.iter().map(|a| a.size).sum();
        if total <= self.limit {
            return;
        }
        artifacts.sort_by_key(|a| a.used);
        for artifact in artifacts {
            if total <= self.limit {
                break;
            }
            if artifact.path == keep {
                continue;
            }
            log::info!(
                "compiled cache over {} bytes: removing the least recently used '{}'",
                self.limit,
                artifact.path.display()
            );
            total = total.saturating_sub(artifact.size);
            self.remove(&artifact.path);
        }
    }

    /// Removes an artifact and what is recorded about it: its misfit marker,
    /// and the identity records that name its content digest (when no other
    /// artifact of that digest is left).
    pub(crate) fn remove(&self, path: &Path) {
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(path.with_extension("misfit"));
        let Some(digest) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('-').next())
        else {
            return;
        };
        if self.artifacts().iter().any(|a| a.digest == digest) {
            return;
        }
        for (record, _, hex) in self.identity_records() {
            if hex == digest {
                let _ = std::fs::remove_file(record);
            }
        }
    }

    /// Every identity record: its file, the image path it names, the digest (hex).
    pub(crate) fn identity_records(&self) -> Vec<(PathBuf, PathBuf, String)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "identity"))
            .filter_map(|p| {
                let text = std::fs::read_to_string(&p).ok()?;
                let (image, _, hex) = parse_identity(&text)?;
                let (image, hex) = (PathBuf::from(image), hex.to_string());
                Some((p, image, hex))
            })
            .collect()
    }

    /// Files left behind by writers that died: temporary files older than an hour.
    pub(crate) fn leftovers(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            .filter(|e| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < hour_ago)
            })
            .map(|e| e.path())
            .collect()
    }

    /// The precompiled artifact at `path`, open, if it exists and is trusted.
    ///
    /// Files are trusted because of who may have written them and how they are
    /// named: the folder and the file belong to the current user and no one else
    /// may write them (checked here, on the descriptors of the folder and of the
    /// file that is then loaded), every file was written by `store` from
    /// wasmtime's own serializer, and its name carries the BLAKE3 digest of the
    /// exact source bytes and the engine's compatibility hash, so a file is
    /// only ever loaded for the bytes and engine it was compiled from.
    fn trusted_file(&self, path: &Path) -> Option<CachedFile> {
        let (file, meta) = match self.open_trusted(path) {
            Ok(opened) => opened,
            Err(why) => {
                if path.exists() {
                    log::warn!("not loading cached artifact '{}': {why}", path.display());
                }
                return None;
            }
        };
        let Some(kind) = header_kind(&file) else {
            log::warn!(
                "ignoring cached artifact '{}': not a wasmtime artifact",
                path.display()
            );
            return None;
        };
        Some(CachedFile {
            path: path.to_path_buf(),
            kind,
            accessed: meta.accessed().ok(),
            file,
        })
    }

    /// Opens the file at `path`, in the folder, so that what is checked is
    /// what is read: the folder is checked on the descriptor held since
    /// [`DiskCache::open`] (the current user's, written by no one else), then
    /// the file is opened relative to it (not following a symlink) and checked
    /// on its own descriptor. Whoever can write an ancestor folder can rename
    /// things under it, but cannot make a folder or file of ours they could
    /// write: a swap after the check changes nothing that is loaded.
    #[allow(unsafe_code)]
    fn open_trusted(&self, path: &Path) -> Result<(std::fs::File, std::fs::Metadata), String> {
        use std::os::fd::{AsRawFd, FromRawFd};
        use std::os::unix::ffi::OsStrExt;
        let name = match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) if dir == self.dir => name,
            _ => return Err(format!("'{}' is not in the cache folder", path.display())),
        };
        check_owner(
            &self.folder.metadata().map_err(|e| e.to_string())?,
            &self.dir,
            true,
        )?;
        let name = std::ffi::CString::new(name.as_bytes())
            .map_err(|_| format!("'{}' has a NUL byte", path.display()))?;
        // SAFETY: a valid folder descriptor and NUL-terminated name; the new
        // descriptor is owned by the `File` made from it, alone.
        let fd = unsafe {
            libc::openat(
                self.folder.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let error = std::io::Error::last_os_error();
            return Err(format!("'{}': {error}", path.display()));
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        let meta = file.metadata().map_err(|e| e.to_string())?;
        check_owner(&meta, path, false)?;
        Ok((file, meta))
    }
}

/// One compiled artifact of the folder.
pub(crate) struct CachedArtifact {
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    /// When it was last loaded or written: its access time.
    pub(crate) used: std::time::SystemTime,
    /// The digest (hex) of the image bytes it was compiled from.
    pub(crate) digest: String,
}

/// A trusted artifact of the folder, open: checked on this descriptor (see
/// [`open_trusted`]), its kind read from its header.
pub(crate) struct CachedFile {
    pub(crate) path: PathBuf,
    pub(crate) kind: Precompiled,
    /// Its access time when opened.
    accessed: Option<std::time::SystemTime>,
    file: std::fs::File,
}

/// How stale an artifact's access time may be before a load sets it again:
/// eviction needs the order of use, not the instant, and setting it writes
/// the file's inode (some 10 µs, a twentieth of a small module's load).
const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl CachedFile {
    /// Marks the artifact used now, for least-recently-used eviction, unless
    /// it was within [`TOUCH_EVERY`]: its access time, set explicitly
    /// (whatever the mount's atime policy) on the open descriptor — one
    /// system call; its owner may set its times whatever the descriptor was
    /// opened for.
    fn touch(&self) {
        let now = std::time::SystemTime::now();
        let recent = self
            .accessed
            .and_then(|accessed| now.duration_since(accessed).ok())
            .is_some_and(|since| since < TOUCH_EVERY);
        if !recent {
            let _ = self
                .file
                .set_times(std::fs::FileTimes::new().set_accessed(now));
        }
    }
}

/// What an identity record's digest line starts with: the hash it is of.
const DIGEST_TAG: &str = "blake3:";

/// An identity record: the image path, its identity, the content digest (hex).
/// A record of an earlier version (a SHA-256 digest, untagged) has an empty
/// digest: it matches no artifact, so the image is hashed again and the
/// record replaced, and a prune removes it.
fn parse_identity(text: &str) -> Option<(&str, &str, &str)> {
    let mut lines = text.lines();
    let (image, identity, line) = (lines.next()?, lines.next()?, lines.next()?);
    let hex = line.strip_prefix(DIGEST_TAG).unwrap_or("");
    lines.next().is_none().then_some((image, identity, hex))
}

/// The kind a wasmtime artifact declares in its ELF header — the field
/// `Engine::detect_precompiled` reads (wasmtime's OS ABI and its module or
/// component flag) — from the header's 64 bytes alone, where parsing the
/// object read some 65 KiB of section headers (a third of a small module's
/// cache hit). Whether it suits the engine is wasmtime's to check at load.
fn header_kind(file: &std::fs::File) -> Option<Precompiled> {
    use std::os::unix::fs::FileExt;
    const ELFOSABI_WASMTIME: u8 = 200;
    const EF_WASMTIME_MODULE: u32 = 1 << 0;
    const EF_WASMTIME_COMPONENT: u32 = 1 << 1;
    let native_data = if cfg!(target_endian = "little") { 1 } else { 2 };
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0).ok()?;
    // ELF, 64-bit, native byte order, wasmtime's ABI version 0.
    if header[..4] != *b"\x7fELF"
        || header[4] != 2
        || header[5] != native_data
        || header[7] != ELFOSABI_WASMTIME
        || header[8] != 0
    {
        return None;
    }
    let flags = u32::from_ne_bytes(header[48..52].try_into().ok()?);
    if flags & EF_WASMTIME_MODULE != 0 {
        Some(Precompiled::Module)
    } else if flags & EF_WASMTIME_COMPONENT != 0 {
        Some(Precompiled::Component)
    } else {
        None
    }
}

/// The folder `dir`, opened without following a symlink and checked on that
/// descriptor: the current user's, written by no one else.
fn open_folder(dir: &Path) -> Result<std::fs::File, String> {
    let folder = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| format!("'{}': {e}", dir.display()))?;
    check_owner(&folder.metadata().map_err(|e| e.to_string())?, dir, true)?;
    Ok(folder)
}

/// A path that opens the very file `file` is (Linux's `/proc/self/fd`), for
/// wasmtime calls that take a path.
fn fd_path(file: &std::fs::File) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

#[allow(unsafe_code)]
fn deserialize_module(engine: &Engine, file: std::fs::File) -> wasmtime::Result<Module> {
    // SAFETY: `file` passed `open_trusted`: written by `DiskCache::store`
    // from `Module::serialize` into the runtime's own cache directory, named
    // by the digest of its source and the engine's compatibility hash;
    // wasmtime itself refuses files from other versions or settings.
    unsafe { Module::deserialize_open_file(engine, file) }
}

#[allow(unsafe_code)]
fn deserialize_component(engine: &Engine, file: &std::fs::File) -> wasmtime::Result<Component> {
    // SAFETY: as for `deserialize_module`, for `Component::serialize`; the
    // path is the open, checked descriptor's own.
    unsafe { Component::deserialize_file(engine, fd_path(file)) }
}

fn write_atomically(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    // A private (0600) file of an unpredictable name; `leftovers` finds the
    // ones a dead writer left by their prefix.
    let mut temp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    temp.write_all(data)?;
    // Renamed only once whole: a reader sees the old file, the new one, or none.
    temp.persist(path).map(drop).map_err(|e| e.error)
}

/// The engine's compatibility hash: which compiled artifacts it can load.
///
/// It names files that outlive the process, so it is SHA-256 of what wasmtime
/// hashes (its version, target and settings), not `DefaultHasher`, whose
/// output may change between Rust releases.
pub(crate) fn compatibility(engine: &Engine) -> u64 {
    let mut hasher = Sha256Hasher(sha2::Sha256::default());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

/// A `Hasher` that feeds SHA-256: the first 8 bytes of the digest are the hash.
struct Sha256Hasher(sha2::Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }

    fn finish(&self) -> u64 {
        let digest = sha2::Digest::finalize(self.0.clone());
        u64::from_le_bytes(
            digest[..8]
                .try_into()
                .expect("a SHA-256 digest has 32 bytes"),
        )
    }
}

/// Refuses a folder (`is_dir`) or file that is a symbolic link, is of the
/// other kind, belongs to another user, or that group or others may write.
pub(crate) fn trusted(path: &Path, is_dir: bool) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    check_owner(&meta, path, is_dir)
}

/// The check of [`trusted`], on metadata already read (of a path or of an open descriptor).
fn check_owner(meta: &std::fs::Metadata, path: &Path, is_dir: bool) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(bytes: &[u8]) -> Option<Precompiled> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        header_kind(&file)
    }

    #[test]
    fn a_load_sets_the_access_time_only_when_it_is_stale() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30);
        let accessed = || file.as_file().metadata().unwrap().accessed().unwrap();
        let cached = |when| CachedFile {
            path: file.path().to_path_buf(),
            kind: Precompiled::Module,
            accessed: Some(when),
            file: file.reopen().unwrap(),
        };
        file.as_file()
            .set_times(std::fs::FileTimes::new().set_accessed(long_ago))
            .unwrap();
        // Opened while its access time said ten seconds ago: left alone.
        let recently = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
        cached(recently).touch();
        assert_eq!(accessed(), long_ago);
        // Opened while it said long ago: set to now.
        cached(long_ago).touch();
        let since = std::time::SystemTime::now()
            .duration_since(accessed())
            .unwrap_or_default();
        assert!(since < TOUCH_EVERY, "{:?}", accessed());
    }

    #[test]
    fn the_header_kind_is_wasmtimes_own_detection() {
        let engine = Engine::default();
        let module = engine
            .precompile_module(&wat::parse_str("(module (func (export \"f\")))").unwrap())
            .unwrap();
        let component = engine
            .precompile_component(&wat::parse_str("(component)").unwrap())
            .unwrap();
        for artifact in [&module, &component] {
            assert!(Engine::detect_precompiled(artifact).is_some());
            assert_eq!(kind_of(artifact), Engine::detect_precompiled(artifact));
        }
        assert_eq!(kind_of(&module), Some(Precompiled::Module));
        assert_eq!(kind_of(&component), Some(Precompiled::Component));
        // Not wasmtime's: another ELF, a truncated header, garbage.
        let mut other_abi = module.clone();
        other_abi[7] = 0;
        assert_eq!(kind_of(&other_abi), None);
        assert_eq!(kind_of(&module[..40]), None);
        assert_eq!(kind_of(b"\0asm\x01\0\0\0"), None);
    }
}
