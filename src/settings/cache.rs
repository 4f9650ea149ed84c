//! What a host sees of the caches it keeps: images, compiled code, what a prune freed.

use std::path::PathBuf;
use std::time::SystemTime;

/// An image in the image cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedImage {
    /// The reference it was pulled by, or its file's name for an image put there by hand.
    pub reference: String,
    /// The digest the reference resolved to when it was pulled, if it was.
    pub digest: Option<String>,
    /// Bytes of the image file.
    pub size: u64,
    /// When the image file was written (pulled).
    pub modified: SystemTime,
    /// The image file.
    pub path: PathBuf,
}

/// How much the caches hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskUsage {
    /// Images in the image cache, and their bytes.
    pub images: usize,
    /// See `images`.
    pub image_bytes: u64,
    /// Compiled artifacts, and their bytes.
    pub compiled: usize,
    /// See `compiled`.
    pub compiled_bytes: u64,
    /// The compiled cache's bound (`WasmConfig::compiled_cache_limit`).
    pub compiled_limit: u64,
}

/// What a prune removed (or, for a dry run, would remove).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PruneReport {
    /// The files removed.
    pub removed: Vec<PathBuf>,
    /// Their bytes.
    pub freed_bytes: u64,
}
