//! The registry client: TLS, or plain HTTP for loopback and listed registries;
//! its futures run on wasmtime-wasi's tokio runtime within a time limit; its
//! errors said in one line.

use super::auth::{host_of, registry_key};
use super::media::MANIFEST_MEDIA_TYPES;
use crate::settings::WasmConfig;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How the client reaches registries.
pub(super) struct Transport {
    /// Registries spoken to over plain HTTP beside loopback ones.
    insecure: Vec<String>,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl Transport {
    pub(super) fn new(config: &WasmConfig) -> Self {
        Transport {
            insecure: config
                .insecure_registries
                .iter()
                .map(|h| registry_key(h))
                .collect(),
            connect_timeout: config.registry_connect_timeout,
            read_timeout: config.registry_read_timeout,
        }
    }

    /// Plain HTTP for loopback registries and those listed as insecure; TLS for all others.
    fn protocol_for(&self, registry: &str) -> ClientProtocol {
        let host = host_of(registry);
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let listed = self
            .insecure
            .iter()
            .any(|entry| entry == registry || entry == host);
        if loopback || listed {
            ClientProtocol::HttpsExcept(vec![registry.to_string()])
        } else {
            ClientProtocol::Https
        }
    }

    pub(super) fn client(&self, registry: &str) -> std::result::Result<Client, String> {
        install_crypto_provider();
        let config = ClientConfig {
            protocol: self.protocol_for(registry),
            connect_timeout: Some(self.connect_timeout),
            read_timeout: Some(self.read_timeout),
            max_concurrent_download: 1,
            user_agent: concat!("wasmpool/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        Client::try_from(config).map_err(|e| format!("cannot set up the registry client: {e}"))
    }
}

/// Runs `future` on wasmtime-wasi's tokio runtime (on a thread of its own, so
/// the caller may even be inside another tokio runtime) and waits for it up to
/// `timeout`; past that, sets `cancel` — the pull then writes nothing more and
/// ends at its next read, or by its read timeout — and gives up.
pub(super) fn run_within<T: Send + 'static>(
    timeout: Duration,
    cancel: Arc<AtomicBool>,
    future: impl std::future::Future<Output = std::result::Result<T, String>> + Send + 'static,
) -> std::result::Result<T, String> {
    let (done, result) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("wasmpool-pull".into())
        .spawn(move || {
            let _ = done.send(wasmtime_wasi::runtime::in_tokio(future));
        })
        .map_err(|e| format!("cannot start the registry client: {e}"))?;
    match result.recv_timeout(timeout) {
        Ok(result) => result,
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
            cancel.store(true, Ordering::Release);
            Err(format!(
                "timed out after {timeout:?} (registry_pull_timeout)"
            ))
        }
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
            Err("the registry client panicked".into())
        }
    }
}

/// Makes ring rustls' process default unless the host installed one: reqwest
/// (without its own provider) needs one, and ring is the provider the rest of
/// the tree compiles in, so this changes nothing else.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// One line for a failed registry operation: what failed, with the HTTP status where known.
pub(super) fn describe(error: &OciDistributionError, registry: &str) -> String {
    match error {
        OciDistributionError::AuthenticationFailure(why) => {
            format!("unauthorized (401) at {registry}: {}", one_line(why))
        }
        OciDistributionError::UnauthorizedError { url } => {
            format!("unauthorized (401): {url} needs credentials, or refused those given")
        }
        OciDistributionError::RegistryError { envelope, url } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let messages: Vec<&str> = envelope.errors.iter().map(|e| e.message.as_str()).collect();
            let status = if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                "not found (404)"
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                "unauthorized (401)"
            } else {
                "registry error"
            };
            format!("{status}: {} ({url})", one_line(&messages.join("; ")))
        }
        OciDistributionError::ServerError { code, url, message } => {
            let what = match code {
                401 => "unauthorized (401)".to_string(),
                403 => "forbidden (403)".to_string(),
                404 => "not found (404)".to_string(),
                _ => format!("HTTP {code}"),
            };
            format!("{what}: {url} {}", one_line(message)).trim_end().to_string()
        }
        OciDistributionError::ImageManifestNotFoundError(why) => {
            format!("not found (404): {}", one_line(why))
        }
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            mismatch(expected, actual)
        }
        OciDistributionError::DigestError(e) => format!("digest error: {}", chain(e)),
        OciDistributionError::UnsupportedMediaTypeError(media_type) => format!(
            "not a WebAssembly artifact: the manifest's media type is {media_type}; expected one of {}",
            MANIFEST_MEDIA_TYPES.join(", ")
        ),
        OciDistributionError::RequestError(e) => {
            let kind = if e.is_timeout() {
                "timed out talking to"
            } else if e.is_connect() {
                "cannot connect to"
            } else {
                "request failed at"
            };
            format!("{kind} {registry}: {}", chain(e))
        }
        other => one_line(&chain(other)),
    }
}

/// A failure while streaming a blob: a digest check of oci-client's, or the transport's.
pub(super) fn describe_io(error: &std::io::Error, digest: &str) -> String {
    let inner = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<DigestError>());
    if let Some(DigestError::VerificationError { expected, actual }) = inner {
        return format!("layer {}", mismatch(expected, actual));
    }
    let text = chain(error);
    if text.contains("digest") {
        format!("digest mismatch for layer {digest}: {text}")
    } else {
        format!("download of layer {digest} failed: {text}")
    }
}

/// An error and its sources, joined into one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    one_line(&text)
}

pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(super) fn mismatch(expected: &str, actual: &str) -> String {
    format!("digest mismatch: expected {expected}, got {actual}")
}
