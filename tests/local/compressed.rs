//! Compressed batches: gzip and deflate inline (decoded by the gateway, as
//! API Gateway does), gzip and zstd uploads (decoded by the loader while it
//! streams, or into a copy that loads in chunks), corrupt streams, and the
//! inline limit counted on the decoded body.

use super::*;
use std::io::Write;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

fn events(from: u32, to: u32) -> String {
    (from..=to).map(|i| event(i, "zip")).collect()
}

async fn rows(local: &Local) -> i64 {
    count(&local.db().await, "SELECT count(*) FROM public.events").await
}

#[tokio::test]
async fn inline_batches_in_gzip_or_deflate_are_decoded_at_the_gateway() {
    require!(Service::Postgres);
    let local = Local::start("api:\n  max_inline_batch_kib: 64\n").await;
    let gz = gzip(events(1, 100).as_bytes());
    let (status, accepted) = local
        .post_with(
            "/v1/datasets/events/batches",
            "application/x-ndjson",
            gz.clone(),
            &[("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(
        (status, accepted["records"].clone()),
        (202, json!(100)),
        "{accepted}"
    );
    let batch = local
        .settled(accepted["batch_id"].as_str().expect("id"))
        .await;
    assert_eq!(batch["inserted"], 100, "{batch}");

    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(events(101, 150).as_bytes()).expect("deflate");
    let (status, accepted) = local
        .post_with(
            "/v1/datasets/events/batches",
            "application/x-ndjson",
            z.finish().expect("deflate"),
            &[("content-encoding", "deflate")],
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    local
        .settled(accepted["batch_id"].as_str().expect("id"))
        .await;
    assert_eq!(rows(&local).await, 150);

    // API Gateway decodes gzip and deflate only, and refuses a body that is
    // not in the coding it names: 415, before any function runs.
    let (status, answer) = local
        .post_with(
            "/v1/datasets/events/batches",
            "application/x-ndjson",
            zstd(events(151, 160).as_bytes()),
            &[("content-encoding", "zstd")],
        )
        .await;
    assert_eq!(status, 415, "{answer}");
    assert_eq!(
        answer["message"],
        "API Gateway decodes request bodies in gzip or deflate only, not `zstd`; send other encodings through an upload"
    );
    let mut corrupt = gz.clone();
    corrupt.truncate(corrupt.len() / 2);
    let (status, answer) = local
        .post_with(
            "/v1/datasets/events/batches",
            "application/x-ndjson",
            corrupt,
            &[("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(status, 415, "{answer}");
    let message = answer["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("the body is not valid gzip: the gzip stream is corrupt at byte "),
        "{message}"
    );
    // The inline limit counts the decoded body: 1,000 events are some
    // 200 KiB, and a few KiB compressed.
    let big = gzip(events(1000, 2000).as_bytes());
    assert!(big.len() < 64 * 1024);
    let (status, answer) = local
        .post_with(
            "/v1/datasets/events/batches",
            "application/x-ndjson",
            big,
            &[("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(rows(&local).await, 150);
}

/// Uploads in gzip and zstd load as one stream each (never in chunks, as
/// compressed bytes cannot be cut at offsets), exactly once; a corrupt one
/// fails its batch with the byte offset and loads nothing.
/// Where `pipeline local` keeps the decoded copy of the object at `key`.
fn decoded_copy(local: &Local, key: &str) -> std::path::PathBuf {
    let decoded = pipeline_shared::api::decoded_object_key(key).unwrap_or_default();
    local.dir.path().join("data/objects").join(decoded)
}

/// With chunks in use (here 4 KiB), a compressed upload above an eighth of
/// the chunk size loads in chunks of its decoded copy, made once; a smaller
/// one loads as one stream, decoded on the way. Either way once, retries
/// included; a corrupt one fails with its offset and leaves no copy.
#[tokio::test]
async fn gzip_and_zstd_uploads_load_once_and_a_corrupt_one_fails_with_its_offset() {
    require!(Service::Postgres);
    let local = Local::start_with(
        "api:\n  max_inline_batch_kib: 16\n",
        &["--chunk-size", "4096"],
    )
    .await;
    let db = local.db().await;
    for (file, body, suffix, chunked) in [
        (
            "a.ndjson.gz",
            gzip(events(1, 1000).as_bytes()),
            "ndjson.gz",
            true,
        ),
        (
            "b.ndjson.zst",
            zstd(events(1001, 2500).as_bytes()),
            "ndjson.zst",
            true,
        ),
        (
            "c.ndjson.zst",
            [
                zstd(events(2501, 2600).as_bytes()),
                zstd(events(2601, 2700).as_bytes()),
            ]
            .concat(),
            "ndjson.zst",
            true,
        ),
        // 2 events: under 512 bytes compressed (zstd goes as an upload).
        (
            "d.ndjson.zst",
            zstd(events(2701, 2702).as_bytes()),
            "ndjson.zst",
            false,
        ),
    ] {
        std::fs::write(local.dir.path().join(file), &body).expect("write");
        for attempt in 0..2 {
            // The second push is a retry with the same key: the same batch.
            let out = client(
                &local,
                &[
                    "--output",
                    "json",
                    "push",
                    "-d",
                    "events",
                    file,
                    "--wait",
                    "--idempotency-key",
                    file,
                ],
            );
            let pushed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            assert_eq!(
                (pushed["via"].clone(), pushed["status"].clone()),
                (json!("upload"), json!("loaded")),
                "{file} #{attempt}: {pushed}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let id = pushed["batch_id"].as_str().unwrap_or_default().to_string();
            let key: String = db
                .query_one(
                    "SELECT object_key FROM pipeline.batches WHERE batch_id = $1::text::uuid",
                    &[&id],
                )
                .await
                .expect("batch")
                .get(0);
            assert!(key.ends_with(suffix), "{key}");
            let chunks = count(
                &db,
                &format!("SELECT count(*) FROM pipeline.batch_chunks WHERE batch_id = '{id}' AND status <> 'split'"),
            )
            .await;
            assert_eq!(chunks > 1, chunked, "{file}: {chunks} chunks");
            assert_eq!(decoded_copy(&local, &key).is_file(), chunked, "{file}");
        }
    }
    assert_eq!(rows(&local).await, 2702);

    let mut corrupt = zstd(events(3001, 4000).as_bytes());
    let at = corrupt.len() / 2;
    corrupt.truncate(at);
    std::fs::write(local.dir.path().join("bad.ndjson.zst"), &corrupt).expect("write");
    let out = client(
        &local,
        &["push", "-d", "events", "bad.ndjson.zst", "--wait"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains(" failed: line ") && stdout.contains("the zstd stream is corrupt at byte "),
        "{stdout}"
    );
    assert_eq!(rows(&local).await, 2702);
    let key: String = db
        .query_one(
            "SELECT object_key FROM pipeline.batches WHERE status = 'failed'",
            &[],
        )
        .await
        .expect("the failed batch")
        .get(0);
    assert!(!decoded_copy(&local, &key).exists(), "{key}");
    let leftovers: Vec<_> = std::fs::read_dir(decoded_copy(&local, &key).parent().expect("dir"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `push` compresses inline batches on the way unless told not to; both
/// load the same.
#[tokio::test]
async fn push_compresses_inline_batches_by_default() {
    require!(Service::Postgres);
    let local = Local::start("api:\n  max_inline_batch_kib: 1024\n").await;
    std::fs::write(local.dir.path().join("a.ndjson"), events(1, 1000)).expect("write");
    std::fs::write(local.dir.path().join("b.ndjson"), events(1001, 2000)).expect("write");
    for args in [
        &[
            "--output", "json", "push", "-d", "events", "a.ndjson", "--wait",
        ][..],
        &[
            "--output",
            "json",
            "push",
            "-d",
            "events",
            "b.ndjson",
            "--wait",
            "--no-compress",
        ],
    ] {
        let out = client(&local, args);
        let pushed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(
            (pushed["via"].clone(), pushed["status"].clone()),
            (json!("inline"), json!("loaded")),
            "{args:?}: {pushed}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(rows(&local).await, 2000);
}

/// A compressed batch whose loader dies once its decoded copy is stored,
/// before its chunks begin (their staging table waits for the dataset's
/// table), loads exactly once after a restart, in chunks of that copy.
#[tokio::test]
async fn a_compressed_batch_killed_after_its_decoded_copy_loads_once_from_it() {
    use super::chunks::wait_for_lock;
    require!(Service::Postgres);
    let mut local = Local::start_with("", &["--chunk-size", "20000", "--workers", "2"]).await;
    let db = local.db().await;
    let blocker = local.db().await;
    const RECORDS: i64 = 3000;
    std::fs::write(
        local.dir.path().join("big.ndjson.zst"),
        zstd(events(1, RECORDS as u32).as_bytes()),
    )
    .expect("write");
    blocker
        .batch_execute("BEGIN; LOCK TABLE public.events IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let out = client(
        &local,
        &["--output", "json", "push", "-d", "events", "big.ndjson.zst"],
    );
    let pushed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(pushed["via"], "upload", "{pushed}");
    let batch_id = pushed["batch_id"].as_str().unwrap_or_default().to_string();
    wait_for_lock(&db, "CREATE UNLOGGED TABLE").await;
    local.kill();
    blocker.batch_execute("ROLLBACK").await.expect("unlock");
    let key: String = db
        .query_one(
            "SELECT object_key FROM pipeline.batches WHERE batch_id = $1::text::uuid",
            &[&batch_id],
        )
        .await
        .expect("batch")
        .get(0);
    assert!(decoded_copy(&local, &key).is_file(), "no copy of {key}");
    let chunks_sql = format!(
        "SELECT count(*) FROM pipeline.batch_chunks WHERE batch_id = '{batch_id}' AND status <> 'split'"
    );
    assert_eq!(count(&db, &chunks_sql).await, 0);
    assert_eq!(rows(&local).await, 0);

    local.restart();
    let batch = local.settled(&batch_id).await;
    assert_eq!(
        (
            batch["status"].clone(),
            batch["records"].clone(),
            batch["inserted"].clone()
        ),
        (json!("loaded"), json!(RECORDS), json!(RECORDS))
    );
    assert!(count(&db, &chunks_sql).await > 1);
    let distinct = count(&db, "SELECT count(DISTINCT event_id) FROM public.events").await;
    assert_eq!((rows(&local).await, distinct), (RECORDS, RECORDS));
}

/// A gzip bomb (an upload that decodes to far more than compressed text
/// does) fails its batch within the delivery that meets it, with the
/// reason, leaves no decoded copy behind (chunks are on, so the loader
/// tries to make one) and puts nothing in the dead letters.
#[tokio::test]
async fn a_gzip_bomb_fails_its_batch_at_once_and_leaves_no_copy() {
    require!(Service::Postgres);
    let local = Local::start_with(
        "api:\n  max_inline_batch_kib: 16\n",
        &["--chunk-size", "4096"],
    )
    .await;
    let line = event(1, "bomb");
    let decoded = line.repeat(4_000_000 / line.len());
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(decoded.as_bytes()).expect("gzip");
    let bomb = e.finish().expect("gzip");
    assert!(decoded.len() > 200 * bomb.len(), "{}", bomb.len());
    std::fs::write(local.dir.path().join("bomb.ndjson.gz"), &bomb).expect("write");
    let out = client(
        &local,
        &[
            "push",
            "-d",
            "events",
            "bomb.ndjson.gz",
            "--wait",
            "--timeout",
            "120",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let limit = bomb.len() as u64 * 200;
    assert!(
        stdout.contains(&format!(
            ": the gzip stream decodes to more than {limit} bytes, the most it may (200 times its size, `api.max_decoded_ratio`)"
        )),
        "{stdout}"
    );
    assert_eq!(rows(&local).await, 0);
    let db = local.db().await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM pipeline.local_queue").await,
        0,
        "a message was left or dead-lettered"
    );
    let left: Vec<PathBuf> = walk(&local.dir.path().join("data"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("decoded"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `api.max_decoded_ratio` sets that bound: with 4, an ordinary gzip'd
/// batch (it compresses more than 4 times) fails with the reason, naming
/// the setting, and loads nothing.
#[tokio::test]
async fn the_decoded_ratio_is_the_specs() {
    require!(Service::Postgres);
    let local = Local::start_with(
        "api:\n  max_inline_batch_kib: 16\n  max_decoded_ratio: 4\n",
        &[],
    )
    .await;
    let body: String = (1..=2000).map(|i| event(i, "ratio")).collect();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(body.as_bytes()).expect("gzip");
    let gz = e.finish().expect("gzip");
    assert!(body.len() > 4 * gz.len(), "{} of {}", gz.len(), body.len());
    std::fs::write(local.dir.path().join("batch.ndjson.gz"), &gz).expect("write");
    let out = client(
        &local,
        &["push", "-d", "events", "batch.ndjson.gz", "--wait"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let limit = gz.len() as u64 * 4;
    assert!(
        stdout.contains(&format!(
            ": the gzip stream decodes to more than {limit} bytes, the most it may (4 times its size, `api.max_decoded_ratio`)"
        )),
        "{stdout}"
    );
    assert_eq!(rows(&local).await, 0);
}
