//! The registry's HTTP side, on reqwest (the client oci-client itself uses):
//! TLS, or plain HTTP for loopback and listed registries; the distribution
//! API's auth challenges (Bearer token exchange, Basic); and a bound on every
//! body a registry sends, checked as it is read — manifests and indexes
//! (4 MiB, as the distribution registry and containerd use), token responses
//! (64 KiB), error bodies quoted in messages (4 KiB) — so no registry, hostile
//! or compromised, can grow the host by what it sends. Redirects are followed
//! at most 5 times, and credentials never follow a redirect to another host.
//! Its futures run on wasmtime-wasi's tokio runtime within a time limit.

use super::auth::{host_of, registry_key};
use super::media::MANIFEST_MEDIA_TYPES;
use crate::settings::{RegistryAuth, WasmConfig};
use bytes::{Bytes, BytesMut};
use oci_client::manifest::{OciImageIndex, OciImageManifest};
use oci_client::Reference;
use parking_lot::Mutex;
use reqwest::header::{ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use sha2::Digest as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The largest manifest or index read (the distribution registry's and containerd's bound).
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The largest token response read.
const MAX_TOKEN_BYTES: u64 = 64 << 10;
/// The most of an error body read, to quote it.
const MAX_ERROR_BYTES: u64 = 4 << 10;
/// The most entries an index may list.
const MAX_INDEX_ENTRIES: usize = 1024;
/// The most layers a manifest may list (docker's own limit is 127).
const MAX_LAYERS: usize = 128;
/// The most redirects one request follows.
const MAX_REDIRECTS: usize = 5;

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
    fn plain_http(&self, registry: &str) -> bool {
        let host = host_of(registry);
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        loopback
            || self
                .insecure
                .iter()
                .any(|entry| entry == registry || entry == host)
    }

    /// A session with the reference's registry and repository.
    pub(super) fn session(
        &self,
        reference: &Reference,
        auth: RegistryAuth,
    ) -> Result<Session, String> {
        install_crypto_provider();
        let registry = reference.resolve_registry().to_string();
        let plain = self.plain_http(&registry);
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .user_agent(concat!("wasmpool/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot set up the registry client: {}", chain(&e)))?;
        Ok(Session {
            http,
            base: format!("{}://{registry}", if plain { "http" } else { "https" }),
            registry,
            repository: reference.repository().to_string(),
            plain,
            auth,
            basic: AtomicBool::new(false),
            bearer: Mutex::new(None),
        })
    }
}

/// What a manifest request returned.
pub(super) enum Manifest {
    Image(Box<OciImageManifest>),
    Index(OciImageIndex),
}

/// Requests to one repository of one registry, answering its auth challenges.
pub(super) struct Session {
    http: reqwest::Client,
    /// `https://host[:port]`, or `http://` for a plain-HTTP registry.
    base: String,
    registry: String,
    repository: String,
    plain: bool,
    auth: RegistryAuth,
    /// Whether the registry asked for Basic credentials.
    basic: AtomicBool,
    /// The bearer token a Bearer challenge was answered with.
    bearer: Mutex<Option<String>>,
}

