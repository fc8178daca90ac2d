//! What `push` and `query` share: finding the API to talk to, and talking to it.

use std::path::PathBuf;

use pipeline_contract::ErrorBody;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Error;

/// `--url` / `--api-key`, shared by the API client commands.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Environment whose API to use.
    #[arg(short, long = "env", value_name = "ENV", default_value = "dev")]
    pub env: String,
    /// Base URL of the API [default: `pipeline local` on 127.0.0.1:8080].
    #[arg(long, env = "PIPELINE_API_URL", value_name = "URL")]
    pub url: Option<String>,
    /// API key [default: the key `pipeline local` keeps in .pipeline/<env>/api-key].
    #[arg(
        long,
        env = "PIPELINE_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// With `auth: cognito`: the client whose id and secret to use, of those
    /// `pipeline local` keeps in .pipeline/<env>/clients.json [default: the
    /// first there].
    #[arg(long, env = "PIPELINE_CLIENT", value_name = "NAME")]
    pub client: Option<String>,
}

/// With `auth: cognito`, a deployed API's client: `PIPELINE_CLIENT_ID`,
/// `PIPELINE_CLIENT_SECRET` and `PIPELINE_TOKEN_URL` (the app stack's
/// `TokenUrl` output), read from the environment only, so that the secret
/// never shows in a command line.
pub const CLIENT_ID: &str = "PIPELINE_CLIENT_ID";
pub const CLIENT_SECRET: &str = "PIPELINE_CLIENT_SECRET";
pub const TOKEN_URL: &str = "PIPELINE_TOKEN_URL";

/// How requests prove who sends them.
enum Credential {
    None,
    Key(String),
    /// `auth: iam`: each request signed with SigV4 for `execute-api` in
    /// `region`, with the AWS credentials of the environment (as the AWS
    /// CLI finds them).
    Iam {
        region: String,
    },
    /// Client credentials, exchanged for an access token at the first
    /// request (OAuth 2.0 client credentials, as Cognito's token endpoint
    /// takes them).
    Client {
        token_url: String,
        id: String,
        secret: String,
        token: tokio::sync::OnceCell<String>,
        /// With `metering_keys`: the client's API key, sent beside its token.
        key: Option<String>,
    },
}

/// A client of the pipeline's API.
pub struct Api {
    pub base: String,
    credential: Credential,
    pub http: reqwest::Client,
}

/// The client credentials to use: the environment's, else those
/// `pipeline local` keeps for `env` (the named client, or the first).
fn client_credentials(
    target: &Target,
    base: &str,
    token_url: Option<String>,
) -> Option<Credential> {
    let env = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let (Some(id), Some(secret)) = (env(CLIENT_ID), env(CLIENT_SECRET)) {
        return Some(Credential::Client {
            token_url: env(TOKEN_URL)
                .or(token_url)
                .unwrap_or_else(|| format!("{base}/oauth2/token")),
            id,
            secret,
            token: tokio::sync::OnceCell::new(),
            key: target.api_key.clone().filter(|k| !k.is_empty()),
        });
    }
    let path = PathBuf::from(".pipeline")
        .join(&target.env)
        .join(crate::local::tokens::CLIENTS_FILE);
    let file: crate::local::tokens::ClientsFile =
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let client = match &target.client {
        Some(name) => file.clients.get(name)?,
        None => file.clients.values().next()?,
    };
    Some(Credential::Client {
        token_url: file.token_url.clone(),
        id: client.client_id.clone(),
        secret: client.client_secret.clone(),
        token: tokio::sync::OnceCell::new(),
        key: target
            .api_key
            .clone()
            .filter(|k| !k.is_empty())
            .or_else(|| client.api_key.clone()),
    })
}

pub fn client_error(message: impl Into<String>) -> Error {
    Error::Client {
        message: message.into(),
    }
}

impl Api {
    pub fn new(target: &Target) -> Result<Api, Error> {
        Api::with_token_url(target, None)
    }

