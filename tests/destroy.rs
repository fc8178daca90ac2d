//! `pipeline destroy` against moto (through `tests/moto/server.py`): the
//! buckets that go with their stacks are emptied first, every object version
//! and delete marker included, and only once the destroy is confirmed; the
//! buckets that are kept are left as they are.

use crate::common;

use pipeline_testkit::{Service, require};

use std::process::{Output, Stdio};

use common::moto::{Moto, start as start_moto};

/// A scratch project with prebuilt packages, and moto.
struct Project {
    dir: tempfile::TempDir,
    moto: Moto,
}

impl Project {
    fn new() -> Project {
        let project = Project {
            dir: common::workspace(&[]),
            moto: start_moto(),
        };
        for f in ["ingest", "loader", "query"] {
            common::package(project.dir.path(), f, "v1");
        }
        project
    }

    fn run(&self, args: &[&str]) -> Output {
        common::command(self.dir.path(), args)
            .env("AWS_ENDPOINT_URL", &self.moto.url)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("PIPELINE_ARTIFACTS", self.dir.path().join("artifacts"))
            .env("PIPELINE_POLL_MS", "20")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .stdin(Stdio::null())
            .output()
            .expect("run pipeline")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "pipeline {args:?}\nstdout:\n{}\nstderr:\n{}",
            common::stdout(&out),
            common::stderr(&out)
        );
        format!("{}{}", common::stdout(&out), common::stderr(&out))
    }

    async fn s3(&self) -> aws_sdk_s3::Client {
        let config = pipeline_cli::aws::config_loader()
            .region(aws_config::Region::new("eu-west-1"))
            .endpoint_url(&self.moto.url)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await;
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(true)
                .build(),
        )
    }
}

async fn buckets(s3: &aws_sdk_s3::Client) -> Vec<String> {
    s3.list_buckets()
        .send()
        .await
        .expect("list buckets")
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_string))
        .collect()
}

/// Object versions and delete markers of a bucket.
async fn versions(s3: &aws_sdk_s3::Client, bucket: &str) -> usize {
    let out = s3
        .list_object_versions()
        .bucket(bucket)
        .send()
        .await
        .expect("list versions");
    out.versions().len() + out.delete_markers().len()
}

async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &'static [u8]) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(body))
        .send()
        .await
        .expect("put");
}

#[test]
fn destroy_empties_the_versioned_buckets_that_go_and_keeps_the_kept_ones() {
    require!(Service::Moto);
    let p = Project::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    p.ok(&["bootstrap", "--env", "dev"]);
    p.ok(&["deploy", "--env", "dev", "--yes"]);
    let s3 = rt.block_on(p.s3());
    let all = rt.block_on(buckets(&s3));
    let find = |prefix: &str| {
        all.iter()
            .find(|b| b.starts_with(prefix))
            .unwrap_or_else(|| panic!("no bucket {prefix}*: {all:?}"))
            .clone()
    };
    let (raw, logs, assets) = (
        find("pipeline-dev-raw-"),
        find("pipeline-dev-logs-"),
        find("pipeline-dev-assets-"),
    );
    rt.block_on(async {
        // The templates enable versioning; moto's CloudFormation leaves
        // VersioningConfiguration out, so it is set here.
        for bucket in [&raw, &logs] {
            s3.put_bucket_versioning()
                .bucket(bucket)
                .versioning_configuration(
                    aws_sdk_s3::types::VersioningConfiguration::builder()
                        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .expect("versioning");
        }
        // Two versions of one batch, and a deleted one (a version and its delete marker).
        put(&s3, &raw, "raw/events/2024-01-01/a.ndjson", b"{}").await;
        put(&s3, &raw, "raw/events/2024-01-01/a.ndjson", b"{}\n{}").await;
        put(&s3, &raw, "raw/events/2024-01-01/b.ndjson", b"{}").await;
        s3.delete_object()
            .bucket(&raw)
            .key("raw/events/2024-01-01/b.ndjson")
            .send()
            .await
            .expect("delete");
        put(&s3, &logs, "raw/2024-01-01-00-00-00-0000", b"log").await;
    });
    assert_eq!(rt.block_on(versions(&s3, &raw)), 4);
    let kept = rt.block_on(versions(&s3, &assets));
    assert!(kept > 0, "the assets bucket holds the packages");

    // Not confirmed: nothing is emptied.
    let refused = p.run(&["destroy", "--env", "dev", "--bootstrap"]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        common::stderr(&refused)
    );
    assert_eq!(rt.block_on(versions(&s3, &raw)), 4);

    let text = p.ok(&["destroy", "--env", "dev", "--bootstrap", "--yes"]);
    assert!(text.contains(&format!("emptied s3://{raw}")), "{text}");
    let left = rt.block_on(buckets(&s3));
    assert!(!left.contains(&raw), "{raw} is still there: {text}");
    assert!(!left.contains(&logs), "{logs} is still there: {text}");
    // The assets bucket is kept (RetainExceptOnCreate) and keeps its objects.
    assert!(!text.contains(&format!("emptied s3://{assets}")), "{text}");
    assert!(left.contains(&assets), "{left:?}");
    assert_eq!(rt.block_on(versions(&s3, &assets)), kept);
}
