//! A client of the OCI distribution API: manifests and blobs pulled and
//! pushed over HTTP, with the registry's own authentication (HTTP Basic, or
//! bearer tokens from the registry's token service).

use std::path::Path;

use futures_util::StreamExt;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::{Credentials, ImageError, media};

/// One repository of one registry.
pub struct Registry {
    http: reqwest::Client,
    /// Host and port, as in image references.
    pub registry: String,
    base: String,
    pub repository: String,
    credentials: Option<Credentials>,
    /// Whether the token asked for covers pushes.
    push: bool,
    /// The `Authorization` header value, once a challenge was answered.
    auth: Mutex<Option<String>>,
}

/// What a manifest request answered.
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

impl Registry {
    pub fn new(
        http: reqwest::Client,
        registry: &str,
        repository: &str,
        credentials: Option<Credentials>,
        push: bool,
    ) -> Registry {
        Registry {
            http,
            registry: registry.to_string(),
            base: super::reference::base_url(registry),
            repository: repository.to_string(),
            credentials,
            push,
            auth: Mutex::new(None),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repository)
    }

    fn action(&self) -> &'static str {
        if self.push { "push" } else { "pull" }
    }

    /// Sends a request built by `build`; a 401 is answered with the
    /// registry's challenge once and the request sent again.
    async fn send(&self, build: impl Fn() -> RequestBuilder) -> Result<Response, ImageError> {
        let response = self.send_once(&build).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Some(challenge) = challenge else {
            return Err(self.denied(response).await);
        };
        let header = self.answer(&challenge).await?;
        *self.auth.lock().await = Some(header);
        let response = self.send_once(&build).await?;
        if matches!(
            response.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Err(self.denied(response).await);
        }
        Ok(response)
    }

    async fn send_once(&self, build: &impl Fn() -> RequestBuilder) -> Result<Response, ImageError> {
        let mut request = build();
        if let Some(header) = self.auth.lock().await.as_ref() {
            request = request.header(reqwest::header::AUTHORIZATION, header);
        }
        request.send().await.map_err(|e| self.unreachable(&e))
    }

    fn unreachable(&self, e: &reqwest::Error) -> ImageError {
        ImageError::Unreachable {
            registry: self.registry.clone(),
            reason: crate::chain::message_chain(e),
        }
    }

    async fn denied(&self, response: Response) -> ImageError {
        let status = response.status();
        // Answers to HEAD requests carry no body to explain them.
        let text = match error_text(response).await {
            t if !t.is_empty() => t,
            _ if status == StatusCode::UNAUTHORIZED => "the credentials were not accepted".into(),
            _ => "access denied".into(),
        };
        ImageError::Denied {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            action: self.action(),
            detail: format!("HTTP {}: {text}", status.as_u16()),
            with_credentials: self.credentials.is_some(),
        }
    }

    /// The `Authorization` header that answers a `WWW-Authenticate` challenge.
    async fn answer(&self, challenge: &str) -> Result<String, ImageError> {
        let (scheme, params) = parse_challenge(challenge);
        let basic = |c: &Credentials| {
            use base64::Engine;
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.username, c.password));
            format!("Basic {token}")
        };
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => match &self.credentials {
                Some(c) => Ok(basic(c)),
                None => Err(ImageError::Denied {
                    registry: self.registry.clone(),
                    repository: self.repository.clone(),
                    action: self.action(),
                    detail: "the registry asks for credentials and none were found".into(),
                    with_credentials: false,
                }),
            },
            "bearer" => {
                let realm = params
                    .iter()
                    .find(|(k, _)| k == "realm")
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| {
                        self.protocol(format!("a bearer challenge without a realm: {challenge}"))
                    })?;
                let mut query: Vec<(&str, String)> = Vec::new();
                if let Some((_, service)) = params.iter().find(|(k, _)| k == "service") {
                    query.push(("service", service.clone()));
                }
                let actions = if self.push { "pull,push" } else { "pull" };
                query.push(("scope", format!("repository:{}:{actions}", self.repository)));
                let mut request = self.http.get(&realm).query(&query);
                if let Some(c) = &self.credentials {
                    request = request.basic_auth(&c.username, Some(&c.password));
                }
                let response = request.send().await.map_err(|e| self.unreachable(&e))?;
                if !response.status().is_success() {
                    return Err(self.denied(response).await);
                }
                let body: serde_json::Value = response.json().await.map_err(|e| {
                    self.protocol(format!("the token service answered no JSON: {e}"))
                })?;
                let token = body["token"]
                    .as_str()
                    .or(body["access_token"].as_str())
                    .ok_or_else(|| self.protocol("the token service answered no token".into()))?;
                Ok(format!("Bearer {token}"))
            }
            other => Err(self.protocol(format!("unknown authentication scheme `{other}`"))),
        }
    }

    fn protocol(&self, message: String) -> ImageError {
        ImageError::Protocol {
            registry: self.registry.clone(),
            message,
        }
    }

    async fn unexpected(&self, what: &str, response: Response) -> ImageError {
        let status = response.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return self.denied(response).await;
        }
        self.protocol(format!(
            "{what}: HTTP {}: {}",
            status.as_u16(),
            match error_text(response).await {
                t if t.is_empty() => status
                    .canonical_reason()
                    .unwrap_or("no details")
                    .to_string(),
                t => t,
            }
        ))
    }

    /// A manifest or index by tag or digest; `None` when there is none.
    pub async fn manifest(&self, reference: &str) -> Result<Option<Manifest>, ImageError> {
        let url = self.url(&format!("manifests/{reference}"));
        let response = self
            .send(|| {
                self.http
                    .get(&url)
                    .header(reqwest::header::ACCEPT, media::ACCEPT_MANIFESTS)
            })
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(self
                .unexpected(&format!("GET manifest {reference}"), response)
                .await);
        }
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.unreachable(&e))?
            .to_vec();
        let digest = super::digest_of(&bytes);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(self.protocol(format!("manifest {reference} came back as {digest}")));
        }
        // Older manifests name their type only in the body.
        let media_type = if media_type.is_empty() || media_type == "application/json" {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["mediaType"].as_str().map(str::to_string))
                .unwrap_or_default()
        } else {
            media_type
        };
        Ok(Some(Manifest {
            bytes,
            media_type,
            digest,
        }))
    }

    /// Whether the registry has a manifest of this digest.
    pub async fn has_manifest(&self, digest: &str) -> Result<bool, ImageError> {
        let url = self.url(&format!("manifests/{digest}"));
        let response = self
            .send(|| {
                self.http
                    .head(&url)
                    .header(reqwest::header::ACCEPT, media::ACCEPT_MANIFESTS)
            })
            .await?;
        self.exists(&format!("HEAD manifest {digest}"), response)
            .await
    }

    /// Whether the registry has a blob.
    pub async fn has_blob(&self, digest: &str) -> Result<bool, ImageError> {
        let url = self.url(&format!("blobs/{digest}"));
        let response = self.send(|| self.http.head(&url)).await?;
        self.exists(&format!("HEAD blob {digest}"), response).await
    }

    async fn exists(&self, what: &str, response: Response) -> Result<bool, ImageError> {
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.unexpected(what, response).await),
        }
    }

    /// Downloads a blob to `path`, checking its digest on the way.
    pub async fn download_blob(&self, digest: &str, path: &Path) -> Result<(), ImageError> {
        let url = self.url(&format!("blobs/{digest}"));
        let response = self.send(|| self.http.get(&url)).await?;
        if !response.status().is_success() {
            return Err(self
                .unexpected(&format!("GET blob {digest}"), response)
                .await);
        }
        let io = |e: std::io::Error| ImageError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let partial = path.with_extension("partial");
        let mut file = tokio::fs::File::create(&partial).await.map_err(io)?;
        let mut hash = Sha256::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.unreachable(&e))?;
            hash.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        drop(file);
        let got = format!("sha256:{}", pipeline_shared::store::hex(&hash.finalize()));
        if got != digest {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(self.protocol(format!("blob {digest} came back as {got}")));
        }
        tokio::fs::rename(&partial, path).await.map_err(io)
    }

    /// Uploads a blob from a file: an upload session, its bytes in one
    /// PATCH, and a PUT naming the digest (the steps every registry,
    /// ECR included, takes).
    pub async fn upload_blob(
        &self,
        digest: &str,
        path: &Path,
        size: u64,
    ) -> Result<(), ImageError> {
        let start = self.url("blobs/uploads/");
        let response = self
            .send(|| {
                self.http
                    .post(&start)
                    .header(reqwest::header::CONTENT_LENGTH, 0)
            })
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self
                .unexpected(&format!("start upload of {digest}"), response)
                .await);
        }
        let location = self.location(&response)?;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ImageError::Io {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let mut request = self
            .http
            .request(Method::PATCH, &location)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body);
        if let Some(header) = self.auth.lock().await.as_ref() {
            request = request.header(reqwest::header::AUTHORIZATION, header);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self
                .unexpected(&format!("upload of {digest}"), response)
                .await);
        }
        let location = self.location(&response)?;
        let separator = if location.contains('?') { '&' } else { '?' };
        let finish = format!("{location}{separator}digest={digest}");
        let response = self
            .send(|| {
                self.http
                    .put(&finish)
                    .header(reqwest::header::CONTENT_LENGTH, 0)
            })
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self
                .unexpected(&format!("finish upload of {digest}"), response)
                .await);
        }
        Ok(())
    }

    fn location(&self, response: &Response) -> Result<String, ImageError> {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.protocol("an upload answer without a Location".into()))?;
        Ok(
            if location.starts_with("http://") || location.starts_with("https://") {
                location.to_string()
            } else {
                format!("{}{location}", self.base)
            },
        )
    }

    /// Puts a manifest under a tag; the digest the registry reports.
    pub async fn put_manifest(
        &self,
        tag: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), ImageError> {
        let url = self.url(&format!("manifests/{tag}"));
        let response = self
            .send(|| {
                self.http
                    .put(&url)
                    .header(reqwest::header::CONTENT_TYPE, media_type)
                    .body(bytes.to_vec())
            })
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self
                .unexpected(&format!("PUT manifest {tag}"), response)
                .await);
        }
        Ok(())
    }
}

