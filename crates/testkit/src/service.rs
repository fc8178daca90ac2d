//! The services and tools the tests use, and how each is found.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// The variable that turns a skip into a failure.
pub const STRICT: &str = "PIPELINE_TEST_STRICT";

/// Something a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The real Postgres on 127.0.0.1:5432, trust authentication.
    Postgres,
    /// The pinned moto server (`MOTO_SERVER`).
    Moto,
    /// Debian's `docker-registry` (`DOCKER_REGISTRY`).
    Registry,
    /// Debian's `skopeo`.
    Skopeo,
    /// Debian's `strace`.
    Strace,
    /// cargo-lambda and zig (`CARGO_LAMBDA_PATH`).
    CargoLambda,
    CfnLint,
    Checkov,
    OpenapiSpecValidator,
    Schemathesis,
}

impl Service {
    /// Whether the machine has it.
    fn found(self) -> bool {
        match self {
            Service::Postgres => {
                let address = SocketAddr::from(([127, 0, 0, 1], 5432));
                TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok()
            }
            Service::Moto => moto_python().exists(),
            // The program the registry helper starts: `$DOCKER_REGISTRY` when
            // set, else docker-registry on PATH.
            Service::Registry => match std::env::var_os("DOCKER_REGISTRY") {
                Some(program) => PathBuf::from(program).exists(),
                None => on_path("docker-registry"),
            },
            Service::Skopeo => on_path("skopeo"),
            Service::Strace => on_path("strace"),
            Service::CargoLambda => cargo_lambda_dir().join("cargo-lambda").exists(),
            linter => linter.program().exists(),
        }
    }

    /// The program of a pinned Python tool (the linters and the fuzzer).
    pub fn program(self) -> PathBuf {
        let (var, venv, bin) = self.tool();
        tool(var, venv, bin)
    }

    /// The variable, venv and program of a pinned Python tool.
    fn tool(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Service::CfnLint => ("CFN_LINT", "cfn-lint", "cfn-lint"),
            Service::Checkov => ("CHECKOV", "checkov", "checkov"),
            Service::OpenapiSpecValidator => (
                "OPENAPI_SPEC_VALIDATOR",
                "openapi",
                "openapi-spec-validator",
            ),
            Service::Schemathesis => ("SCHEMATHESIS", "schemathesis", "schemathesis"),
            _ => ("", "", ""),
        }
    }

    /// What it is and how to get it.
    fn wanted(self) -> String {
        let tools = "`source .ci/tools.sh` installs it";
        match self {
            Service::Postgres => "Postgres on 127.0.0.1:5432 with trust authentication (start it with `pg_ctlcluster <version> main start`)".into(),
            Service::Moto => format!("moto ({tools}, or set MOTO_SERVER)"),
            Service::Registry => "docker-registry (Debian's docker-registry package, or set DOCKER_REGISTRY)".into(),
            Service::Skopeo => "skopeo (Debian's skopeo package)".into(),
            Service::Strace => "strace (Debian's strace package)".into(),
            Service::CargoLambda => format!("cargo-lambda and zig ({tools}, or set CARGO_LAMBDA_PATH)"),
            linter => {
                let (var, _, bin) = linter.tool();
                format!("{bin} ({tools}, or set {var})")
            }
        }
    }
}

/// The services among `wanted` that the machine lacks, with how to get
/// each; `None` when it has them all.
pub fn missing(wanted: &[Service]) -> Option<Vec<String>> {
    let gone: Vec<String> = wanted
        .iter()
        .filter(|s| !s.found())
        .map(|s| s.wanted())
        .collect();
    (!gone.is_empty()).then_some(gone)
}

/// Whether a missing service fails the test rather than skipping it.
pub fn strict() -> bool {
    std::env::var(STRICT).is_ok_and(|v| v == "1" || v == "true")
}

/// Says that the test is skipped for want of `missing`, past the test
/// harness's capture so the line is seen; fails it when [`strict`]. The
/// test is named by its thread (the harness names each after its test),
/// else by `place`.
pub fn skip(place: &str, missing: &[String]) {
    let thread = std::thread::current();
    let test = thread.name().filter(|n| *n != "main").unwrap_or(place);
    let line = format!("skipped {test}: needs {}", missing.join("; "));
    assert!(
        !strict(),
        "{line} ({STRICT} is set: nothing may be skipped)"
    );
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn tools_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    std::env::var_os("XDG_CACHE_HOME")
        .map_or_else(|| home.join(".cache"), PathBuf::from)
        .join("pipeline-tools")
}

/// A pinned test tool: `$var` if set, else `<cache>/pipeline-tools/<venv>/bin/<bin>`
/// as `.ci/tools.sh` installs it.
pub fn tool(var: &str, venv: &str, bin: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| tools_dir().join(venv).join("bin").join(bin))
}

/// The folder with cargo-lambda (and the Python that runs zig):
/// `CARGO_LAMBDA_PATH`, else where `.ci/tools.sh` installs it.
pub fn cargo_lambda_dir() -> PathBuf {
    std::env::var_os("CARGO_LAMBDA_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| tools_dir().join("cargo-lambda/bin"))
}

/// The Python of the pinned moto's venv.
pub(crate) fn moto_python() -> PathBuf {
    tool("MOTO_SERVER", "moto", "moto_server").with_file_name("python")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
