//! A real OCI registry (Debian's `docker-registry`) on a free loopback port,
//! configured by `tests/registry/config.yml`, storing in a temp dir, and
//! stopped when dropped. `.ci/run` installs it (and skopeo) with apt.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user moto's ECR GetAuthorizationToken names, and its password.
pub const ECR_USER: (&str, &str) = ("AWS", "123456789012-auth-token");
/// The tests' own user.
pub const TESTER: (&str, &str) = ("tester", "tester-password");

pub struct Registry {
    child: Child,
    _storage: tempfile::TempDir,
    /// `127.0.0.1:<port>`, as image references name it.
    pub host: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_dir() -> PathBuf {
    crate::repo().join("tests/registry")
}

pub fn start() -> Registry {
    let binary = std::env::var_os("DOCKER_REGISTRY").unwrap_or_else(|| "docker-registry".into());
    let storage = tempfile::tempdir().expect("registry storage");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let host = format!("127.0.0.1:{port}");
    let child = Command::new(&binary)
        .args(["serve", "config.yml"])
        .current_dir(config_dir())
        .env("REGISTRY_HTTP_ADDR", &host)
        .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", storage.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start docker-registry ({e}): install Debian's docker-registry package, or set DOCKER_REGISTRY")
        });
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "docker-registry did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Registry {
        child,
        _storage: storage,
        host,
    }
}

/// Runs skopeo (Debian's package) against the loopback registry as the
/// tests' user; its stdout, which must be a success.
pub fn skopeo(args: &[&str]) -> String {
    let creds = format!("{}:{}", TESTER.0, TESTER.1);
    let mut command = Command::new("skopeo");
    command.args(args);
    // Every subcommand the tests use talks to the registry as a source or a
    // destination; the loopback registry speaks plain HTTP.
    match args.first() {
        Some(&"inspect") => command.args(["--tls-verify=false", "--creds", &creds]),
        _ => command.args(["--dest-tls-verify=false", "--dest-creds", &creds]),
    };
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run skopeo ({e}): install Debian's skopeo package"));
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
