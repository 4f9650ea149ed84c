//! The image cache's files: where an image name's file is, and the files
//! already read (a create of an unchanged file costs a `stat`, not a read and a hash).

use super::disk_cache::DiskCache;
use super::{digest_of, Artifact, ArtifactCache};
use crate::settings::{CachedImage, Error, Result};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What tells one version of a file from another without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileIdentity {
    fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(FileIdentity {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// A file's identity when it was read, and its artifact.
type Known<P> = (FileIdentity, Arc<Artifact<P>>);

/// The artifact of each image file read so far, valid while the file's identity holds.
pub(crate) struct ImageFiles<P> {
    known: Mutex<HashMap<PathBuf, Known<P>>>,
    /// How many files are remembered; past it, all is forgotten and learned again.
    limit: usize,
}

impl<P> ImageFiles<P> {
    pub(crate) fn new(limit: usize) -> Self {
        ImageFiles {
            known: Mutex::new(HashMap::new()),
            limit: limit.max(1),
        }
    }

    /// The artifact of the file at `path`: remembered if the file is unchanged
    /// (same device, inode, size, modification and change times), else read,
    /// interned by content, and remembered. A new runtime finds the content
    /// digest of an unchanged file in the compiled cache's identity records,
    /// and reads the file only if its native code must be compiled.
    pub(crate) fn artifact(
        &self,
        path: &Path,
        artifacts: &ArtifactCache<P>,
        disk: Option<&DiskCache>,
    ) -> Result<Arc<Artifact<P>>> {
        let unreadable = |e: std::io::Error| Error::UnreadableArtifact {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let before = FileIdentity::of(path).map_err(unreadable)?;
        if let Some((identity, artifact)) = self.known.lock().get(path) {
            if *identity == before {
                return Ok(artifact.clone());
            }
        }
        let identity = format!("{before:?}");
        if let Some(digest) = disk.and_then(|d| d.identity(path, &identity)) {
            let artifact = artifacts.intern_file(digest, path);
            self.remember(path, before, &artifact);
            return Ok(artifact);
        }
        let bytes = std::fs::read(path).map_err(unreadable)?;
        let digest = digest_of(&bytes);
        let artifact = artifacts.intern_digested(digest, &bytes);
        // Remembered only if the file did not change while it was read.
        if FileIdentity::of(path).ok() == Some(before) {
            self.remember(path, before, &artifact);
            if let Some(disk) = disk {
                disk.record_identity(path, &identity, &digest);
            }
        }
        Ok(artifact)
    }

    fn remember(&self, path: &Path, identity: FileIdentity, artifact: &Arc<Artifact<P>>) {
        let mut known = self.known.lock();
        if known.len() >= self.limit && !known.contains_key(path) {
            known.clear();
        }
        known.insert(path.to_path_buf(), (identity, artifact.clone()));
    }
}

/// The cache file of an image name, `{cache_dir}/{name with '/', ':', '@' as
/// '_'}.wasm`, refusing names that could leave the cache directory.
pub(crate) fn image_path(cache_dir: &Path, name: &str) -> Result<PathBuf> {
    let refuse = || Error::InvalidImageName(name.to_string());
    if name.is_empty()
        || name.chars().any(|c| c.is_control() || c == '\\')
        || name.starts_with('/')
        || name.split(['/', ':', '@']).any(|part| part == "..")
    {
        return Err(refuse());
    }
    let key = name.replace(['/', ':', '@'], "_");
    Ok(cache_dir.join(format!("{key}.wasm")))
}

/// Where the digest (and reference) of a cache file is recorded: `{file}.digest`.
fn digest_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".digest");
    PathBuf::from(name)
}

/// The digest recorded beside a cache file by the pull that wrote it, if any.
pub(crate) fn recorded_digest(path: &Path) -> Option<String> {
    recorded(path).map(|(digest, _)| digest)
}

/// The digest and the reference recorded beside a cache file, if any.
fn recorded(path: &Path) -> Option<(String, Option<String>)> {
    let text = std::fs::read_to_string(digest_path(path)).ok()?;
    let mut lines = text.lines().map(str::trim);
    let digest = lines.next().filter(|d| !d.is_empty())?.to_string();
    let reference = lines.next().filter(|r| !r.is_empty()).map(str::to_owned);
    Some((digest, reference))
}

/// Records what a pull wrote: its digest, and the reference it was pulled by.
pub(crate) fn record_digest(
    path: &Path,
    digest: &str,
    reference: &str,
) -> std::result::Result<(), String> {
    use std::io::Write;
    let target = digest_path(path);
    let folder = path.parent().unwrap_or(Path::new("."));
    let write = || -> std::io::Result<()> {
        let mut file = tempfile::Builder::new()
            .prefix(".pulling-")
            .tempfile_in(folder)?;
        writeln!(file, "{digest}")?;
        writeln!(file, "{reference}")?;
        file.persist(&target).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|e| format!("cannot write '{}': {e}", target.display()))
}

/// The images in the cache folder: every `*.wasm` file, with what its pull recorded.
pub(crate) fn list(cache_dir: &Path) -> Vec<CachedImage> {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return Vec::new();
    };
    let mut images: Vec<CachedImage> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            let name = path.file_name()?.to_str()?.to_string();
            if name.starts_with('.') || !name.ends_with(".wasm") {
                return None;
            }
            let meta = entry.metadata().ok().filter(|m| m.is_file())?;
            let (digest, reference) = match recorded(&path) {
                Some((digest, reference)) => (Some(digest), reference),
                None => (None, None),
            };
            Some(CachedImage {
                reference: reference.unwrap_or_else(|| name.trim_end_matches(".wasm").to_string()),
                digest,
                size: meta.len(),
                modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                path,
            })
        })
        .collect();
    images.sort_by(|a, b| a.reference.cmp(&b.reference));
    images
}

/// Removes an image file and its record.
pub(crate) fn remove(path: &Path) -> std::io::Result<()> {
    std::fs::remove_file(path)?;
    let _ = std::fs::remove_file(digest_path(path));
    Ok(())
}
