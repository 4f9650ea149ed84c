//! Registry credentials: the settings' `registry_auth`, else docker's `config.json`.

use crate::settings::RegistryAuth;
use std::path::PathBuf;

/// A registry host as configured or written in docker's config.json, without
/// scheme or path: `https://index.docker.io/v1/` → `index.docker.io`.
pub(super) fn registry_key(host: &str) -> String {
    let host = host
        .strip_prefix("https://")
        .or_else(|| host.strip_prefix("http://"))
        .unwrap_or(host);
    host.split('/').next().unwrap_or(host).to_ascii_lowercase()
}

/// The host of `host:port` (or `[v6]:port`).
pub(super) fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry
            .split(']')
            .next()
            .map_or(registry, |h| &registry[..h.len() + 1]);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// Credentials for `registry` from docker's `config.json` (`$DOCKER_CONFIG`,
/// else `~/.docker`), as docker finds them: the registry's credential helper
/// (`credHelpers`), else the credential store (`credsStore`) — each the
/// program `docker-credential-NAME`, asked with `get` — else its `auths` entry
/// (`auth`, or `username` and `password`, or `registrytoken`).
pub(super) fn docker_config_auth(registry: &str) -> Option<RegistryAuth> {
    let folder = match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".docker"),
    };
    let text = std::fs::read_to_string(folder.join("config.json")).ok()?;
    let config: serde_json::Value = match serde_json::from_str(&text) {
        Ok(config) => config,
        Err(e) => {
            log::warn!("ignoring {}: {e}", folder.join("config.json").display());
            return None;
        }
    };
    let wanted = registry_key(registry);
    let helper = config
        .get("credHelpers")
        .and_then(|helpers| helpers.as_object())
        .and_then(|helpers| helpers.iter().find(|(key, _)| registry_key(key) == wanted))
        .map(|(key, name)| (key.clone(), name))
        .or_else(|| {
            config
                .get("credsStore")
                .map(|name| (server_address(&wanted), name))
        })
        .and_then(|(server, name)| Some((server, name.as_str()?.to_string())))
        .filter(|(_, name)| !name.is_empty());
    if let Some((server, name)) = helper {
        if let Some(auth) = from_helper(&name, &server) {
            return Some(auth);
        }
    }
    let entry = config
        .get("auths")?
        .as_object()?
        .iter()
        .find(|(key, _)| registry_key(key) == wanted)?
        .1;
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
    };
    // `docker login` to an OAuth registry leaves a refresh token (and a
    // placeholder `auth`): the token is what to use.
    if let Some(token) = field("identitytoken") {
        return Some(RegistryAuth::IdentityToken(token.to_string()));
    }
    if let Some(encoded) = field("auth") {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (username, password) = text.split_once(':')?;
        return Some(RegistryAuth::Basic {
            username: username.to_string(),
            password: password.to_string(),
        });
    }
    if let (Some(username), Some(password)) = (field("username"), field("password")) {
        return Some(RegistryAuth::Basic {
            username: username.to_string(),
            password: password.to_string(),
        });
    }
    field("registrytoken").map(|token| RegistryAuth::Bearer(token.to_string()))
}

/// The server address docker stores a registry's credentials under (Docker
/// Hub's is its v1 URL).
fn server_address(key: &str) -> String {
    match key {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            "https://index.docker.io/v1/".into()
        }
        other => other.to_string(),
    }
}

/// How long a credential helper may take to answer.
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The most bytes of a helper's answer read.
const HELPER_OUTPUT: u64 = 64 << 10;

/// Asks `docker-credential-NAME get` for `server`'s credentials, as docker
/// does (the server address on its stdin, JSON `{"Username", "Secret"}` on
/// its stdout); bounded in time and bytes. `None` when it has none or fails;
/// a `<token>` user name means the secret is an identity token (an OAuth 2
/// refresh token, exchanged at the registry's token realm).
fn from_helper(name: &str, server: &str) -> Option<RegistryAuth> {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let program = format!("docker-credential-{name}");
    let mut child = match Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            log::warn!("cannot run the credential helper {program}: {e}");
            return None;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let mut stdout = child.stdout.take()?;
    let (sent, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let read = (&mut stdout).take(HELPER_OUTPUT).read_to_string(&mut text);
        let _ = sent.send(read.map(|_| text));
    });
    let text = match answer.recv_timeout(HELPER_TIMEOUT) {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => {
            log::warn!("{program}: {e}");
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        Err(_) => {
            log::warn!("{program} did not answer within {HELPER_TIMEOUT:?}");
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
    };
    let status = child.wait().ok()?;
    if !status.success() {
        log::debug!("{program} has no credentials for {server}");
        return None;
    }
    let answer: serde_json::Value = serde_json::from_str(&text).ok()?;
    let field = |name: &str| answer.get(name).and_then(|v| v.as_str()).unwrap_or("");
    let (username, secret) = (field("Username"), field("Secret"));
    if username == "<token>" {
        return (!secret.is_empty()).then(|| RegistryAuth::IdentityToken(secret.to_string()));
    }
    (!secret.is_empty()).then(|| RegistryAuth::Basic {
        username: username.to_string(),
        password: secret.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_keys_drop_scheme_and_path() {
        assert_eq!(
            registry_key("https://index.docker.io/v1/"),
            "index.docker.io"
        );
        assert_eq!(registry_key("localhost:5000"), "localhost:5000");
        assert_eq!(host_of("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:5000"), "[::1]");
    }
}
