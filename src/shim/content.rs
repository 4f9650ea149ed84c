//! The container's WebAssembly from containerd's content store, as runwasi
//! reads it: the container's image, its manifest (through an index if need
//! be), and the first layer whose media type is WebAssembly.
//!
//! containerd's gRPC API is called through tonic with the few messages the
//! shim needs declared here with prost's derive (the fields we read, by their
//! numbers in containerd's `.proto` files; prost skips the others). Nothing
//! runs `protoc` at build time, so the shim builds on a machine with Rust only.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

/// containerd's messages, as far as the shim reads them.
mod api {
    /// `containerd.services.containers.v1.GetContainerRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetContainerRequest {
        #[prost(string, tag = "1")]
        pub id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetContainerResponse {
        #[prost(message, optional, tag = "1")]
        pub container: Option<Container>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Container {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(string, tag = "3")]
        pub image: String,
    }
    /// `containerd.services.images.v1.GetImageRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetImageRequest {
        #[prost(string, tag = "1")]
        pub name: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetImageResponse {
        #[prost(message, optional, tag = "1")]
        pub image: Option<Image>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Image {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "3")]
        pub target: Option<Descriptor>,
    }
    /// `containerd.types.Descriptor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Descriptor {
        #[prost(string, tag = "1")]
        pub media_type: String,
        #[prost(string, tag = "2")]
        pub digest: String,
        #[prost(int64, tag = "3")]
        pub size: i64,
    }
    /// `containerd.services.content.v1.ReadContentRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ReadContentRequest {
        #[prost(string, tag = "1")]
        pub digest: String,
        #[prost(int64, tag = "2")]
        pub offset: i64,
        #[prost(int64, tag = "3")]
        pub size: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ReadContentResponse {
        #[prost(int64, tag = "1")]
        pub offset: i64,
        #[prost(bytes = "vec", tag = "2")]
        pub data: Vec<u8>,
    }
}

use api::{GetContainerRequest, GetContainerResponse, GetImageRequest, GetImageResponse};
use api::{ReadContentRequest, ReadContentResponse};

const GET_CONTAINER: &str = "/containerd.services.containers.v1.Containers/Get";
const GET_IMAGE: &str = "/containerd.services.images.v1.Images/Get";
const READ_CONTENT: &str = "/containerd.services.content.v1.Content/Read";

/// A gRPC client of containerd's socket.
struct Client {
    grpc: tonic::client::Grpc<Channel>,
    namespace: String,
}

impl Client {
    async fn connect(address: &str, namespace: &str) -> Result<Client> {
        let path = std::path::PathBuf::from(address);
        // The URI is not used: every connection is the unix socket.
        let channel = Endpoint::from_static("http://[::]")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await?;
        Ok(Client {
            grpc: tonic::client::Grpc::new(channel),
            namespace: namespace.to_string(),
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = self.namespace.parse() {
            request.metadata_mut().insert("containerd-namespace", value);
        }
        request
    }

    async fn unary<Q, A>(&mut self, path: &'static str, message: Q) -> Result<A, tonic::Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Q, A>::default();
        let request = self.request(message);
        let path = http::uri::PathAndQuery::from_static(path);
        Ok(self.grpc.unary(request, path, codec).await?.into_inner())
    }

    async fn read(
        &mut self,
        message: ReadContentRequest,
    ) -> Result<tonic::Streaming<ReadContentResponse>, tonic::Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<ReadContentRequest, ReadContentResponse>::default();
        let request = self.request(message);
        let path = http::uri::PathAndQuery::from_static(READ_CONTENT);
        Ok(self
            .grpc
            .server_streaming(request, path, codec)
            .await?
            .into_inner())
    }
}

/// Layer media types that hold a module or a component as it is.
pub const WASM_LAYER_TYPES: &[&str] = &[
    "application/wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
];

/// Manifests and indexes are small: a bigger one is refused before it is read.
const MANIFEST_LIMIT: i64 = 4 << 20;
/// How many manifests an index may name (deeper indexes are not followed).
const INDEX_ENTRIES: usize = 1024;

/// A descriptor as an OCI manifest or index writes it.
struct Descriptor {
    media_type: String,
    digest: String,
    size: i64,
}

/// The WebAssembly layer of container `id`'s image, or `None` when the image
/// has no such layer (its rootfs may hold a `.wasm` file instead); a layer
/// over `limit` bytes is refused, by its descriptor and as it is read.
pub fn wasm_layer(address: &str, namespace: &str, id: &str, limit: u64) -> Result<Option<Vec<u8>>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (address, namespace, id) = (address.to_string(), namespace.to_string(), id.to_string());
    wasmtime_wasi::runtime::in_tokio(async move {
        let mut client = Client::connect(&address, &namespace)
            .await
            .with_context(|| format!("cannot connect to containerd at {address}"))?;
        let container = client
            .unary::<_, GetContainerResponse>(GET_CONTAINER, GetContainerRequest { id: id.clone() })
            .await
            .map_err(|status| anyhow!("container {id}: {}", status.message()))?
            .container
            .ok_or_else(|| anyhow!("container {id}: containerd returned no container"))?;
        if container.image.is_empty() {
            return Ok(None);
        }
        let image = client
            .unary::<_, GetImageResponse>(
                GET_IMAGE,
                GetImageRequest {
                    name: container.image.clone(),
                },
            )
            .await
            .map_err(|status| anyhow!("image {}: {}", container.image, status.message()))?
            .image
            .and_then(|image| image.target)
            .ok_or_else(|| anyhow!("image {}: no target", container.image))?;
        let mut target = Descriptor {
            media_type: image.media_type,
            digest: image.digest,
            size: image.size,
        };
        if is_index(&target.media_type) {
            let index = read_json(&mut client, &target).await?;
            target = pick_manifest(&index)?;
        }
        let manifest = read_json(&mut client, &target).await?;
        let Some(layer) = wasm_layer_of(&manifest)? else {
            return Ok(None);
        };
        if layer.size > limit {
            bail!(
                "the image's wasm layer is {} bytes, more than the shim reads ({limit}, max_artifact_size)",
                layer.size
            );
        }
        read(&mut client, &layer, limit).await.map(Some)
    })
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

async fn read_json(client: &mut Client, target: &Descriptor) -> Result<Value> {
    if target.size > MANIFEST_LIMIT {
        bail!(
            "manifest {} is too large: {} bytes",
            target.digest,
            target.size
        );
    }
    let bytes = read(client, target, MANIFEST_LIMIT).await?;
    serde_json::from_slice(&bytes).with_context(|| format!("manifest {}", target.digest))
}

/// Reads a blob, never more than `limit` bytes nor more than its descriptor says.
async fn read(client: &mut Client, target: &Descriptor, limit: i64) -> Result<Vec<u8>> {
    let request = ReadContentRequest {
        digest: target.digest.clone(),
        offset: 0,
        size: 0,
    };
    let mut stream = client
        .read(request)
        .await
        .map_err(|status| anyhow!("content {}: {}", target.digest, status.message()))?;
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