impl Session {
    /// The manifest or index named by `reference` (a tag or a digest), and its
    /// digest — verified against the bytes when the reference or the registry names one.
    pub(super) async fn manifest(&self, reference: &str) -> Result<(Manifest, String), String> {
        let url = self.url("manifests", reference);
        let response = self.send(Method::GET, &url, &MANIFEST_MEDIA_TYPES).await?;
        let response = self.check(response, &url).await?;
        let header_digest = docker_digest(&response);
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_bounded(response, MAX_MANIFEST_BYTES, "manifest").await?;
        let digest = if reference.contains(':') {
            // By digest: the bytes must have it.
            verify(reference, &body)?;
            reference.to_string()
        } else {
            match header_digest {
                Some(named) => {
                    verify(&named, &body)?;
                    named
                }
                None => format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body))),
            }
        };
        Ok((parse_manifest(&body, content_type.as_deref())?, digest))
    }

    /// The digest `reference` resolves to now: a `HEAD` when the registry
    /// names it, else the manifest itself.
    pub(super) async fn manifest_digest(&self, reference: &str) -> Result<String, String> {
        let url = self.url("manifests", reference);
        let response = self.send(Method::HEAD, &url, &MANIFEST_MEDIA_TYPES).await?;
        if response.status().is_success() {
            if let Some(digest) = docker_digest(&response) {
                if is_digest(&digest) {
                    return Ok(digest);
                }
            }
        } else {
            self.check(response, &url).await?;
        }
        Ok(self.manifest(reference).await?.1)
    }

    /// The blob `digest`, its body still to be read (by the caller, bounded).
    pub(super) async fn blob(&self, digest: &str) -> Result<Response, String> {
        let url = self.url("blobs", digest);
        let response = self.send(Method::GET, &url, &[]).await?;
        self.check(response, &url).await
    }

    fn url(&self, kind: &str, reference: &str) -> String {
        format!("{}/v2/{}/{kind}/{reference}", self.base, self.repository)
    }

    /// Sends a request, answering one auth challenge (Bearer: a token from the
    /// realm; Basic: the configured credentials) and sending it again.
    /// A refused connection or a transient answer (429, 502, 503, 504) is
    /// tried again, up to [`MAX_TRIES`] times with a growing pause (the
    /// registry's `Retry-After`, when it says one, up to 30 s), all within the
    /// pull's own timeout.
    async fn send(&self, method: Method, url: &str, accept: &[&str]) -> Result<Response, String> {
        let mut answered = false;
        let mut tries = 0;
        loop {
            let mut request = self.http.request(method.clone(), url);
            if !accept.is_empty() {
                request = request.header(ACCEPT, accept.join(", "));
            }
            let bearer = self.bearer.lock().clone();
            request = match (&self.auth, bearer) {
                (_, Some(token)) => request.bearer_auth(token),
                (RegistryAuth::Bearer(token), None) => request.bearer_auth(token),
                (RegistryAuth::Basic { username, password }, None)
                    if self.basic.load(Ordering::Acquire) =>
                {
                    request.basic_auth(username, Some(password))
                }
                _ => request,
            };
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) if e.is_connect() && tries < MAX_TRIES => {
                    tries += 1;
                    tokio::time::sleep(backoff(tries, None)).await;
                    continue;
                }
                Err(e) => return Err(self.describe(&e)),
            };
            if is_transient(response.status()) && tries < MAX_TRIES {
                tries += 1;
                let wait = backoff(tries, retry_after(&response));
                log::debug!(
                    "{} answered {} for {url}: trying again in {wait:?}",
                    self.registry,
                    response.status()
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            if response.status() != StatusCode::UNAUTHORIZED || answered {
                return Ok(response);
            }
            answered = true;
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(Challenge::parse);
            match challenge {
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope,
                }) => {
                    let token = self.token(&realm, service, scope).await?;
                    *self.bearer.lock() = Some(token);
                }
                Some(Challenge::Basic) if matches!(self.auth, RegistryAuth::Basic { .. }) => {
                    self.basic.store(true, Ordering::Release);
                }
                _ => return Ok(response),
            }
        }
    }

    /// A bearer token from the challenge's realm, sending Basic credentials
    /// when configured (over TLS, or to a plain-HTTP registry's own realm).
    async fn token(
        &self,
        realm: &str,
        service: Option<String>,
        scope: Option<String>,
    ) -> Result<String, String> {
        let plain_realm = realm.starts_with("http://");
        if plain_realm && !self.plain {
            return Err(format!(
                "unauthorized (401): {} asks for a token over plain HTTP ({realm}); refused",
                self.registry
            ));
        }
        let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let mut query = vec![("scope", scope)];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let request = match &self.auth {
            // The OAuth 2 form of the token API: the refresh token for an access token.
            RegistryAuth::IdentityToken(refresh) => {
                query.extend([
                    ("grant_type", "refresh_token".to_string()),
                    ("refresh_token", refresh.clone()),
                    ("client_id", "wasmpool".to_string()),
                ]);
                self.http.post(realm).form(&query)
            }
            RegistryAuth::Basic { username, password } => self
                .http
                .get(realm)
                .query(&query)
                .basic_auth(username, Some(password)),
            _ => self.http.get(realm).query(&query),
        };
        let response = request.send().await.map_err(|e| self.describe(&e))?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body = read_prefix(response, MAX_ERROR_BYTES).await;
            return Err(format!(
                "unauthorized (401) at {}: the token server answered {status}: {}",
                self.registry,
                one_line(&String::from_utf8_lossy(&body))
            ));
        }
        let body = read_bounded(response, MAX_TOKEN_BYTES, "token response").await?;
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("the token response is not JSON: {e}"))?;
        value
            .get("token")
            .or_else(|| value.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .ok_or_else(|| "the token response has no token".to_string())
    }

    /// The response if it succeeded, else a one-line reason quoting the
    /// registry's error (its first 4 KiB).
    async fn check(&self, response: Response, url: &str) -> Result<Response, String> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = read_prefix(response, MAX_ERROR_BYTES).await;
        let messages = error_messages(&body);
        Err(match status.as_u16() {
            401 => format!("unauthorized (401): {url} needs credentials, or refused those given"),
            403 => format!("forbidden (403): {url} {messages}")
                .trim_end()
                .to_string(),
            404 => format!("not found (404): {messages} ({url})"),
            code => format!("HTTP {code}: {url} {messages}")
                .trim_end()
                .to_string(),
        })
    }

    /// One line for a failed request: what failed, to which registry.
    fn describe(&self, error: &reqwest::Error) -> String {
        let kind = if error.is_timeout() {
            "timed out talking to"
        } else if error.is_redirect() {
            "too many redirects (more than 5) at"
        } else if error.is_connect() {
            "cannot connect to"
        } else {
            "request failed at"
        };
        format!("{kind} {}: {}", self.registry, chain(error))
    }
}

