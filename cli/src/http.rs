//! The CLI's HTTP clients: rustls with ring, as the SDK's clients here and
//! the functions use, checking servers against the platform's trusted
//! certificates.

/// A client builder that names the CLI in its user agent.
pub fn builder() -> reqwest::ClientBuilder {
    pipeline_shared::runtime::install_crypto_provider();
    reqwest::Client::builder().user_agent(concat!("pipeline/", env!("CARGO_PKG_VERSION")))
}

/// A client with the defaults of [`builder`].
pub fn client() -> reqwest::Client {
    // Building fails only when no TLS provider is installed, which
    // `builder` rules out.
    builder()
        .build()
        .expect("an HTTP client with the ring provider")
}
