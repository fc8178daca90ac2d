//! IAM authentication to RDS: a short-lived token, signed with the
//! function's credentials, is the password of each new connection.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4::SigningParams;
use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;

/// How long a token is valid (the most RDS accepts).
const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// The token for `user` at `host:port`: a SigV4-presigned `connect` action
/// of the `rds-db` service, without its scheme.
pub fn auth_token(
    host: &str,
    port: u16,
    user: &str,
    region: &str,
    credentials: &Credentials,
    now: SystemTime,
) -> Result<String, String> {
    let url = format!(
        "https://{host}:{port}/?Action=connect&DBUser={}",
        encode(user)
    );
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let params = SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("rds-db")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let host_header = format!("{host}:{port}");
    let signable = SignableRequest::new(
        "GET",
        url.as_str(),
        std::iter::once(("host", host_header.as_str())),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let mut request = http::Request::builder()
        .uri(url.as_str())
        .body(())
        .map_err(|e| e.to_string())?;
    instructions.apply_to_request_http1x(&mut request);
    let signed = request.uri().to_string();
    Ok(signed.trim_start_matches("https://").to_string())
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Connects with a fresh token as the password of every new connection.
pub struct IamConnect {
    pub credentials: aws_credential_types::provider::SharedCredentialsProvider,
    pub region: String,
    pub tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl deadpool_postgres::Connect for IamConnect {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> BoxFuture<'_, Result<(tokio_postgres::Client, JoinHandle<()>), tokio_postgres::Error>>
    {
        let mut config = pg_config.clone();
        Box::pin(async move {
            let host = match config.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                _ => String::new(),
            };
            let port = config.get_ports().first().copied().unwrap_or(5432);
            let user = config.get_user().unwrap_or("").to_string();
            let token = match self.credentials.provide_credentials().await {
                Ok(credentials) => auth_token(
                    &host,
                    port,
                    &user,
                    &self.region,
                    &credentials,
                    SystemTime::now(),
                ),
                Err(e) => Err(e.to_string()),
            };
            match token {
                Ok(token) => {
                    config.password(token);
                }
                Err(e) => tracing::error!(error = %e, "cannot sign a database token"),
            }
            let (client, connection) = config.connect(self.tls.clone()).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "database connection ended");
                }
            });
            Ok((client, task))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_presigned_connect_urls() {
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let token = auth_token(
            "db.example.eu-west-1.rds.amazonaws.com",
            5432,
            "pipeline_loader",
            "eu-west-1",
            &credentials,
            at,
        )
        .expect("token");
        assert!(token.starts_with("db.example.eu-west-1.rds.amazonaws.com:5432/?Action=connect&DBUser=pipeline_loader&"), "{token}");
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F20231114%2Feu-west-1%2Frds-db%2Faws4_request",
            "X-Amz-Date=20231114T221320Z",
            "X-Amz-Expires=900",
            "X-Amz-SignedHeaders=host",
            "X-Amz-Signature=",
        ] {
            assert!(token.contains(part), "{part} missing from {token}");
        }
        // The same inputs sign the same way; another time signs differently.
        let again = auth_token(
            "db.example.eu-west-1.rds.amazonaws.com",
            5432,
            "pipeline_loader",
            "eu-west-1",
            &credentials,
            at,
        );
        assert_eq!(again.as_deref(), Ok(token.as_str()));
        let later = auth_token(
            "db.example.eu-west-1.rds.amazonaws.com",
            5432,
            "pipeline_loader",
            "eu-west-1",
            &credentials,
            at + Duration::from_secs(1),
        );
        assert_ne!(later.as_deref(), Ok(token.as_str()));
    }
}