    /// [`Api::new`], with the token endpoint a deploy's outputs name, for
    /// when `PIPELINE_TOKEN_URL` does not.
    pub fn with_token_url(target: &Target, token_url: Option<String>) -> Result<Api, Error> {
        let base = target
            .url
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_string());
        let base = base.trim_end_matches('/').to_string();
        let local_key = || {
            let path = PathBuf::from(".pipeline").join(&target.env).join("api-key");
            std::fs::read_to_string(&path)
                .ok()
                .map(|k| Credential::Key(k.trim().to_string()))
        };
        // Client credentials first: with metering keys, `--api-key` is the
        // key sent beside the token.
        let credential = match client_credentials(target, &base, token_url) {
            Some(client) => client,
            None => match target.api_key.as_ref().filter(|k| !k.is_empty()) {
                Some(k) => Credential::Key(k.clone()),
                None => local_key().unwrap_or(Credential::None),
            },
        };
        let http = crate::http::builder()
            .build()
            .map_err(|e| client_error(format!("cannot build an HTTP client: {e}")))?;
        Ok(Api {
            base,
            credential,
            http,
        })
    }

    /// Signs every request with SigV4 when the environment's API takes
    /// IAM authorization and nothing else was given.
    pub fn with_auth(mut self, auth: crate::spec::model::AuthMode, region: &str) -> Api {
        if auth == crate::spec::model::AuthMode::Iam && matches!(self.credential, Credential::None)
        {
            self.credential = Credential::Iam {
                region: region.to_string(),
            };
        }
        self
    }

    /// `request` signed with SigV4 for API Gateway (`execute-api`).
    async fn signed(
        &self,
        request: reqwest::Request,
        region: &str,
    ) -> Result<reqwest::Request, Error> {
        use aws_credential_types::provider::ProvideCredentials;
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let failed = |e: &dyn std::fmt::Display| {
            client_error(format!("cannot sign the request with SigV4: {e}"))
        };
        let config = crate::aws::config_loader()
            .region(aws_config::Region::new(region.to_string()))
            .load()
            .await;
        let credentials = config
            .credentials_provider()
            .ok_or_else(|| failed(&"no AWS credentials"))?
            .provide_credentials()
            .await
            .map_err(|e| failed(&e))?;
        let identity = credentials.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("execute-api")
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| failed(&e))?
            .into();
        let body = request
            .body()
            .and_then(|b| b.as_bytes())
            .unwrap_or_default()
            .to_vec();
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let signable = SignableRequest::new(
            request.method().as_str(),
            request.url().as_str(),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| failed(&e))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| failed(&e))?
            .into_parts();
        let mut signed: http::Request<Vec<u8>> = http::Request::builder()
            .method(request.method().as_str())
            .uri(request.url().as_str())
            .body(body)
            .map_err(|e| failed(&e))?;
        *signed.headers_mut() = request.headers().clone();
        instructions.apply_to_request_http1x(&mut signed);
        reqwest::Request::try_from(signed).map_err(|e| failed(&e))
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Credential::Key(key) = &self.credential {
            request = request.header("x-api-key", key);
        }
        request
    }

    /// An access token for the client credentials, from the token endpoint.
    async fn token(&self, token_url: &str, id: &str, secret: &str) -> Result<String, Error> {
        #[derive(serde::Deserialize)]
        struct Token {
            access_token: String,
        }
        let response = self
            .http
            .post(token_url)
            .basic_auth(id, Some(secret))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body("grant_type=client_credentials")
            .send()
            .await
            .map_err(|e| {
                client_error(format!("cannot reach the token endpoint {token_url}: {e}"))
            })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(client_error(format!(
                "the token endpoint {token_url} refused client `{id}` ({status}): {body}"
            )));
        }
        serde_json::from_str::<Token>(&body)
            .map(|t| t.access_token)
            .map_err(|e| {
                client_error(format!(
                    "the token endpoint {token_url} answered no token: {e}"
                ))
            })
    }

    /// Sends a request: the answer, whatever its status.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, Error> {
        let request = match &self.credential {
            Credential::Client {
                token_url,
                id,
                secret,
                token,
                key,
            } => {
                let token = token
                    .get_or_try_init(|| self.token(token_url, id, secret))
                    .await?;
                match key {
                    Some(key) => request.bearer_auth(token).header("x-api-key", key),
                    None => request.bearer_auth(token),
                }
            }
            Credential::Iam { region } => {
                let built = request
                    .build()
                    .map_err(|e| client_error(format!("cannot build the request: {e}")))?;
                let signed = self.signed(built, region).await?;
                return self.answer(self.http.execute(signed).await).await;
            }
            _ => request,
        };
        self.answer(request.send().await).await
    }

    /// The answer to a sent request, or why it was not answered.
    async fn answer(&self, sent: reqwest::Result<reqwest::Response>) -> Result<Answer, Error> {
        let response =
            sent.map_err(|e| client_error(format!("cannot reach the API at {}: {e}", self.base)))?;
        Answer::of(response).await
    }

    /// Sends a request and reads the answer's body as `T` when its status
    /// is `expected`; any other answer is the error it carries.
    pub async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        expected: u16,
    ) -> Result<T, Error> {
        let answer = self.send(request).await?;
        if answer.status != expected {
            return Err(answer.error());
        }
        answer.read()
    }
}

/// An answer of the API, or of storage for an upload.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: bytes::Bytes,
}

impl Answer {
    pub async fn of(response: reqwest::Response) -> Result<Answer, Error> {
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| client_error(format!("the answer ({status}) was cut short: {e}")))?;
        Ok(Answer { status, body })
    }

    /// The body as the contract's `T`.
    pub fn read<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            client_error(format!(
                "the API answered {} with a body this client cannot read ({e}): {}",
                self.status,
                self.text()
            ))
        })
    }

    /// The body as text, cut to a line's length.
    pub fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        match text.char_indices().nth(200) {
            Some((end, _)) => format!("{}…", &text[..end]),
            None => text.to_string(),
        }
    }

    /// What the answer says went wrong: the API's `message`, S3's XML
    /// `Message`, or the text.
    pub fn message(&self) -> String {
        if let Ok(body) = serde_json::from_slice::<ErrorBody>(&self.body) {
            return body.message;
        }
        if let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&self.body)
            && let Some(Value::String(message)) = body.get("message")
        {
            // API Gateway's own answers, such as `{"message": "Forbidden"}`.
            return message.clone();
        }
        let text = String::from_utf8_lossy(&self.body);
        if let Some((_, rest)) = text.split_once("<Message>")
            && let Some((message, _)) = rest.split_once("</Message>")
        {
            return message.to_string();
        }
        match self.text() {
            t if t.is_empty() => "no details".to_string(),
            t => t,
        }
    }

    /// The error the answer carries: refused input for a 4xx, a client
    /// error otherwise.
    pub fn error(&self) -> Error {
        let message = format!("the API answered {}: {}", self.status, self.message());
        if (400..500).contains(&self.status) {
            Error::Rejected { message }
        } else {
            client_error(message)
        }
    }
}
