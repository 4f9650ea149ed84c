//! One pull of one reference: resolve it, choose the WebAssembly layer,
//! stream it into a private temporary file (counted, hashed, bounded), verify
//! it, and rename it into the cache.

use super::media::{wasm_layer, wasm_platform_entry};
use super::transport::{chain, mismatch, LayerHasher, Manifest, Session};
use super::PulledImage;
use crate::artifacts::images::record_digest;
use oci_client::manifest::OciDescriptor;
use oci_client::Reference;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One pull of one reference, run on wasmtime-wasi's tokio runtime.
pub(super) struct Fetch {
    pub(super) session: Session,
    pub(super) reference: Reference,
    pub(super) path: PathBuf,
    /// The digest of the copy in the cache, if any: `Always` downloads only when it changed.
    pub(super) known: Option<String>,
    /// `max_artifact_size`.
    pub(super) limit: u64,
    /// Set when the caller gave up (`registry_pull_timeout`): nothing more is written.
    pub(super) cancel: Arc<AtomicBool>,
    /// Told the bytes downloaded so far and the layer's size.
    pub(super) progress: Option<super::Progress>,
}

impl Fetch {
    pub(super) async fn run(self) -> std::result::Result<PulledImage, String> {
        let session = &self.session;
        let reference = &self.reference;
        let named = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_string();
        if let Some(known) = &self.known {
            let current = session.manifest_digest(&named).await?;
            if &current == known {
                log::debug!("{reference}: unchanged at {current}");
                return Ok(self.unchanged(current));
            }
        }
        let (manifest, digest) = session.manifest(&named).await?;
        let manifest = match manifest {
            Manifest::Image(manifest) => manifest,
            Manifest::Index(index) => {
                let entry = wasm_platform_entry(&index)?;
                match session.manifest(&entry).await? {
                    (Manifest::Image(manifest), _) => manifest,
                    (Manifest::Index(_), _) => {
                        return Err("the index's wasi/wasm entry is another index".into())
                    }
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
        let file = self.download(layer, limit).await?;
        self.check_cancel()?;
        file.persist(&self.path)
            .map_err(|e| format!("cannot write '{}': {}", self.path.display(), e.error))?;
        record_digest(&self.path, &digest, &reference.whole())?;
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
        layer: &OciDescriptor,
        limit: u64,
    ) -> std::result::Result<tempfile::NamedTempFile, String> {
        let folder = self.path.parent().unwrap_or(Path::new("."));
        let mut file = tempfile::Builder::new()
            .prefix(".pulling-")
            .suffix(".wasm")
            .tempfile_in(folder)
            .map_err(|e| format!("cannot write in '{}': {e}", folder.display()))?;
        let mut hasher = LayerHasher::new(&layer.digest)?;
        let mut response = self.session.blob(&layer.digest).await?;
        if let Some(length) = response.content_length() {
            if length > limit {
                return Err(too_large(length, limit));
            }
        }
        let declared = u64::try_from(layer.size).unwrap_or(0);
        let mut written: u64 = 0;
        let mut magic = Vec::with_capacity(4);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("download of layer {} failed: {}", layer.digest, chain(&e)))?
        {
            self.check_cancel()?;
            written += chunk.len() as u64;
            if let Some(progress) = &self.progress {
                progress(written.min(declared), declared);
            }
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

fn too_large(size: u64, limit: u64) -> String {
    format!("too large: the artifact has {size} bytes, the limit (max_artifact_size) is {limit}")
}
