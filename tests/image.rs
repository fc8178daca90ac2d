//! Functions packaged as container images, against a real OCI registry on
//! loopback (Debian's `docker-registry`, `tests/registry/config.yml`) and
//! checked with an independent client (skopeo): assembly on a base image the
//! tests build themselves, reproducible digests, blob-by-blob pushes that skip
//! what the registry has, the errors a user can act on, and the deploy path
//! against moto for the CloudFormation and Lambda side (moto has no
//! registry: the push goes to the loopback one).

use crate::common;

use pipeline_testkit::{Service, require};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::registry::{self, Registry, TESTER, skopeo};
use pipeline_cli::image::{self as oci, layer};
use serde_json::{Value, json};

/// Where the tests' base image lives in its registry.
const BASE: &str = "base";

/// An environment whose ingest function ships as an image on `base`.
fn spec(base: &str) -> String {
    format!("extends: dev\nfunctions:\n  ingest:\n    package: image\n    base_image: {base}\n")
}

/// Writes a blob into an OCI image layout.
fn put_blob(dir: &Path, bytes: &[u8]) -> Value {
    let digest = oci::digest_of(bytes);
    let path = dir.join("blobs/sha256").join(&digest["sha256:".len()..]);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("blobs dir");
    std::fs::write(path, bytes).expect("blob");
    json!({"digest": digest, "size": bytes.len()})
}

/// The tests' base image, one per platform (`amd64`, `arm64`), each with a
/// small layer of its own and a Lambda-like config, as an OCI image layout
/// with an index; pushed with skopeo to `<host>/base:<tag>`. The layer
/// digests by platform.
fn push_base(host: &str, tag: &str, platforms: &[&str]) -> Vec<(String, String)> {
    push_base_as(host, tag, platforms, &["--all"])
}

/// `push_base`, with skopeo's `copy` options (such as a manifest format).
fn push_base_as(
    host: &str,
    tag: &str,
    platforms: &[&str],
    options: &[&str],
) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().expect("layout dir");
    let mut manifests = Vec::new();
    let mut layers = Vec::new();
    for platform in platforms {
        let release = format!("pipeline test base for linux/{platform}\n");
        let layer = layer::build(&[layer::File {
            path: "/etc/base-release",
            bytes: release.as_bytes(),
            mode: 0o644,
        }])
        .expect("base layer");
        let mut descriptor = put_blob(dir.path(), &layer.blob.bytes);
        descriptor["mediaType"] = json!(oci::media::OCI_LAYER_GZIP);
        layers.push((platform.to_string(), layer.blob.digest.clone()));
        let config = json!({
            "architecture": platform,
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LAMBDA_TASK_ROOT=/var/task"],
                "Entrypoint": ["/lambda-entrypoint.sh"],
                "Cmd": ["function.handler"],
                "WorkingDir": "/var/task"
            },
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
            "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "the image tests' base"}]
        });
        let mut config_descriptor = put_blob(dir.path(), config.to_string().as_bytes());
        config_descriptor["mediaType"] = json!(oci::media::OCI_CONFIG);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": oci::media::OCI_MANIFEST,
            "config": config_descriptor,
            "layers": [descriptor],
        });
        let mut entry = put_blob(dir.path(), manifest.to_string().as_bytes());
        entry["mediaType"] = json!(oci::media::OCI_MANIFEST);
        entry["platform"] = json!({"architecture": platform, "os": "linux"});
        manifests.push(entry);
    }
    let index =
        json!({"schemaVersion": 2, "mediaType": oci::media::OCI_INDEX, "manifests": manifests});
    let mut entry = put_blob(dir.path(), index.to_string().as_bytes());
    entry["mediaType"] = json!(oci::media::OCI_INDEX);
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let top = json!({"schemaVersion": 2, "manifests": [entry]});
    std::fs::write(dir.path().join("index.json"), top.to_string()).expect("index.json");
    std::fs::write(
        dir.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    let source = format!("oci:{}:{tag}", dir.path().display());
    let target = format!("docker://{host}/{BASE}:{tag}");
    let out = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "--override-arch",
            "amd64",
            "copy",
            "--dest-tls-verify=false",
        ])
        .args(options)
        .args(["--dest-creds", &format!("{}:{}", TESTER.0, TESTER.1)])
        .args([&source, &target])
        .output()
        .expect("run skopeo: install Debian's skopeo package");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    layers
}

