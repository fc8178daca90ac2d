//! What `push` and `query` share: finding the API to talk to, and talking to it.

use std::path::PathBuf;

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
        let http = reqwest::Client::builder()
            .user_agent(concat!("pipeline/", env!("CARGO_PKG_VERSION")))
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

    /// Sends a request and reads the JSON answer, with its status.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, Value), Error> {
        let response = request
            .send()
            .await
            .map_err(|e| client_error(format!("cannot reach the API at {}: {e}", self.base)))?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }
}

/// The error an API answer carries.
pub fn api_error(status: u16, body: &Value) -> Error {
    let message = body["message"].as_str().unwrap_or("no details");
    let message = format!("the API answered {status}: {message}");
    if (400..500).contains(&status) {
        Error::Rejected { message }
    } else {
        client_error(message)
    }
}
