//! Function packages: built with cargo-lambda, zipped byte for byte the same
//! on every machine, and uploaded under their SHA-256 so that an unchanged
//! package is never uploaded (nor deployed) again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::Error;

/// A function package ready to upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    /// The function: `ingest`, `loader` or `query`.
    pub function: String,
    pub architecture: String,
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    /// The container image, for functions packaged as images: then `path`
    /// is its OCI image layout and `sha256` its digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<crate::image::Image>,
}

impl Package {
    /// The S3 key the package is stored under.
    pub fn key(&self) -> String {
        format!("assets/{}.zip", self.sha256)
    }

    /// Reads a zip and names it by its SHA-256.
    pub fn from_zip(function: &str, architecture: &str, path: &Path) -> Result<Package, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Package {
            function: function.to_string(),
            architecture: architecture.to_string(),
            path: path.to_path_buf(),
            sha256: crate::synth::sha256_hex(&bytes),
            bytes: bytes.len() as u64,
            image: None,
        })
    }

    /// Reads a prebuilt image: an OCI image layout.
    pub fn from_layout(function: &str, architecture: &str, path: &Path) -> Result<Package, Error> {
        let image = crate::image::read_layout(path)?;
        let package = Package {
            function: function.to_string(),
            architecture: architecture.to_string(),
            path: PathBuf::new(),
            sha256: String::new(),
            bytes: 0,
            image: None,
        };
        Ok(package.imaged(path.to_path_buf(), image))
    }

    /// The function's package as the image in the layout at `path`.
    pub fn imaged(self, path: PathBuf, image: crate::image::Image) -> Package {
        Package {
            sha256: image.digest.trim_start_matches("sha256:").to_string(),
            bytes: image.bytes,
            path,
            image: Some(image),
            ..self
        }
    }
}

/// A file of a package: its name in the zip, its bytes and its mode.
pub struct Entry<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
    pub mode: u32,
}

/// Writes a zip whose bytes depend only on the entries: fixed order, a
/// fixed timestamp (1980-01-01), fixed modes and compression.
pub fn deterministic_zip(entries: &[Entry<'_>], out: &Path) -> Result<(), Error> {
    let write_error = |e: &dyn std::fmt::Display| Error::Build {
        message: format!("cannot write {}: {e}", out.display()),
        help: None,
    };
    let mut sorted: Vec<&Entry<'_>> = entries.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(b.name));
    let mut buffer = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buffer);
        for entry in sorted {
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .compression_level(Some(9))
                .last_modified_time(zip::DateTime::default())
                .unix_permissions(entry.mode);
            zip.start_file(entry.name, options)
                .map_err(|e| write_error(&e))?;
            zip.write_all(entry.bytes).map_err(|e| write_error(&e))?;
        }
        zip.finish().map_err(|e| write_error(&e))?;
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| write_error(&e))?;
    }
    std::fs::write(out, buffer.into_inner()).map_err(|e| write_error(&e))
}

/// The Rust target of a Lambda architecture, with the glibc version the
/// binary links against: 2.26, as old as Amazon Linux 2's, so it runs on
/// `provided.al2023` (glibc 2.34) and `provided.al2` alike.
pub fn target(architecture: &str) -> (&'static str, &'static str) {
    match architecture {
        "x86_64" => ("x86_64-unknown-linux-gnu", "x86_64-unknown-linux-gnu.2.26"),
        _ => (
            "aarch64-unknown-linux-gnu",
            "aarch64-unknown-linux-gnu.2.26",
        ),
    }
}

/// Checks that cargo-lambda and the Rust target are installed; the error
/// says how to install what is missing.
pub fn check_tools(architectures: &[&str]) -> Result<(), Error> {
    let lambda = Command::new("cargo").args(["lambda", "--version"]).output();
    if !lambda.is_ok_and(|o| o.status.success()) {
        return Err(Error::Build {
            message: "cargo-lambda is not installed".into(),
            help: Some(
                "install it with `pip install cargo-lambda ziglang` (seconds) or `cargo install cargo-lambda`, or pass prebuilt zips with `--artifacts DIR`".into(),
            ),
        });
    }
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    for arch in architectures {
        let (triple, _) = target(arch);
        // Without rustup, cargo reports a missing target itself.
        if let Ok(list) = &installed
            && !list.lines().any(|l| l.trim() == triple)
        {
            return Err(Error::Build {
                message: format!("the Rust target {triple} is not installed"),
                help: Some(format!("install it with `rustup target add {triple}`")),
            });
        }
    }
    Ok(())
}