/// A Docker config file with credentials for registries.
fn docker_config(dir: &Path, auths: &[(&str, (&str, &str))]) -> PathBuf {
    use base64::Engine;
    let auths: serde_json::Map<String, Value> = auths
        .iter()
        .map(|(host, (user, password))| {
            let auth =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            (host.to_string(), json!({"auth": auth}))
        })
        .collect();
    let config = dir.join("docker");
    std::fs::create_dir_all(&config).expect("docker config dir");
    std::fs::write(
        config.join("config.json"),
        json!({"auths": auths}).to_string(),
    )
    .expect("config.json");
    config
}

/// A scratch project: the `img` environment, prebuilt zips, a Docker config
/// for the base's registry and a cache of its own.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(base: &str, base_host: &str) -> Project {
        let dir = common::workspace(&[("img.yaml", &spec(base))]);
        let project = Project { dir };
        for f in ["ingest", "loader", "query"] {
            project.package(f, "v1");
        }
        docker_config(project.dir.path(), &[(base_host, TESTER)]);
        project
    }

    /// Writes a function's package; another `version` is other code.
    fn package(&self, function: &str, version: &str) {
        common::package(self.dir.path(), function, version);
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = common::command(self.dir.path(), args);
        cmd.env("PIPELINE_ARTIFACTS", self.dir.path().join("artifacts"))
            .env("PIPELINE_CACHE_DIR", self.dir.path().join("cache"))
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .env("PIPELINE_POLL_MS", "20")
            .env_remove(pipeline_cli::deploy::images::REGISTRY_OVERRIDE)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run pipeline")
    }

    /// The JSON result of a command that must succeed.
    fn json(&self, args: &[&str]) -> Value {
        json_result(&self.run(args), args)
    }

    /// The image `pipeline build` made of the ingest function.
    fn build(&self) -> Value {
        let built = self.json(&["--output", "json", "build", "--env", "img"]);
        built["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .find(|p| p["function"] == "ingest")
            .cloned()
            .expect("ingest package")
    }

    fn layout(&self) -> PathBuf {
        self.dir.path().join("out/img/ingest.image")
    }
}

fn json_result(out: &Output, args: &[&str]) -> Value {
    let stdout = common::stdout(out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "pipeline {args:?}\nstdout:\n{stdout}\nstderr:\n{}",
        common::stderr(out)
    );
    // A document, or JSON lines whose last is the result.
    serde_json::from_str(&stdout).unwrap_or_else(|_| {
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    })
}

/// A failed `--output json` run: exit code, and the error's message and help.
fn failure(out: &Output) -> (Option<i32>, String, String) {
    let stderr = common::stderr(out);
    let error: Value = stderr
        .lines()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v.get("error").is_some())
        })
        .unwrap_or_else(|| panic!("no JSON error on stderr: {stderr}"));
    (
        out.status.code(),
        error["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        error["error"]["help"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn pusher(host: &str, repository: &str, user: (&str, &str)) -> oci::Registry {
    oci::Registry::new(
        pipeline_cli::http::client(),
        host,
        repository,
        Some(oci::Credentials {
            username: user.0.to_string(),
            password: user.1.to_string(),
        }),
        true,
    )
}

/// The files of the image's last layer, fetched by skopeo: (path, mode, contents).
fn last_layer_files(reference: &str) -> Vec<(String, u32, String)> {
    let dir = tempfile::tempdir().expect("copy dir");
    let target = format!("dir:{}", dir.path().display());
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
        .args(["--src-creds", &format!("{}:{}", TESTER.0, TESTER.1)])
        .args([&format!("docker://{reference}"), &target])
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).expect("manifest"))
            .expect("json");
    let last = manifest["layers"]
        .as_array()
        .and_then(|l| l.last())
        .expect("a layer");
    let digest = last["digest"].as_str().expect("digest");
    let blob = std::fs::read(dir.path().join(&digest["sha256:".len()..])).expect("layer blob");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
    archive
        .entries()
        .expect("entries")
        .map(|e| {
            let mut e = e.expect("entry");
            let mut text = String::new();
            std::io::Read::read_to_string(&mut e, &mut text).expect("read");
            let mode = e.header().mode().expect("mode");
            (e.path().expect("path").display().to_string(), mode, text)
        })
        .collect()
}

