//! `pipeline local`'s stand-in for the environment's Cognito user pool,
//! with `auth: cognito`: the spec's clients with secrets, a token endpoint
//! (`POST /oauth2/token`, client credentials, as Cognito's), and access
//! tokens that carry the clients' scopes, signed with a key of this data
//! directory. The gateway's check (a valid, unexpired token with one of
//! the operation's scopes, else 401) and the handlers' (the batch's own
//! dataset, else 403 or 404) then run as in AWS.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use pipeline_contract::Scope;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::local_error;
use crate::Error;

/// How long a token is valid, as the app stack's clients' tokens.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The file the clients' ids and secrets are kept in, in the data
/// directory and, for `push` and `query`, `.pipeline/<env>/`.
pub const CLIENTS_FILE: &str = "clients.json";

/// One client: its id and secret, and the scopes the spec gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalClient {
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    /// With `metering_keys`: the client's API key, sent beside its token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// What the clients file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientsFile {
    /// The key tokens are signed with, hex.
    #[serde(default)]
    pub signing_key: String,
    /// Where `push` and `query` get tokens.
    #[serde(default)]
    pub token_url: String,
    pub clients: BTreeMap<String, LocalClient>,
}

/// Issues and checks the local access tokens.
#[derive(Clone)]
pub struct Issuer {
    key: Vec<u8>,
    clients: BTreeMap<String, LocalClient>,
}

/// The claims of a local access token, as Cognito's access tokens name them.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    client_id: String,
    scope: String,
    token_use: String,
    exp: u64,
}

/// Why the token endpoint refused, as OAuth 2.0 names it (RFC 6749, 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    InvalidClient,
    InvalidScope,
    UnsupportedGrantType,
}

