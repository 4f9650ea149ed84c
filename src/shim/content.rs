//! The container's WebAssembly from containerd's content store, as runwasi
//! reads it: the container's image, its manifest (through an index if need
//! be), and the first layer whose media type is WebAssembly.

use anyhow::{anyhow, bail, Context, Result};
use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient,
    images_client::ImagesClient, GetContainerRequest, GetImageRequest, ReadContentRequest,
};
use containerd_client::tonic::{self, Request};
use serde_json::Value;

/// Layer media types that hold a module or a component as it is.
pub const WASM_LAYER_TYPES: &[&str] = &[
    "application/wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
];

/// Manifests and indexes are small: a bigger one is refused before it is read.
const MANIFEST_LIMIT: i64 = 4 << 20;
/// The largest WebAssembly layer the shim reads.
pub const LAYER_LIMIT: i64 = 1 << 30;
/// How many manifests an index may name (deeper indexes are not followed).
const INDEX_ENTRIES: usize = 1024;

/// A descriptor as an OCI manifest or index writes it.
struct Descriptor {
    media_type: String,
    digest: String,
    size: i64,
}

/// The WebAssembly layer of container `id`'s image, or `None` when the image
/// has no such layer (its rootfs may hold a `.wasm` file instead).
pub fn wasm_layer(address: &str, namespace: &str, id: &str) -> Result<Option<Vec<u8>>> {
    let (address, namespace, id) = (address.to_string(), namespace.to_string(), id.to_string());
    wasmtime_wasi::runtime::in_tokio(async move {
        let channel = containerd_client::connect(&address)
            .await
            .with_context(|| format!("cannot connect to containerd at {address}"))?;
        let container = ContainersClient::new(channel.clone())
            .get(namespaced(
                GetContainerRequest { id: id.clone() },
                &namespace,
            ))
            .await
            .map_err(|status| anyhow!("container {id}: {}", status.message()))?
            .into_inner()
            .container
            .ok_or_else(|| anyhow!("container {id}: containerd returned no container"))?;
        if container.image.is_empty() {
            return Ok(None);
        }
        let image = ImagesClient::new(channel.clone())
            .get(namespaced(
                GetImageRequest {
                    name: container.image.clone(),
                },
                &namespace,
            ))
            .await
            .map_err(|status| anyhow!("image {}: {}", container.image, status.message()))?
            .into_inner()
            .image
            .and_then(|image| image.target)
            .ok_or_else(|| anyhow!("image {}: no target", container.image))?;
        let mut content = ContentClient::new(channel);
        let mut target = Descriptor {
            media_type: image.media_type,
            digest: image.digest,
            size: image.size,
        };
        if is_index(&target.media_type) {
            let index = read_json(&mut content, &namespace, &target).await?;
            target = pick_manifest(&index)?;
        }
        let manifest = read_json(&mut content, &namespace, &target).await?;
        let Some(layer) = wasm_layer_of(&manifest)? else {
            return Ok(None);
        };
        if layer.size > LAYER_LIMIT {
            bail!(
                "the image's wasm layer is {} bytes, more than the shim reads ({LAYER_LIMIT})",
                layer.size
            );
        }
        read(&mut content, &namespace, &layer, LAYER_LIMIT)
            .await
            .map(Some)
    })
}

fn namespaced<T>(message: T, namespace: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = namespace.parse() {
        request.metadata_mut().insert("containerd-namespace", value);
    }
    request
}

fn is_index(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}

fn descriptor(value: &Value) -> Option<Descriptor> {
    Some(Descriptor {
        media_type: value.get("mediaType")?.as_str()?.to_string(),
        digest: value.get("digest")?.as_str()?.to_string(),
        size: value.get("size")?.as_i64()?,
    })
}

/// An index's manifest for WebAssembly (`wasm` architecture or a `wasi*`
/// os), else its only manifest.
fn pick_manifest(index: &Value) -> Result<Descriptor> {
    let manifests = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("the image index has no manifests"))?;
    if manifests.len() > INDEX_ENTRIES {
        bail!("the image index names {} manifests", manifests.len());
    }
    let wasm = manifests.iter().find(|entry| {
        let platform = entry.get("platform");
        let field = |name| {
            platform
                .and_then(|p| p.get(name))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        field("architecture") == "wasm" || field("os").starts_with("wasi")
    });
    let chosen = match (wasm, manifests.as_slice()) {
        (Some(entry), _) => entry,
        (None, [only]) => only,
        (None, _) => bail!("the image index has no WebAssembly manifest"),
    };
    descriptor(chosen).ok_or_else(|| anyhow!("the image index has a malformed descriptor"))
}

fn wasm_layer_of(manifest: &Value) -> Result<Option<Descriptor>> {
    let layers = manifest
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("the image manifest has no layers"))?;
    Ok(layers
        .iter()
        .filter_map(descriptor)
        .find(|layer| WASM_LAYER_TYPES.contains(&layer.media_type.as_str())))
}

async fn read_json(
    content: &mut ContentClient<tonic::transport::Channel>,
    namespace: &str,
    target: &Descriptor,
) -> Result<Value> {
    if target.size > MANIFEST_LIMIT {
        bail!(
            "manifest {} is too large: {} bytes",
            target.digest,
            target.size
        );
    }
    let bytes = read(content, namespace, target, MANIFEST_LIMIT).await?;
    serde_json::from_slice(&bytes).with_context(|| format!("manifest {}", target.digest))
}

/// Reads a blob, never more than `limit` bytes nor more than its descriptor says.
async fn read(
    content: &mut ContentClient<tonic::transport::Channel>,
    namespace: &str,
    target: &Descriptor,
    limit: i64,
) -> Result<Vec<u8>> {
    let request = ReadContentRequest {
        digest: target.digest.clone(),
        offset: 0,
        size: 0,
    };
    let mut stream = content
        .read(namespaced(request, namespace))
        .await
        .map_err(|status| anyhow!("content {}: {}", target.digest, status.message()))?
        .into_inner();
    let bound = target.size.min(limit).max(0) as usize;
    // Grown as the chunks come, not reserved on the descriptor's word.
    let mut bytes = Vec::with_capacity(bound.min(16 << 20));
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|status| anyhow!("content {}: {}", target.digest, status.message()))?
    {
        if bytes.len() + chunk.data.len() > bound {
            bail!(
                "content {} is larger than its descriptor says",
                target.digest
            );
        }
        bytes.extend_from_slice(&chunk.data);
    }
    Ok(bytes)
}
