//! The HTTP side: requests to the ingest and query handlers as API
//! Gateway events, and the presigned uploads S3 would take.

use super::*;
use crate::spec::model::FunctionId;
use pipeline_contract::{Access, Required};

/// State of the HTTP server.
#[derive(Clone)]
pub(super) struct Server {
    /// The versions of the handlers, and the aliases that pick one.
    pub(super) router: Arc<versions::Router>,
    /// The object store, for uploads through presigned URLs.
    pub(super) objects: LocalStore,
    pub(super) uploads_dir: PathBuf,
    pub(super) auth: LocalAuth,
}

/// How the local API checks its callers, as API Gateway does for the
/// spec's `auth`.
#[derive(Clone)]
pub(super) enum LocalAuth {
    /// `api_key`: the `x-api-key` header.
    Key(String),
    /// `cognito`: access tokens of the local issuer.
    Tokens(tokens::Issuer),
    /// `iam` (SigV4 is not checked locally) and `none`.
    Open,
}

/// API Gateway's answer when its Cognito authorizer refuses a token:
/// missing, invalid, expired, or without one of the operation's scopes.
fn unauthorized() -> http::Response<Bytes> {
    pipeline_shared::api::error(
        http::StatusCode::UNAUTHORIZED,
        pipeline_shared::api::ErrorCode::Forbidden,
        "Unauthorized",
    )
}

/// Checks the caller as the gateway would: what it may do, or the answer
/// that refuses it.
fn caller(
    auth: &LocalAuth,
    headers: &http::HeaderMap,
    path: &str,
) -> Result<Access, Box<http::Response<Bytes>>> {
    match auth {
        LocalAuth::Key(expected) => {
            let given = headers.get("x-api-key").map(|v| v.as_bytes());
            if !same_key(given, expected) {
                // API Gateway answers a missing or wrong key with 403.
                return Err(Box::new(pipeline_shared::api::error(
                    http::StatusCode::FORBIDDEN,
                    pipeline_shared::api::ErrorCode::Forbidden,
                    "a valid x-api-key header is required",
                )));
            }
            Ok(Access::Any)
        }
        LocalAuth::Tokens(issuer) => {
            let scopes = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
                .and_then(|token| issuer.verify(token))
                .ok_or_else(|| Box::new(unauthorized()))?;
            let parts = pipeline_shared::api::route(path)
                .map(|(_, parts)| parts.iter().map(|p| p.to_string()).collect::<Vec<_>>())
                .unwrap_or_default();
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            if !Required::of(&parts).met_by(&scopes) {
                return Err(Box::new(unauthorized()));
            }
            if !issuer.key_passes(headers.get("x-api-key").map(|v| v.as_bytes())) {
                // The token passed; the usage plan's key did not (403, as
                // API Gateway answers a missing or wrong key).
                return Err(Box::new(pipeline_shared::api::error(
                    http::StatusCode::FORBIDDEN,
                    pipeline_shared::api::ErrorCode::Forbidden,
                    "a valid x-api-key header is required beside the token",
                )));
            }
            Ok(Access::Scopes(scopes))
        }
        LocalAuth::Open => Ok(Access::Any),
    }
}

/// `POST /oauth2/token` as Cognito's token endpoint answers client
/// credentials: the client's id and secret in HTTP Basic authentication
/// (or the form), `grant_type=client_credentials`, an optional `scope`.
fn token_endpoint(
    auth: &LocalAuth,
    headers: &http::HeaderMap,
    body: &[u8],
) -> http::Response<Bytes> {
    use base64::Engine;
    let answer = |status: http::StatusCode, body: serde_json::Value| {
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Bytes::from(body.to_string()))
            .unwrap_or_default()
    };
    let LocalAuth::Tokens(issuer) = auth else {
        return pipeline_shared::api::no_route(&http::Method::POST, "/oauth2/token");
    };
    let form: std::collections::BTreeMap<String, String> =
        form_urlencoded::parse(body).into_owned().collect();
    let basic = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
        .and_then(|v| String::from_utf8(v).ok());
    let (id, secret) = match &basic {
        Some(pair) => pair.split_once(':').unwrap_or((pair, "")),
        None => (
            form.get("client_id").map_or("", String::as_str),
            form.get("client_secret").map_or("", String::as_str),
        ),
    };
    let grant = form.get("grant_type").map_or("", String::as_str);
    match issuer.token(id, secret, grant, form.get("scope").map(String::as_str)) {
        Ok(token) => answer(
            http::StatusCode::OK,
            serde_json::json!({"access_token": token, "token_type": "Bearer",
                               "expires_in": tokens::TOKEN_LIFETIME.as_secs()}),
        ),
        Err(e) => answer(
            http::StatusCode::BAD_REQUEST,
            serde_json::json!({"error": e.code()}),
        ),
    }
}

