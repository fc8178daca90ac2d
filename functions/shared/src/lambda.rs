//! Between API Gateway's Lambda events and the handlers' plain HTTP types,
//! so that the same handlers serve Lambda and `pipeline local`.

use bytes::Bytes;
use lambda_http::Body;

/// The request as the handlers take it. API Gateway puts the stage in the
/// path; the handlers' routing looks past it.
pub fn request(request: lambda_http::Request) -> http::Request<Bytes> {
    let (parts, body) = request.into_parts();
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    http::Request::from_parts(parts, bytes)
}

/// The handler's response for API Gateway: JSON and text as text, the rest as binary.
pub fn response(response: http::Response<Bytes>) -> lambda_http::Response<Body> {
    let (parts, body) = response.into_parts();
    let textual = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json") || t.starts_with("text/"));
    let body = if body.is_empty() {
        Body::Empty
    } else if textual {
        match String::from_utf8(body.to_vec()) {
            Ok(text) => Body::Text(text),
            Err(e) => Body::Binary(e.into_bytes()),
        }
    } else {
        Body::Binary(body.to_vec())
    };
    lambda_http::Response::from_parts(parts, body)
}
