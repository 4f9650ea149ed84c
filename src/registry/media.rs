//! Which manifests, indexes and layers are WebAssembly.

use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};

/// Layer media types that carry a WebAssembly binary: `application/wasm` (oras,
/// wkg, wasm-pkg-tools) and the older `application/vnd.wasm.content.layer.v1+wasm`
/// (wasm-to-oci, krustlet).
pub(crate) const WASM_LAYER_MEDIA_TYPES: [&str; 2] = [
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
pub(super) const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The one WebAssembly layer of a manifest, or an error naming the media types found.
pub(super) fn wasm_layer(
    manifest: &OciImageManifest,
) -> std::result::Result<&OciDescriptor, String> {
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
pub(super) fn wasm_platform_entry(index: &OciImageIndex) -> std::result::Result<String, String> {
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
