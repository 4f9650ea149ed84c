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
/// else `~/.docker`): its `auths` entries (`auth`, or `username` and
/// `password`, or `registrytoken`). Credential helpers are not consulted.
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