#[test]
fn images_build_reproducibly_on_the_base_and_push_only_missing_blobs() {
    require!(Service::Registry, Service::Skopeo);
    let registry = registry::start();
    let base_layers = push_base(&registry.host, "v1", &["amd64", "arm64"]);
    let base = format!("{}/{BASE}:v1", registry.host);
    let arm64_layer = &base_layers[1].1;

    // Two projects in different folders, each with an empty cache: the same digest.
    let a = Project::new(&base, &registry.host);
    let built = a.build();
    // Unchanged inputs: the image is not assembled again.
    let again = a.run(&["-v", "build", "--env", "img"]);
    assert_eq!(again.status.code(), Some(0), "{}", common::stderr(&again));
    assert!(
        common::stderr(&again).contains("the ingest image is up to date"),
        "{}",
        common::stderr(&again)
    );
    assert!(common::stdout(&again).contains(built["image"]["digest"].as_str().expect("digest")));
    let b = Project::new(&base, &registry.host);
    assert_eq!(b.build()["image"], built["image"]);
    let image = &built["image"];
    let digest = image["digest"].as_str().expect("digest").to_string();
    assert_eq!(built["sha256"], digest["sha256:".len()..]);
    assert_eq!(built["architecture"], "arm64");
    let layers = strings(&image["layers"]);
    assert_eq!(layers.len(), 2, "{image}");
    assert_eq!(
        &layers[0], arm64_layer,
        "the base's arm64 layer comes first"
    );
    assert!(
        image["base"]
            .as_str()
            .expect("base")
            .starts_with(&format!("{}/{BASE}@sha256:", registry.host))
    );

    // skopeo reads the layout as the same image.
    let layout = format!("oci:{}", a.layout().display());
    let inspected: Value = serde_json::from_str(&skopeo(&["inspect", &layout])).expect("json");
    assert_eq!(inspected["Digest"], digest);
    assert_eq!(strings(&inspected["Layers"]), layers);

    // The first push uploads every blob, a second none, and a changed
    // function only its own layer and config.
    let repository = "pipeline-img-functions";
    let target = pusher(&registry.host, repository, TESTER);
    let rt = runtime();
    let first = rt
        .block_on(oci::push(&target, &a.layout(), "ingest-1"))
        .expect("push");
    assert_eq!(first.digest, digest);
    assert_eq!(first.uploaded.len(), 3, "{first:?}");
    assert!(first.manifest);
    let again = rt
        .block_on(oci::push(&target, &b.layout(), "ingest-1"))
        .expect("push again");
    assert_eq!(
        (again.uploaded.len(), again.manifest),
        (0, false),
        "{again:?}"
    );

    a.package("ingest", "v2");
    let changed = a.build();
    let changed_digest = changed["image"]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    assert_ne!(changed_digest, digest);
    assert_eq!(strings(&changed["image"]["layers"])[0], *arm64_layer);
    let second = rt
        .block_on(oci::push(&target, &a.layout(), "ingest-2"))
        .expect("push changed");
    assert_eq!(
        second.uploaded,
        [
            strings(&changed["image"]["layers"])[1].clone(),
            changed["image"]["config"]
                .as_str()
                .expect("config")
                .to_string()
        ]
    );
    assert_eq!(second.skipped, 1, "the base layer is already there");

    // skopeo sees the pushed image: its digest, layers, platform and entrypoint.
    let reference = format!("{}/{repository}@{changed_digest}", registry.host);
    let inspected: Value =
        serde_json::from_str(&skopeo(&["inspect", &format!("docker://{reference}")]))
            .expect("json");
    assert_eq!(inspected["Digest"], changed_digest);
    assert_eq!(
        strings(&inspected["Layers"]),
        strings(&changed["image"]["layers"])
    );
    assert_eq!(
        (inspected["Architecture"].as_str(), inspected["Os"].as_str()),
        (Some("arm64"), Some("linux"))
    );
    let config: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--config",
        &format!("docker://{reference}"),
    ]))
    .expect("json");
    assert_eq!(
        config["config"]["Entrypoint"],
        json!(["/var/task/bootstrap"])
    );
    assert_eq!(config["config"]["WorkingDir"], "/var/task");
    assert!(config["config"].get("Cmd").is_none(), "{config}");
    assert_eq!(
        strings(&config["config"]["Env"]),
        [
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "LAMBDA_TASK_ROOT=/var/task"
        ]
    );
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(2)
    );
    let tagged: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        &format!("docker://{}/{repository}:ingest-2", registry.host),
    ]))
    .expect("json");
    assert_eq!(tagged["Digest"], changed_digest);

    // The function's files, with their modes and fixed owner and time.
    let files = last_layer_files(&reference);
    assert_eq!(
        files,
        [
            ("var/".to_string(), 0o755, String::new()),
            ("var/task/".to_string(), 0o755, String::new()),
            (
                "var/task/bootstrap".to_string(),
                0o755,
                "ingest v2".to_string()
            ),
            (
                "var/task/datasets.json".to_string(),
                0o644,
                "{}".to_string()
            ),
        ]
    );
}