impl TokenError {
    pub fn code(self) -> &'static str {
        match self {
            TokenError::InvalidClient => "invalid_client",
            TokenError::InvalidScope => "invalid_scope",
            TokenError::UnsupportedGrantType => "unsupported_grant_type",
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random_hex(bytes: usize) -> String {
    (0..bytes.div_ceil(16))
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect::<String>()
        .chars()
        .take(bytes * 2)
        .collect()
}

impl Issuer {
    /// The issuer of this data directory: its key and the clients' secrets
    /// are kept across restarts, in a file only its owner may read (0600);
    /// the scopes are the spec's, as each start reads them. `push` and
    /// `query` read a copy in `.pipeline/<env>/`.
    pub async fn load(
        data_dir: &Path,
        spec_clients: &BTreeMap<String, Vec<String>>,
        metering_keys: bool,
        token_url: &str,
    ) -> Result<Issuer, Error> {
        let path = data_dir.join(CLIENTS_FILE);
        let mut file: ClientsFile = tokio::fs::read(&path)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if file.signing_key.len() != 64 {
            file.signing_key = random_hex(32);
        }
        file.token_url = token_url.to_string();
        let known = std::mem::take(&mut file.clients);
        for (name, scopes) in spec_clients {
            let (client_id, client_secret) = match known.get(name) {
                Some(c) => (c.client_id.clone(), c.client_secret.clone()),
                None => (random_hex(13), random_hex(32)),
            };
            let api_key = metering_keys.then(|| {
                known
                    .get(name)
                    .and_then(|c| c.api_key.clone())
                    .unwrap_or_else(|| format!("local-{}", random_hex(16)))
            });
            file.clients.insert(
                name.clone(),
                LocalClient {
                    client_id,
                    client_secret,
                    scopes: scopes.clone(),
                    api_key,
                },
            );
        }
        write_private(&path, &file).await?;
        let key = (0..file.signing_key.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&file.signing_key[i..i + 2], 16).ok())
            .collect();
        Ok(Issuer {
            key,
            clients: file.clients,
        })
    }

    fn sign(&self, text: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(text.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// A token for the client whose id and secret these are, with the
    /// scopes asked for (all of the client's when none are).
    pub fn token(
        &self,
        client_id: &str,
        client_secret: &str,
        grant_type: &str,
        asked: Option<&str>,
    ) -> Result<String, TokenError> {
        use subtle::ConstantTimeEq;
        if grant_type != "client_credentials" {
            return Err(TokenError::UnsupportedGrantType);
        }
        let client = self
            .clients
            .values()
            .find(|c| {
                c.client_id == client_id
                    && bool::from(c.client_secret.as_bytes().ct_eq(client_secret.as_bytes()))
            })
            .ok_or(TokenError::InvalidClient)?;
        let allowed: Vec<String> = client
            .scopes
            .iter()
            .filter_map(|s| s.parse::<Scope>().ok())
            .map(|s| s.qualified())
            .collect();
        let granted = match asked {
            None => allowed,
            Some(asked) => {
                let asked: Vec<String> = asked.split_whitespace().map(str::to_string).collect();
                if asked.iter().any(|s| !allowed.contains(s)) {
                    return Err(TokenError::InvalidScope);
                }
                asked
            }
        };
        let claims = Claims {
            client_id: client.client_id.clone(),
            scope: granted.join(" "),
            token_use: "access".into(),
            exp: now() + TOKEN_LIFETIME.as_secs(),
        };
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signed = format!("{header}.{body}");
        let signature = URL_SAFE_NO_PAD.encode(self.sign(&signed));
        Ok(format!("{signed}.{signature}"))
    }

    /// Whether `key` is one of the clients' metering keys, or none is
    /// needed (`metering_keys` off).
    pub fn key_passes(&self, key: Option<&[u8]>) -> bool {
        use subtle::ConstantTimeEq;
        let keys: Vec<&String> = self
            .clients
            .values()
            .filter_map(|c| c.api_key.as_ref())
            .collect();
        keys.is_empty()
            || key.is_some_and(|k| {
                keys.iter()
                    .any(|expected| bool::from(expected.as_bytes().ct_eq(k)))
            })
    }

    /// The scopes of a valid, unexpired token of this issuer.
    pub fn verify(&self, token: &str) -> Option<Vec<Scope>> {
        use subtle::ConstantTimeEq;
        let (signed, signature) = token.rsplit_once('.')?;
        let given = URL_SAFE_NO_PAD.decode(signature).ok()?;
        if !bool::from(self.sign(signed).ct_eq(&given)) {
            return None;
        }
        let (_, body) = signed.split_once('.')?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        (claims.token_use == "access" && claims.exp > now())
            .then(|| Scope::from_claim(&claims.scope))
    }
}

/// Writes `file` as JSON at `path`, readable by its owner only.
pub async fn write_private(path: &Path, file: &ClientsFile) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let failed = |e| local_error(&format!("cannot write {}", path.display()), e);
    let text = serde_json::to_vec_pretty(file).map_err(|e| failed(std::io::Error::other(e)))?;
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(failed)?;
    }
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(failed)?;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .await
        .map_err(failed)?;
    // A tokio file hands writes to a background thread: the write is done
    // once flushed, and only then may the file's path be given out.
    tokio::io::AsyncWriteExt::write_all(&mut out, &text)
        .await
        .map_err(failed)?;
    tokio::io::AsyncWriteExt::flush(&mut out)
        .await
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_carry_the_clients_scopes_and_nothing_else_passes() {
        let dir = tempfile::tempdir().expect("dir");
        let clients = BTreeMap::from([
            ("reader".to_string(), vec!["events.read".to_string()]),
            (
                "writer".to_string(),
                vec!["events.write".to_string(), "events.read".to_string()],
            ),
        ]);
        let issuer = Issuer::load(dir.path(), &clients, false, "http://x/oauth2/token")
            .await
            .expect("issuer");
        let reader = issuer.clients["reader"].clone();
        let token = issuer
            .token(
                &reader.client_id,
                &reader.client_secret,
                "client_credentials",
                None,
            )
            .expect("token");
        assert_eq!(
            issuer.verify(&token),
            Some(vec![Scope::new("events", pipeline_contract::Action::Read)])
        );
        // Tampered, wrong secret, a scope it may not have, another grant.
        let forged = format!("{}x", &token[..token.len() - 1]);
        assert_eq!(issuer.verify(&forged), None);
        assert_eq!(
            issuer.token(&reader.client_id, "nope", "client_credentials", None),
            Err(TokenError::InvalidClient)
        );
        assert_eq!(
            issuer.token(
                &reader.client_id,
                &reader.client_secret,
                "client_credentials",
                Some("pipeline/events.write")
            ),
            Err(TokenError::InvalidScope)
        );
        assert_eq!(
            issuer.token(&reader.client_id, &reader.client_secret, "password", None),
            Err(TokenError::UnsupportedGrantType)
        );
        // Kept across restarts: the same secrets and key.
        let again = Issuer::load(dir.path(), &clients, false, "http://x/oauth2/token")
            .await
            .expect("issuer");
        assert_eq!(again.clients, issuer.clients);
        assert!(again.verify(&token).is_some());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(CLIENTS_FILE))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
