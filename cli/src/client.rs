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
}

/// A client of the pipeline's API.
pub struct Api {
    pub base: String,
    key: Option<String>,
    pub http: reqwest::Client,
}

pub fn client_error(message: impl Into<String>) -> Error {
    Error::Client {
        message: message.into(),
    }
}

impl Api {
    pub fn new(target: &Target) -> Result<Api, Error> {
        let base = target
            .url
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_string());
        let key = match &target.api_key {
            Some(k) => Some(k.clone()),
            None => {
                let path = PathBuf::from(".pipeline").join(&target.env).join("api-key");
                std::fs::read_to_string(&path)
                    .ok()
                    .map(|k| k.trim().to_string())
            }
        };
        let http = crate::http::builder()
            .build()
            .map_err(|e| client_error(format!("cannot build an HTTP client: {e}")))?;
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            key,
            http,
        })
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            request = request.header("x-api-key", key);
        }
        request
    }

    /// Sends a request: the answer, whatever its status.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, Error> {
        let response = request
            .send()
            .await
            .map_err(|e| client_error(format!("cannot reach the API at {}: {e}", self.base)))?;
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