#[test]
fn registry_problems_are_errors_a_user_can_act_on() {
    require!(Service::Registry, Service::Skopeo);
    let registry = registry::start();
    push_base(&registry.host, "amd64-only", &["amd64"]);

    // A base published for another architecture.
    let base = format!("{}/{BASE}:amd64-only", registry.host);
    let p = Project::new(&base, &registry.host);
    let (code, message, help) = failure(&p.run(&["--output", "json", "build", "--env", "img"]));
    assert_eq!(code, Some(1));
    assert_eq!(
        message,
        format!("the base image {base} has no linux/arm64 image (it has: linux/amd64)")
    );
    assert_eq!(
        help,
        "choose a base image published for linux/arm64, or set the function's `architecture` to one it has"
    );

    // A base that does not exist.
    let base = format!("{}/{BASE}:no-such-tag", registry.host);
    let p = Project::new(&base, &registry.host);
    let (code, message, help) = failure(&p.run(&["--output", "json", "build", "--env", "img"]));
    assert_eq!(code, Some(1));
    assert_eq!(message, format!("the base image {base} does not exist"));
    assert_eq!(
        help,
        format!(
            "check `base_image` in the spec (name and tag); `skopeo inspect docker://{base}` shows what the registry has"
        )
    );

    // No credentials for a registry that asks for them.
    let base = format!("{}/{BASE}:amd64-only", registry.host);
    let p = Project::new(&base, "registry.example.com");
    let (code, message, help) = failure(&p.run(&["--output", "json", "build", "--env", "img"]));
    assert_eq!(code, Some(1));
    assert_eq!(
        message,
        format!(
            "the registry {} refused to let us pull {BASE}: the registry asks for credentials and none were found",
            registry.host
        )
    );
    assert_eq!(
        help,
        format!(
            "log in to {}: put credentials for it in the Docker config file (`docker login`, `skopeo login` or `crane auth login` write them)",
            registry.host
        )
    );

    // A registry that is not there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let host = format!("127.0.0.1:{closed}");
    let p = Project::new(&format!("{host}/{BASE}:v1"), &host);
    let (code, message, help) = failure(&p.run(&["--output", "json", "build", "--env", "img"]));
    assert_eq!(code, Some(1));
    assert!(
        message.starts_with(&format!("cannot reach the registry {host}: ")),
        "{message}"
    );
    assert_eq!(
        help,
        "check the registry's address and your network (proxy, VPN); loopback registries are spoken to over plain HTTP, every other over HTTPS"
    );
    assert!(!p.layout().exists(), "nothing is written");

    // A push with the wrong password.
    let base = format!("{}/{BASE}:amd64-only", registry.host);
    let p = Project::new(&base, &registry.host);
    let amd64 = spec(&base) + "    architecture: x86_64\n";
    std::fs::write(p.dir.path().join("environments/img.yaml"), &amd64).expect("spec");
    let built = p.build();
    let target = pusher(
        &registry.host,
        "pipeline-img-functions",
        ("tester", "wrong"),
    );
    let e = runtime()
        .block_on(oci::push(&target, &p.layout(), "ingest-1"))
        .expect_err("a refused push");
    assert_eq!(
        e.to_string(),
        format!(
            "the registry {} refused to let us push pipeline-img-functions: HTTP 401: the credentials were not accepted",
            registry.host
        )
    );

    // A prebuilt image layout in the artifacts is taken as it is, if it is
    // for the function's platform.
    let artifacts = p.dir.path().join("artifacts");
    std::fs::remove_file(artifacts.join("ingest.zip")).expect("rm zip");
    std::fs::rename(p.layout(), artifacts.join("ingest.image")).expect("move layout");
    assert_eq!(p.build()["image"], built["image"]);
    std::fs::write(p.dir.path().join("environments/img.yaml"), spec(&base)).expect("spec");
    let (code, message, help) = failure(&p.run(&["--output", "json", "build", "--env", "img"]));
    assert_eq!(code, Some(1));
    assert_eq!(
        message,
        format!(
            "the image {} is for linux/amd64, but the ingest function runs on linux/arm64",
            artifacts.join("ingest.image").display()
        )
    );
    assert_eq!(
        help,
        "build the image for arm64 (`pipeline build --env img`), or change the function's `architecture`"
    );
}

