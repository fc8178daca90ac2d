//! Between API Gateway's Lambda events and the handlers' plain HTTP types,
//! so that the same handlers serve Lambda and `pipeline local`.

use bytes::Bytes;
use lambda_http::Body;
use lambda_http::request::RequestContext;
use pipeline_contract::{Access, Scope};

/// The environment variable that names the API's authorization
/// (`API_AUTH`, as the app stack sets it): with `cognito`, the caller may do
/// what its token's scopes allow; otherwise API Gateway checked a key or a
/// signature, which carry no scopes.
pub const API_AUTH: &str = "API_AUTH";

/// What the caller of `request` may do: with `cognito` authorization, the
/// scopes of the access token API Gateway's authorizer checked (its claims
/// are in the request context), none when there are no claims.
fn access(parts: &http::request::Parts, cognito: bool) -> Access {
    if !cognito {
        return Access::Any;
    }
    let claim = match parts.extensions.get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV1(context)) => context
            .authorizer
            .fields
            .get("claims")
            .and_then(|claims| claims.get("scope"))
            .and_then(|scope| scope.as_str())
            .map(str::to_string),
        _ => None,
    };
    Access::Scopes(claim.as_deref().map(Scope::from_claim).unwrap_or_default())
}

/// The request as the handlers take it, with what its caller may do
/// ([`Access`]). API Gateway puts the stage in the path; the handlers'
/// routing looks past it.
pub fn request(request: lambda_http::Request) -> http::Request<Bytes> {
    let cognito = std::env::var(API_AUTH).is_ok_and(|a| a == "cognito");
    let (mut parts, body) = request.into_parts();
    let access = access(&parts, cognito);
    parts.extensions.insert(access);
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

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_contract::Action;

    /// A REST API event whose authorizer passed these claims.
    fn event(authorizer: &str) -> lambda_http::Request {
        let json = format!(
            r#"{{"resource": "/v1/health", "path": "/v1/health", "httpMethod": "GET",
                "headers": {{}}, "multiValueHeaders": {{}}, "queryStringParameters": null,
                "multiValueQueryStringParameters": null, "pathParameters": null, "stageVariables": null,
                "requestContext": {{"stage": "live", "httpMethod": "GET", "resourcePath": "/v1/health",
                                    "path": "/live/v1/health", "requestId": "r", "accountId": "123456789012",
                                    "apiId": "a", "identity": {{"sourceIp": "192.0.2.1"}}{authorizer}}},
                "body": null, "isBase64Encoded": false}}"#
        );
        lambda_http::request::from_str(&json).expect("a REST API event")
    }

    /// With Cognito authorization the caller may do what its access
    /// token's scopes say, and nothing without claims; with an API key or
    /// SigV4, API Gateway's check stands for everything.
    #[test]
    fn the_callers_access_comes_from_the_authorizers_claims() {
        let claims = r#", "authorizer": {"claims": {"client_id": "c", "token_use": "access",
                          "scope": "pipeline/events.read pipeline/trips.write"}}"#;
        let (parts, _) = event(claims).into_parts();
        let scoped = access(&parts, true);
        assert!(scoped.allows("events", Action::Read));
        assert!(!scoped.allows("events", Action::Write));
        assert!(scoped.allows("trips", Action::Write));
        assert_eq!(access(&parts, false), Access::Any);
        let (bare, _) = event("").into_parts();
        assert_eq!(access(&bare, true), Access::Scopes(Vec::new()));
    }
}