pub(super) async fn dispatch(
    axum::extract::State(server): axum::extract::State<Server>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let respond = |r: http::Response<Bytes>| {
        let (parts, body) = r.into_parts();
        axum::response::Response::from_parts(parts, axum::body::Body::from(body))
    };
    if let Some(key) = parts.uri.path().strip_prefix("/local-uploads/") {
        let key = key.to_string();
        let conditional = parts
            .headers
            .get(http::header::IF_NONE_MATCH)
            .map(|v| v.as_bytes())
            == Some(pipeline_contract::UPLOAD_CONDITION.1.as_bytes());
        let request = Put {
            key: &key,
            query: parts.uri.query(),
            method: parts.method.clone(),
            conditional,
        };
        return respond(upload(&server, request, body).await);
    }
    if parts.uri.path() == "/openapi.json" {
        // The document of the version the query alias names.
        let document = server
            .router
            .alias(FunctionId::Query)
            .and_then(|a| server.router.get(a.version))
            .map(|v| v.openapi.clone())
            .unwrap_or_default();
        return respond(
            http::Response::builder()
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(document)
                .unwrap_or_default(),
        );
    }
    if parts.uri.path() == "/oauth2/token" && parts.method == http::Method::POST {
        let body = axum::body::to_bytes(body, 64 * 1024)
            .await
            .unwrap_or_default();
        return respond(token_endpoint(&server.auth, &parts.headers, &body));
    }
    let access = match caller(&server.auth, &parts.headers, parts.uri.path()) {
        Ok(access) => access,
        Err(answer) => return respond(*answer),
    };
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return respond(pipeline_shared::api::error(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                pipeline_shared::api::ErrorCode::TooLarge,
                format!(
                    "requests are limited to {MAX_REQUEST_BYTES} bytes, as in API Gateway; use an upload"
                ),
            ));
        }
    };
    let mut parts = parts;
    parts.extensions.insert(access);
    let body = match decode_body(&mut parts.headers, body) {
        Ok(body) => body,
        Err(answer) => return respond(*answer),
    };
    let request = http::Request::from_parts(parts, body);
    let function = match request.method() == http::Method::POST {
        true => FunctionId::Ingest,
        false => FunctionId::Query,
    };
    let Some(version) = server.router.pick(function) else {
        return respond(pipeline_shared::api::unavailable(
            "the local aliases",
            &"no version is published",
        ));
    };
    let response = match function {
        FunctionId::Ingest => ingest::handle(&version.ctx, request).await,
        _ => ::query::handle(&version.reads, request).await,
    };
    server.router.record(
        function,
        version.number,
        response.status().is_server_error(),
    );
    respond(response)
}

/// What API Gateway does with a request body's `Content-Encoding`: `gzip`
/// and `deflate` are decoded before the function sees the body (the header
/// goes); another coding, or a body that is not in the coding it names, is
/// answered 415 by the gateway itself.
fn decode_body(
    headers: &mut http::HeaderMap,
    body: Bytes,
) -> Result<Bytes, Box<http::Response<Bytes>>> {
    use pipeline_shared::compression::{ContentEncoding, DecodeError, decode};
    let refuse = |message: String| {
        Box::new(pipeline_shared::api::error(
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            pipeline_shared::api::ErrorCode::UnsupportedMediaType,
            message,
        ))
    };
    let Some(coding) = headers.get(http::header::CONTENT_ENCODING) else {
        return Ok(body);
    };
    let coding = coding
        .to_str()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let encoding = match ContentEncoding::from_name(&coding) {
        _ if coding.is_empty() || coding == "identity" => None,
        Some(e @ (ContentEncoding::Gzip | ContentEncoding::Deflate)) => Some(e),
        _ => {
            return Err(refuse(format!(
                "API Gateway decodes request bodies in gzip or deflate only, not `{coding}`; send other encodings through an upload"
            )));
        }
    };
    headers.remove(http::header::CONTENT_ENCODING);
    let Some(encoding) = encoding else {
        return Ok(body);
    };
    let mut decoded = Vec::new();
    let result = decode(encoding, &body[..], |piece| {
        if decoded.len() + piece.len() > MAX_DECODED_BYTES {
            return Err(());
        }
        decoded.extend_from_slice(piece);
        Ok(())
    });
    match result {
        Ok(_) => {
            headers.remove(http::header::CONTENT_LENGTH);
            Ok(Bytes::from(decoded))
        }
        Err(DecodeError::Corrupt(corrupt)) => Err(refuse(format!(
            "the body is not valid {encoding}: {corrupt}"
        ))),
        Err(DecodeError::Sink(())) => Err(Box::new(pipeline_shared::api::error(
            http::StatusCode::PAYLOAD_TOO_LARGE,
            pipeline_shared::api::ErrorCode::TooLarge,
            format!("the body decodes to more than {MAX_DECODED_BYTES} bytes; use an upload"),
        ))),
    }
}

