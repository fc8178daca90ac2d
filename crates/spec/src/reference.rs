//! Image references as container tools write them:
//! `[registry/]repository[:tag][@sha256:digest]`.

use std::fmt;

/// A text that is not an image reference, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{reference}` is not an image reference: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: String,
}

/// Where Docker Hub's images are served from.
const DOCKER_HUB: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Host (and port) of the registry's API.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        let bad = |reason: &str| ReferenceError {
            reference: text.to_string(),
            reason: reason.to_string(),
        };
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("the digest must start with `sha256:`"))?;
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(bad("a sha256 digest has 64 lower case hex digits"));
                }
                (rest, Some(digest.to_string()))
            }
            None => (text, None),
        };
        // A tag follows the last `:` after the last `/` (a registry's port comes before a `/`).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_string())),
            _ => (rest, None),
        };
        if let Some(tag) = &tag
            && (tag.is_empty()
                || tag.len() > 128
                || !tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
        {
            return Err(bad(
                "a tag takes 1 to 128 letters, digits, `.`, `_` and `-`",
            ));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            Some(_) => (DOCKER_HUB.to_string(), name.to_string()),
            None => (DOCKER_HUB.to_string(), format!("library/{name}")),
        };
        let registry = if registry == "docker.io" || registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        if repository.is_empty()
            || !repository.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            })
        {
            return Err(bad(
                "a repository name takes lower case letters, digits, `.`, `_`, `-` and `/`",
            ));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry's manifest endpoint for: the digest, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The registry's API base: plain HTTP for loopback registries (as
    /// container tools do), HTTPS for every other.
    pub fn base_url(&self) -> String {
        base_url(&self.registry)
    }
}

pub fn base_url(registry: &str) -> String {
    let host = registry.rsplit_once(':').map_or(registry, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            registry
        }
    });
    let loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback());
    let scheme = if loopback { "http" } else { "https" };
    format!("{scheme}://{registry}")
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_as_container_tools_read_them() {
        let r = Reference::parse("public.ecr.aws/lambda/provided:al2023").expect("ok");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("public.ecr.aws", "lambda/provided", Some("al2023"))
        );
        let r = Reference::parse("127.0.0.1:5000/base").expect("ok");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "base", Some("latest"))
        );
        assert_eq!(r.base_url(), "http://127.0.0.1:5000");
        let r = Reference::parse("debian").expect("ok");
        assert_eq!(r.to_string(), "registry-1.docker.io/library/debian:latest");
        assert_eq!(r.base_url(), "https://registry-1.docker.io");
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost:5000/a/b@{digest}")).expect("ok");
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), digest);
        assert_eq!(r.base_url(), "http://localhost:5000");
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        for (text, reason) in [
            ("base@sha256:abc", "64 lower case hex digits"),
            ("base@md5:abc", "must start with `sha256:`"),
            ("Base/Image", "lower case letters"),
            ("base:", "1 to 128 letters"),
        ] {
            let e = Reference::parse(text).expect_err(text);
            assert!(e.to_string().contains(text), "{e}");
            assert!(e.reason.contains(reason), "{text}: {}", e.reason);
        }
    }
}