#[test]
fn a_base_image_on_a_zip_function_or_a_bad_reference_is_a_spec_error() {
    let dir = common::workspace(&[(
        "img.yaml",
        "extends: dev\nfunctions:\n  loader:\n    base_image: base:v1\n  ingest:\n    package: image\n    base_image: Base:V1\n",
    )]);
    let out = common::pipeline(dir.path(), &["validate", "--env", "img"]);
    assert_eq!(out.status.code(), Some(2));
    let text = common::stderr(&out);
    for expected in [
        "`functions.loader.base_image` is set, but the function is packaged as a zip",
        "img.yaml:4:5",
        "set `functions.loader.package: image`, or remove `base_image`",
        "`functions.ingest.base_image` is not an image reference: `Base:V1`",
        "img.yaml:7:17",
        "a repository name takes lower case letters, digits, `.`, `_`, `-` and `/`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

/// A base in Docker's manifest format (schema 2, as many public images
/// still are) becomes an OCI image: the layers keep their bytes and digests
/// under OCI media types. The registry's credentials come from a Docker
/// credential helper.
#[test]
fn docker_format_bases_become_oci_images() {
    require!(Service::Registry, Service::Skopeo);
    let registry = registry::start();
    let layers = push_base_as(&registry.host, "docker", &["amd64"], &["--format", "v2s2"]);
    let base = format!("{}/{BASE}:docker", registry.host);
    let raw: Value =
        serde_json::from_str(&skopeo(&["inspect", "--raw", &format!("docker://{base}")]))
            .expect("json");
    assert_eq!(
        raw["mediaType"],
        oci::media::DOCKER_MANIFEST,
        "the base is in Docker's format"
    );
    let p = Project::new(&base, &registry.host);
    std::fs::write(
        p.dir.path().join("environments/img.yaml"),
        spec(&base) + "    architecture: x86_64\n",
    )
    .expect("spec");
    // The registry's credentials come from a credential helper this time,
    // as `docker-credential-<name> get` hands them out.
    let bin = p.dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let helper = bin.join("docker-credential-pipeline-test");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\n[ \"$server\" = \"{host}\" ] || exit 1\necho '{{\"ServerURL\":\"{host}\",\"Username\":\"{}\",\"Secret\":\"{}\"}}'\n",
            TESTER.0,
            TESTER.1,
            host = registry.host
        ),
    )
    .expect("helper");
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::write(
        p.dir.path().join("docker/config.json"),
        json!({"credHelpers": {registry.host.as_str(): "pipeline-test"}}).to_string(),
    )
    .expect("config.json");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let args = ["--output", "json", "build", "--env", "img"];
    let out = p.command(&args).env("PATH", path).output().expect("run");
    let built = json_result(&out, &args)["packages"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["function"] == "ingest").cloned())
        .expect("ingest package");
    let layout = format!("oci:{}", p.layout().display());
    let manifest: Value =
        serde_json::from_str(&skopeo(&["inspect", "--raw", &layout])).expect("json");
    assert_eq!(manifest["mediaType"], oci::media::OCI_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], oci::media::OCI_CONFIG);
    let types: Vec<&str> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter_map(|l| l["mediaType"].as_str())
        .collect();
    assert_eq!(
        types,
        [oci::media::OCI_LAYER_GZIP, oci::media::OCI_LAYER_GZIP]
    );
    assert_eq!(strings(&built["image"]["layers"])[0], layers[0].1);
    let config: Value =
        serde_json::from_str(&skopeo(&["inspect", "--config", &layout])).expect("json");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(
        config["config"]["Entrypoint"],
        json!(["/var/task/bootstrap"])
    );
}

