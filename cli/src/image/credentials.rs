//! Registry credentials: the environment's, Docker's config and its credential helpers.

use super::*;

/// A user name and password for a registry.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ****)", self.username)
    }
}

/// The credentials the Docker config file (`$DOCKER_CONFIG/config.json`,
/// else `~/.docker/config.json`) gives for a registry, as Docker reads it:
/// the registry's credential helper (`credHelpers`), else the default one
/// (`credsStore`), else the file's own `auths`.
pub fn keychain(registry: &str) -> Option<Credentials> {
    use base64::Engine;
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))?;
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let config: Value = serde_json::from_str(&text).ok()?;
    // Docker Hub's credentials are filed under its old index address.
    let matches = |key: &str| {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        host == registry || (registry == "registry-1.docker.io" && host == "index.docker.io")
    };
    let helper = config["credHelpers"]
        .as_object()
        .and_then(|helpers| helpers.iter().find(|(key, _)| matches(key)))
        .and_then(|(_, h)| h.as_str())
        .or(config["credsStore"].as_str());
    if let Some(helper) = helper
        && let Some(credentials) = credential_helper(helper, registry)
    {
        return Some(credentials);
    }
    let entry = config["auths"]
        .as_object()?
        .iter()
        .find_map(|(key, v)| matches(key).then_some(v))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry["auth"].as_str()?)
        .ok()?;
    let (username, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    })
}

/// Asks `docker-credential-<helper> get` for a registry's credentials (the
/// protocol of Docker's credential helpers: the server on stdin, JSON out).
fn credential_helper(helper: &str, registry: &str) -> Option<Credentials> {
    use std::io::Write;
    let server = if registry == "registry-1.docker.io" {
        "https://index.docker.io/v1/"
    } else {
        registry
    };
    let mut child = std::process::Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(server.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let answer: Value = serde_json::from_slice(&out.stdout).ok()?;
    let username = answer["Username"].as_str()?;
    // `<token>` marks an identity token, which only Docker's own login flow uses.
    if username == "<token>" {
        return None;
    }
    Some(Credentials {
        username: username.to_string(),
        password: answer["Secret"].as_str()?.to_string(),
    })
}