/// `Bearer realm="…",service="…"` -> ("Bearer", [(realm, …), (service, …)]).
fn parse_challenge(text: &str) -> (String, Vec<(String, String)>) {
    let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    let mut params = Vec::new();
    let mut rest = rest.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.push((key, value.to_string()));
        rest = tail.trim_start_matches(',').trim();
    }
    (scheme.to_string(), params)
}

/// The registry's error messages (`{"errors": [{"code", "message"}]}`), or its body.
async fn error_text(response: Response) -> String {
    let text = response.text().await.unwrap_or_default();
    let parsed: Option<Vec<String>> = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v["errors"].as_array().map(|errors| {
                errors
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["code"].as_str().unwrap_or(""),
                            e["message"].as_str().unwrap_or("")
                        )
                        .trim()
                        .to_string()
                    })
                    .collect()
            })
        });
    match parsed {
        Some(messages) if !messages.is_empty() => messages.join("; "),
        _ if text.trim().is_empty() => String::new(),
        _ => text.trim().chars().take(300).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry that wants bearer tokens from its token service, as
    /// public.ecr.aws and Docker Hub do (the loopback docker-registry of the
    /// integration tests has only Basic authentication without a JWT issuer,
    /// so this flow is tested against this small fake of both).
    #[tokio::test]
    async fn bearer_challenges_are_answered_with_a_token_for_the_repository() {
        use axum::http::{HeaderMap, StatusCode as Status, header};
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let realm = format!("http://{address}/token");
        let manifest = r#"{"schemaVersion":2}"#;
        let app = axum::Router::new()
            .route(
                "/token",
                get(
                    |q: axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                        let wanted = q.get("scope").map(String::as_str)
                            == Some("repository:lambda/provided:pull")
                            && q.get("service").map(String::as_str) == Some("fake.example");
                        if wanted {
                            (Status::OK, r#"{"token":"t0ken"}"#)
                        } else {
                            (Status::BAD_REQUEST, "{}")
                        }
                    },
                ),
            )
            .route(
                "/v2/lambda/provided/manifests/al2023",
                get(move |headers: HeaderMap| async move {
                    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                    if auth == Some("Bearer t0ken") {
                        (
                            Status::OK,
                            [(header::CONTENT_TYPE, media::OCI_MANIFEST.to_string())],
                            manifest,
                        )
                    } else {
                        let challenge = format!(
                            r#"Bearer realm="{realm}",service="fake.example",scope="repository:lambda/provided:pull""#
                        );
                        (Status::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)], "")
                    }
                }),
            );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let registry = Registry::new(
            crate::http::client(),
            &address.to_string(),
            "lambda/provided",
            None,
            false,
        );
        let got = registry
            .manifest("al2023")
            .await
            .expect("manifest")
            .expect("found");
        assert_eq!(got.bytes, manifest.as_bytes());
        assert_eq!(got.media_type, media::OCI_MANIFEST);
        assert_eq!(got.digest, crate::image::digest_of(manifest.as_bytes()));
        // The token is kept for the next request.
        assert_eq!(registry.auth.lock().await.as_deref(), Some("Bearer t0ken"));
        let missing = registry.manifest("nope").await.expect("an answer");
        assert!(missing.is_none(), "404 is no manifest");
        server.abort();
    }

    #[test]
    fn challenges_parse_with_quoted_commas() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(
            params,
            [
                (
                    "realm".to_string(),
                    "https://auth.example.com/token".to_string()
                ),
                ("service".to_string(), "registry.example.com".to_string()),
                ("scope".to_string(), "repository:a/b:pull,push".to_string()),
            ]
        );
        let (scheme, params) = parse_challenge(r#"Basic realm="pipeline-tests""#);
        assert_eq!(scheme, "Basic");
        assert_eq!(
            params,
            [("realm".to_string(), "pipeline-tests".to_string())]
        );
    }
}