/// Builds the functions' `bootstrap` executables for one architecture with
/// cargo-lambda, in release mode, with the cargo home's path remapped so
/// that the bytes do not depend on the machine.
pub fn cargo_lambda(
    workspace: &Path,
    architecture: &str,
    functions: &[&str],
    quiet: bool,
) -> Result<PathBuf, Error> {
    let (_, triple) = target(architecture);
    let lambda_dir = workspace.join("target").join("lambda").join(architecture);
    // Cargo names the workspace's files by paths relative to it; only the
    // dependencies' sources have absolute paths, under the cargo home, which
    // differs between machines.
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default();
    let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
    if !cargo_home.as_os_str().is_empty() {
        flags.push_str(&format!(
            " --remap-path-prefix={}=/cargo",
            cargo_home.display()
        ));
    }
    let mut command = Command::new("cargo");
    command
        .current_dir(workspace)
        .args([
            "lambda",
            "build",
            "--release",
            "--locked",
            "--target",
            triple,
        ])
        // cargo-lambda 1.9 hands a target directory on to `cargo metadata`,
        // which refuses it: the workspace's own `target/` is used.
        .env_remove("CARGO_TARGET_DIR")
        .arg("--lambda-dir")
        .arg(&lambda_dir)
        .env("RUSTFLAGS", flags.trim())
        // Symbols only make the package bigger and cold starts slower.
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        // Reproducible archives from C build scripts (aws-lc-sys).
        .env("SOURCE_DATE_EPOCH", "315532800")
        .env("ZERO_AR_DATE", "1");
    for f in functions {
        command.args(["--package", f]);
    }
    if quiet {
        command.arg("--quiet");
    }
    // Cargo's messages go to stderr, so that stdout keeps only results.
    command.stdout(std::process::Stdio::from(std::io::stderr()));
    let status = command.status().map_err(|e| Error::Build {
        message: format!("cannot run cargo lambda: {e}"),
        help: None,
    })?;
    if !status.success() {
        return Err(Error::Build {
            message: format!("cargo lambda build failed ({status})"),
            help: Some("the compiler's messages are above".into()),
        });
    }
    Ok(lambda_dir)
}

/// Amazon Root CA 1 to 4, the trust roots of RDS Proxy endpoints.
pub const AMAZON_ROOT_CAS: &[u8] = include_bytes!("../../../certs/amazon-root-ca.pem");

/// Zips a built function: `bootstrap`, the datasets it serves, and the CA
/// bundles it checks the database's certificates against (the RDS CAs for
/// instances, the Amazon Root CAs for RDS Proxy).
pub fn package(
    function: &str,
    architecture: &str,
    bootstrap: &Path,
    datasets_json: &[u8],
    rds_ca: Option<&[u8]>,
    out: &Path,
) -> Result<Package, Error> {
    let binary = std::fs::read(bootstrap).map_err(|source| Error::Read {
        path: bootstrap.display().to_string(),
        source,
    })?;
    let mut entries = vec![
        Entry {
            name: "bootstrap",
            bytes: &binary,
            mode: 0o100755,
        },
        Entry {
            name: "datasets.json",
            bytes: datasets_json,
            mode: 0o100644,
        },
    ];
    if let Some(ca) = rds_ca {
        entries.push(Entry {
            name: "rds-ca.pem",
            bytes: ca,
            mode: 0o100644,
        });
        // RDS Proxy endpoints present ACM certificates, which chain to the
        // Amazon Root CAs, not to the RDS CAs.
        entries.push(Entry {
            name: "amazon-root-ca.pem",
            bytes: AMAZON_ROOT_CAS,
            mode: 0o100644,
        });
    }
    deterministic_zip(&entries, out)?;
    Package::from_zip(function, architecture, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zips_depend_only_on_their_entries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let entries = [
            Entry {
                name: "datasets.json",
                bytes: b"{}",
                mode: 0o100644,
            },
            Entry {
                name: "bootstrap",
                bytes: b"\x7fELF binary",
                mode: 0o100755,
            },
        ];
        let a = dir.path().join("a.zip");
        let b = dir.path().join("b.zip");
        deterministic_zip(&entries, &a).expect("zip a");
        // Another order, a moment later: the same bytes.
        let reversed = [Entry { ..entries[1] }, Entry { ..entries[0] }];
        deterministic_zip(&reversed, &b).expect("zip b");
        let (a, b) = (std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
        assert_eq!(a, b);
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(a)).expect("archive");
        let names: Vec<&str> = archive.file_names().collect();
        assert_eq!(names, ["bootstrap", "datasets.json"]);
        let boot = archive.by_name("bootstrap").expect("bootstrap");
        assert_eq!(boot.unix_mode(), Some(0o100755));
        assert_eq!(boot.last_modified().map(|t| t.year()), Some(1980));
    }
}