/// What a `WWW-Authenticate` header asks for.
enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
    Other,
}

impl Challenge {
    /// The challenge to answer in a `WWW-Authenticate` header, read by
    /// `http-auth`'s RFC 7235 parser (several challenges may share a header:
    /// a Bearer one with a realm wins, then Basic).
    fn parse(header: &str) -> Challenge {
        let mut basic = false;
        for challenge in http_auth::ChallengeParser::new(header).flatten() {
            if challenge.scheme.eq_ignore_ascii_case("basic") {
                basic = true;
                continue;
            }
            if !challenge.scheme.eq_ignore_ascii_case("bearer") {
                continue;
            }
            let param = |name: &str| {
                challenge
                    .params
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map(|(_, value)| value.to_unescaped())
            };
            if let Some(realm) = param("realm") {
                return Challenge::Bearer {
                    realm,
                    service: param("service"),
                    scope: param("scope"),
                };
            }
        }
        if basic {
            Challenge::Basic
        } else {
            Challenge::Other
        }
    }
}

/// How many times one request is tried again after a transient failure.
const MAX_TRIES: u32 = 4;
/// The longest pause between two tries, whatever `Retry-After` says.
const MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(30);

/// Answers worth trying again: too many requests, and a gateway or service
/// that is down for a moment.
fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// `Retry-After` in seconds (the HTTP-date form is read as no hint).
fn retry_after(response: &Response) -> Option<std::time::Duration> {
    let text = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    text.trim().parse().ok().map(std::time::Duration::from_secs)
}

/// The pause before try `tries` (1, 2, …): the registry's hint, else 250 ms
/// doubling; never more than [`MAX_PAUSE`].
fn backoff(tries: u32, hint: Option<std::time::Duration>) -> std::time::Duration {
    hint.unwrap_or_else(|| std::time::Duration::from_millis(250) * 2u32.pow(tries - 1))
        .min(MAX_PAUSE)
}

