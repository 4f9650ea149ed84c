//! The cache side of a pull: the lock on a cache file while it is pulled (the
//! digest recorded beside it is the image cache's, `artifacts::images`).

use std::path::Path;

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