/// A PUT to an upload URL.
pub(super) struct Put<'a> {
    pub(super) key: &'a str,
    pub(super) query: Option<&'a str>,
    pub(super) method: http::Method,
    /// Whether it sent `If-None-Match: *`.
    pub(super) conditional: bool,
}

/// `PUT /local-uploads/<key>?[uploadId=..&partNumber=..&]expires=..&signature=..`:
/// what a presigned S3 PUT of an object or of a part does, streamed to a
/// file; an object is then stored whole, a part kept until its upload
/// completes. The answer's `ETag` is the SHA-256 of the body.
pub(super) async fn upload(
    server: &Server,
    request: Put<'_>,
    body: axum::body::Body,
) -> http::Response<Bytes> {
    use futures_util::StreamExt;
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    let Put {
        key,
        query,
        method,
        conditional,
    } = request;
    if method != http::Method::PUT {
        return s3_error(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "upload URLs take PUT",
        );
    }
    let mut expires = 0i64;
    let mut signature = String::new();
    let mut upload_id = None;
    let mut part_number = 0u32;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "expires" => expires = v.parse().unwrap_or(0),
            "signature" => signature = v.into_owned(),
            "uploadId" => upload_id = Some(v.into_owned()),
            "partNumber" => part_number = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    let target = match &upload_id {
        Some(upload_id) => UploadTarget::Part {
            upload_id,
            part_number,
        },
        None => UploadTarget::Whole,
    };
    if !server.objects.verify_upload(
        key,
        target,
        expires,
        &signature,
        chrono::Utc::now().timestamp(),
    ) {
        return s3_error(
            http::StatusCode::FORBIDDEN,
            "AccessDenied",
            "the upload URL is not valid or has expired",
        );
    }
    if let UploadTarget::Whole = target {
        // Signed into the URL, as the S3 URL signs it: a PUT without it is
        // refused, one over a stored object fails its precondition.
        if !conditional {
            return s3_error(
                http::StatusCode::FORBIDDEN,
                "AccessDenied",
                "the upload must send the header `If-None-Match: *`, which its URL signs",
            );
        }
        if matches!(server.objects.head(key).await, Ok(Some(_))) {
            return s3_error(
                http::StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "an object is stored under this key already; an upload cannot replace it",
            );
        }
    }
    let Some((dataset, batch_id)) = pipeline_shared::api::parse_object_key(key) else {
        return s3_error(
            http::StatusCode::FORBIDDEN,
            "AccessDenied",
            "not an upload key",
        );
    };
    let tmp = server
        .uploads_dir
        .join(format!("{}.part", uuid::Uuid::new_v4()));
    let mut file = match tokio::fs::File::create(&tmp).await {
        Ok(f) => f,
        Err(e) => return pipeline_shared::api::unavailable("local storage", &e),
    };
    let mut stream = body.into_data_stream();
    let mut hash = sha2::Sha256::new();
    while let Some(chunk) = stream.next().await {
        let written = match chunk {
            Ok(bytes) => {
                hash.update(&bytes);
                file.write_all(&bytes).await
            }
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return s3_error(
                http::StatusCode::BAD_REQUEST,
                "IncompleteBody",
                &format!("the upload was cut short: {e}"),
            );
        }
    }
    if let Err(e) = file.sync_all().await {
        return pipeline_shared::api::unavailable("local storage", &e);
    }
    drop(file);
    let sha256 = hex(&hash.finalize());
    let stored = match target {
        UploadTarget::Part {
            upload_id,
            part_number,
        } => {
            server
                .objects
                .put_part(key, upload_id, part_number, &tmp)
                .await
        }
        UploadTarget::Whole => {
            let metadata = std::collections::BTreeMap::from([
                ("batch-id".to_string(), batch_id.to_string()),
                ("dataset".to_string(), dataset.to_string()),
                ("sha256".to_string(), sha256.clone()),
            ]);
            server.objects.put_file(key, &tmp, &metadata).await
        }
    };
    match stored {
        Ok(()) => {}
        Err(pipeline_shared::store::StoreError::InvalidUpload(reason)) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return s3_error(http::StatusCode::NOT_FOUND, "NoSuchUpload", &reason);
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return pipeline_shared::api::unavailable("local storage", &e);
        }
    }
    http::Response::builder()
        .header(http::header::ETAG, format!("\"{sha256}\""))
        .body(Bytes::new())
        .unwrap_or_default()
}

/// An error answer as S3 writes it: XML with a `Code` and a `Message`
/// ("Error responses", Amazon S3 API Reference).
fn s3_error(status: http::StatusCode, code: &str, message: &str) -> http::Response<Bytes> {
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/xml")
        .body(Bytes::from(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{escaped}</Message></Error>"
        )))
        .unwrap_or_default()
}

/// Whether the key a request sent is the expected one, compared in
/// constant time: how long a refusal takes tells nothing of how much of a
/// guess was right.
fn same_key(given: Option<&[u8]>, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    given.is_some_and(|given| bool::from(given.ct_eq(expected.as_bytes())))
}