/// Reads a whole body, refusing it past `limit` bytes — declared or read.
async fn read_bounded(mut response: Response, limit: u64, what: &str) -> Result<Bytes, String> {
    if let Some(declared) = response.content_length() {
        if declared > limit {
            return Err(format!(
                "{what} too large: {declared} bytes declared, the bound is {limit}"
            ));
        }
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading the {what} failed: {}", chain(&e)))?
    {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(format!("{what} too large: more than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The first `limit` bytes of a body (an error's, to quote it); the rest is never read.
async fn read_prefix(mut response: Response, limit: u64) -> Bytes {
    let mut body = BytesMut::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = limit as usize - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() as u64 >= limit {
            break;
        }
    }
    body.freeze()
}

/// The manifest or index in `body`, refusing what is not one, or lists too much.
fn parse_manifest(body: &[u8], content_type: Option<&str>) -> Result<Manifest, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    let version = value.get("schemaVersion").and_then(|v| v.as_u64());
    if version != Some(2) {
        return Err(format!(
            "not a WebAssembly artifact: unsupported manifest schema version {}",
            version.map_or("(none)".to_string(), |v| v.to_string())
        ));
    }
    let media_type = value
        .get("mediaType")
        .and_then(|v| v.as_str())
        .or(content_type)
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let is_index = media_type.ends_with("index.v1+json")
        || media_type.ends_with("manifest.list.v2+json")
        || (media_type.is_empty() && value.get("manifests").is_some());
    let is_manifest = media_type.ends_with("image.manifest.v1+json")
        || media_type.ends_with("distribution.manifest.v2+json")
        || (media_type.is_empty() && value.get("layers").is_some());
    if is_index {
        let entries = value
            .get("manifests")
            .and_then(|m| m.as_array())
            .map_or(0, Vec::len);
        if entries > MAX_INDEX_ENTRIES {
            return Err(format!(
                "not a WebAssembly artifact: the index lists {entries} manifests, at most {MAX_INDEX_ENTRIES} are read"
            ));
        }
        let index = serde_json::from_value(value).map_err(|e| format!("invalid index: {e}"))?;
        return Ok(Manifest::Index(index));
    }
    if is_manifest {
        let layers = value
            .get("layers")
            .and_then(|l| l.as_array())
            .map_or(0, Vec::len);
        if layers > MAX_LAYERS {
            return Err(format!(
                "not a WebAssembly artifact: the manifest lists {layers} layers, at most {MAX_LAYERS} are read"
            ));
        }
        let manifest =
            serde_json::from_value(value).map_err(|e| format!("invalid manifest: {e}"))?;
        return Ok(Manifest::Image(Box::new(manifest)));
    }
    Err(format!(
        "not a WebAssembly artifact: the manifest's media type is {media_type}; expected one of {}",
        MANIFEST_MEDIA_TYPES.join(", ")
    ))
}

/// Whether `text` is `sha256:…` or `sha512:…` of the right length.
fn is_digest(text: &str) -> bool {
    match text.split_once(':') {
        Some(("sha256", hex)) => hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        Some(("sha512", hex)) => hex.len() == 128 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        _ => false,
    }
}

/// Checks `body` against `digest`; an algorithm other than SHA-256/512 is refused.
fn verify(digest: &str, body: &[u8]) -> Result<(), String> {
    let mut hasher = LayerHasher::new(digest)?;
    hasher.update(body);
    let actual = hasher.finish();
    if actual != digest {
        return Err(mismatch(digest, &actual));
    }
    Ok(())
}

/// SHA-256 or SHA-512 of a body (a layer, as it streams in; a manifest), by its digest's algorithm.
pub(super) enum LayerHasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl LayerHasher {
    pub(super) fn new(digest: &str) -> std::result::Result<Self, String> {
        match digest.split_once(':') {
            Some(("sha256", _)) => Ok(LayerHasher::Sha256(sha2::Sha256::new())),
            Some(("sha512", _)) => Ok(LayerHasher::Sha512(sha2::Sha512::new())),
            _ => Err(format!("unsupported digest algorithm in '{digest}'")),
        }
    }

    pub(super) fn update(&mut self, bytes: &[u8]) {
        match self {
            LayerHasher::Sha256(h) => h.update(bytes),
            LayerHasher::Sha512(h) => h.update(bytes),
        }
    }

    pub(super) fn finish(self) -> String {
        match self {
            LayerHasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            LayerHasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

fn docker_digest(response: &Response) -> Option<String> {
    response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

/// The `message`s of an OCI error envelope, else the body's first line.
fn error_messages(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let messages: Vec<String> = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(|e| e.as_array())
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e.get("message").and_then(|m| m.as_str()))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if messages.is_empty() {
        one_line(&String::from_utf8_lossy(body))
    } else {
        one_line(&messages.join("; "))
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

/// An error and its sources, joined into one line.
pub(super) fn chain(error: &dyn std::error::Error) -> String {
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

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(super) fn mismatch(expected: &str, actual: &str) -> String {
    format!("digest mismatch: expected {expected}, got {actual}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_read_with_commas_in_their_scope() {
        let Challenge::Bearer {
            realm,
            service,
            scope,
        } = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        else {
            panic!("not a bearer challenge");
        };
        assert_eq!(realm, "https://auth.example/token");
        assert_eq!(service.as_deref(), Some("registry.example"));
        assert_eq!(scope.as_deref(), Some("repository:a/b:pull,push"));
        assert!(matches!(
            Challenge::parse("Basic realm=\"x\""),
            Challenge::Basic
        ));
        // Two challenges in one header, and an escaped quote in a value.
        let Challenge::Bearer { realm, .. } = Challenge::parse(
            r#"Basic realm="registry", Bearer realm="https://auth.example/t\"oken",service="r""#,
        ) else {
            panic!("the Bearer challenge after a Basic one was missed");
        };
        assert_eq!(realm, "https://auth.example/t\"oken");
        assert!(matches!(Challenge::parse("Negotiate"), Challenge::Other));
    }
}
