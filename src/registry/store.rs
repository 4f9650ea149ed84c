//! The cache side of a pull: the lock on a cache file while it is pulled, and
//! the digest recorded beside it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// An exclusive `flock` on `.pulls/{file}.lock` in the cache folder, released when dropped.
pub(super) struct FileLock(#[allow(dead_code)] std::fs::File);

impl FileLock {
    pub(super) fn acquire(path: &Path) -> std::io::Result<FileLock> {
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

/// Where the digest of a cache file is recorded: `{file}.digest`.
fn digest_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".digest");
    PathBuf::from(name)
}

/// The digest recorded beside a cache file, if any.
pub(super) fn recorded_digest(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(digest_path(path)).ok()?;
    let digest = text.trim();
    (!digest.is_empty()).then(|| digest.to_string())
}

pub(super) fn record_digest(path: &Path, digest: &str) -> std::result::Result<(), String> {
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