/// The deploy path: the image assembled on a base from one registry, pushed
/// with ECR's authorization token to another (moto's token is the second
/// registry's password), and deployed by digest through moto's CloudFormation.
#[test]
fn deploy_pushes_images_and_names_them_by_digest() {
    require!(Service::Registry, Service::Skopeo, Service::Moto);
    let base_registry = registry::start();
    push_base(&base_registry.host, "v1", &["amd64", "arm64"]);
    let ecr: Registry = registry::start();
    let moto = common::moto::start();
    let p = Project::new(
        &format!("{}/{BASE}:v1", base_registry.host),
        &base_registry.host,
    );
    let deploy = |args: &[&str]| {
        let mut cmd = p.command(args);
        cmd.env("AWS_ENDPOINT_URL", &moto.url)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env(pipeline_cli::deploy::images::REGISTRY_OVERRIDE, &ecr.host)
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION");
        let out = cmd.output().expect("run pipeline");
        json_result(&out, args)
    };
    deploy(&["--output", "json", "bootstrap", "--env", "img"]);
    let first = deploy(&["--output", "json", "deploy", "--env", "img", "--yes"]);
    // The base layer, the function's layer and the config.
    assert_eq!(first["image_blobs_uploaded"], 3, "{first}");
    let built = Project::image_of(&p.layout());
    let uri = format!(
        "{}/pipeline-img-functions@{}",
        ecr.host,
        built["digest"].as_str().expect("digest")
    );
    let inspected: Value =
        serde_json::from_str(&skopeo(&["inspect", &format!("docker://{uri}")])).expect("json");
    assert_eq!(inspected["Digest"], built["digest"]);
    assert_eq!(strings(&inspected["Layers"]), strings(&built["layers"]));

    let function = |name: &str| {
        runtime().block_on(async {
            let config = pipeline_cli::aws::config_loader()
                .region(aws_config::Region::new("eu-west-1"))
                .endpoint_url(&moto.url)
                .credentials_provider(aws_sdk_lambda::config::Credentials::new(
                    "testing", "testing", None, None, "test",
                ))
                .load()
                .await;
            aws_sdk_lambda::Client::new(&config)
                .get_function()
                .function_name(name)
                .send()
                .await
                .expect("get function")
        })
    };
    let ingest = function("pipeline-img-ingest");
    let code = ingest.code().expect("code");
    assert_eq!(code.image_uri(), Some(uri.as_str()));
    assert_eq!(
        ingest
            .configuration()
            .and_then(|c| c.package_type())
            .map(|t| t.as_str()),
        Some("Image")
    );
    let loader = function("pipeline-img-loader");
    assert_eq!(
        loader.code().and_then(|c| c.image_uri()),
        None,
        "the loader stays a zip"
    );

    // Unchanged: nothing uploaded, no stack changed, no version published.
    let again = deploy(&["--output", "json", "deploy", "--env", "img", "--yes"]);
    assert_eq!(
        (
            &again["image_blobs_uploaded"],
            &again["uploaded"],
            &again["versions_published"]
        ),
        (&json!(0), &json!(0), &json!(0)),
        "{again}"
    );
    assert!(
        again["stacks"]
            .as_array()
            .expect("stacks")
            .iter()
            .all(|s| s["changed"] == false),
        "{again}"
    );

    // Changed code: one new layer and config, a new digest, one new version.
    p.package("ingest", "v2");
    let changed = deploy(&["--output", "json", "deploy", "--env", "img", "--yes"]);
    assert_eq!(changed["image_blobs_uploaded"], 2, "{changed}");
    assert_eq!(changed["versions_published"], 1, "{changed}");
    let rebuilt = Project::image_of(&p.layout());
    assert_ne!(rebuilt["digest"], built["digest"]);
    let uri = format!(
        "{}/pipeline-img-functions@{}",
        ecr.host,
        rebuilt["digest"].as_str().expect("digest")
    );
    assert_eq!(
        function("pipeline-img-ingest")
            .code()
            .and_then(|c| c.image_uri()),
        Some(uri.as_str())
    );

    // Credentials the registry refuses stop the deploy before any stack
    // moves: the function keeps its image.
    docker_config(
        p.dir.path(),
        &[
            (&base_registry.host, TESTER),
            (&ecr.host, ("AWS", "expired-token")),
        ],
    );
    p.package("ingest", "v3");
    let mut cmd = p.command(&["--output", "json", "deploy", "--env", "img", "--yes"]);
    cmd.env("AWS_ENDPOINT_URL", &moto.url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env(pipeline_cli::deploy::images::REGISTRY_OVERRIDE, &ecr.host);
    let (code, message, _) = failure(&cmd.output().expect("run pipeline"));
    assert_eq!(code, Some(1));
    assert_eq!(
        message,
        format!(
            "the registry {} refused to let us push pipeline-img-functions: HTTP 401: the credentials were not accepted",
            ecr.host
        )
    );
    assert_eq!(
        function("pipeline-img-ingest")
            .code()
            .and_then(|c| c.image_uri()),
        Some(uri.as_str())
    );
}

impl Project {
    /// What an image layout holds, as the library reads it.
    fn image_of(layout: &Path) -> Value {
        serde_json::to_value(oci::read_layout(layout).expect("layout")).expect("json")
    }
}
