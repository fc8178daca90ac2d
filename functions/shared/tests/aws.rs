//! The AWS implementations (S3 object store, SQS chunk queue) against moto,
//! started on a free loopback port.
//! The pinned moto comes from `.ci/tools.sh`; `pipeline-testkit` starts it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use pipeline_shared::store::{ByteStream, CompletedPart, ObjectInfo, S3Store, Store, StoreError};

use pipeline_testkit::moto::start as start_moto;
use pipeline_testkit::{Service, require};

async fn sqs(endpoint: &str) -> aws_sdk_sqs::Client {
    let credentials =
        aws_sdk_sqs::config::Credentials::new("testing", "testing", None, None, "tests");
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("eu-west-1"))
        .http_client(pipeline_shared::runtime::https_client())
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

async fn client(endpoint: &str) -> aws_sdk_s3::Client {
    let credentials =
        aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "tests");
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("eu-west-1"))
        .http_client(pipeline_shared::runtime::https_client())
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The store of a new bucket `raw`.
async fn raw_bucket(endpoint: &str) -> Store {
    let s3 = client(endpoint).await;
    s3.create_bucket()
        .bucket("raw")
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await
        .expect("create bucket");
    Store::S3(S3Store::new(s3, "raw"))
}

async fn collect(stream: ByteStream) -> Vec<u8> {
    let parts: Vec<Bytes> = stream.map(|r| r.expect("chunk")).collect().await;
    parts.concat()
}

/// A plain HTTP client, on the ring provider the functions use.
fn http() -> reqwest::Client {
    pipeline_shared::runtime::install_crypto_provider();
    reqwest::Client::new()
}

#[tokio::test]
async fn s3_store_puts_reads_ranges_and_presigns() {
    require!(Service::Moto);
    let moto = start_moto();
    let store = raw_bucket(&moto.url).await;
    let meta = BTreeMap::from([
        ("records".to_string(), "2".to_string()),
        ("sha256".to_string(), "ab".to_string()),
    ]);
    let key = "raw/events/2024-01-01/x.ndjson";
    store
        .put(key, Bytes::from_static(b"line one\nline two\n"), &meta)
        .await
        .expect("put");
    assert_eq!(
        store.head(key).await.expect("head"),
        Some(ObjectInfo {
            size: 18,
            metadata: meta.clone()
        })
    );
    assert_eq!(store.head("raw/none").await.expect("head"), None);
    assert_eq!(
        collect(store.get(key).await.expect("get")).await,
        b"line one\nline two\n"
    );
    assert_eq!(
        collect(store.get_range(key, 9, Some(13)).await.expect("range")).await,
        b"line"
    );
    assert_eq!(
        collect(store.get_range(key, 9, None).await.expect("range")).await,
        b"line two\n"
    );
    assert_eq!(
        collect(store.get_range(key, 5, Some(5)).await.expect("empty")).await,
        b""
    );
    assert!(matches!(
        store.get("raw/none").await,
        Err(StoreError::NotFound(_))
    ));

    // A put never replaces a stored object (`If-None-Match: *`): the same
    // data again is taken for a retry of the first put, other data refused.
    store
        .put(key, Bytes::from_static(b"line one\nline two\n"), &meta)
        .await
        .expect("a retried put");
    let other = BTreeMap::from([("sha256".to_string(), "cd".to_string())]);
    assert!(matches!(
        store.put(key, Bytes::from_static(b"other\n"), &other).await,
        Err(StoreError::Exists(k)) if k == key
    ));
    assert_eq!(
        collect(store.get(key).await.expect("get")).await,
        b"line one\nline two\n"
    );

    // A presigned PUT stores an object without credentials, with the
    // header signed into its URL; a second PUT cannot replace it (moto
    // answers 412 as S3 does; it does not check signatures, so a PUT
    // without the header is not refused here as S3 refuses it).
    let expires = chrono::Utc::now().timestamp() + 600;
    let url = store
        .presign_put("raw/events/2024-01-01/up.ndjson", expires)
        .await
        .expect("presign");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    assert!(url.contains("if-none-match"), "signed into the URL: {url}");
    let (name, value) = pipeline_contract::UPLOAD_CONDITION;
    let put = |body: &'static str| http().put(&url).header(name, value).body(body).send();
    let response = put("uploaded\n").await.expect("PUT");
    assert!(response.status().is_success(), "{}", response.status());
    let again = put("replaced\n").await.expect("PUT");
    assert_eq!(again.status().as_u16(), 412);
    assert_eq!(
        collect(
            store
                .get("raw/events/2024-01-01/up.ndjson")
                .await
                .expect("get")
        )
        .await,
        b"uploaded\n"
    );
}

#[tokio::test]
async fn s3_multipart_uploads_go_through_presigned_part_urls() {
    require!(Service::Moto);
    let moto = start_moto();
    let store = raw_bucket(&moto.url).await;
    let key = "raw/events/2024-01-01/big.ndjson";
    // S3 takes parts of at least 5 MiB but the last.
    let part_bytes = 5 << 20;
    let body: Vec<u8> = (0..(11 << 20)).map(|i| b'a' + (i % 26) as u8).collect();
    let expires = chrono::Utc::now().timestamp() + 600;
    let upload = store
        .start_multipart(key, body.len() as u64, part_bytes, expires)
        .await
        .expect("start");
    let sizes: Vec<u64> = upload.parts.iter().map(|p| p.size).collect();
    assert_eq!(sizes, vec![5 << 20, 5 << 20, 1 << 20]);
    let http = http();
    let mut completed = Vec::new();
    // The last part's URL comes again from presign_parts, as for parts
    // beyond the first page of an upload's answer.
    let again = store
        .presign_parts(key, &upload.upload_id, &[3], expires)
        .await
        .expect("presign parts");
    for part in &upload.parts {
        let url = if part.part_number == 3 {
            again[0].clone()
        } else {
            part.url.clone().expect("url")
        };
        assert!(url.contains("X-Amz-Signature="), "{url}");
        assert!(url.contains(&format!("partNumber={}", part.part_number)));
        let bytes = body[part.offset as usize..(part.offset + part.size) as usize].to_vec();
        let response = http.put(&url).body(bytes).send().await.expect("PUT part");
        assert!(response.status().is_success(), "{}", response.status());
        let etag = response.headers()["etag"]
            .to_str()
            .expect("etag")
            .to_string();
        completed.push(CompletedPart {
            part_number: part.part_number,
            etag,
        });
    }
    // A wrong ETag is refused as an invalid upload, not a storage failure.
    let mut wrong = completed.clone();
    wrong[0].etag = "\"0123\"".into();
    let refused = store
        .complete_multipart(key, &upload.upload_id, &wrong, &BTreeMap::new())
        .await;
    assert!(
        matches!(refused, Err(StoreError::InvalidUpload(_))),
        "{refused:?}"
    );
    store
        .complete_multipart(key, &upload.upload_id, &completed, &BTreeMap::new())
        .await
        .expect("complete");
    assert_eq!(collect(store.get(key).await.expect("get")).await, body);

    // Another upload to the same key cannot replace the stored object
    // (`If-None-Match: *` on the completion; S3 answers 412).
    let other = store
        .start_multipart(key, 1, part_bytes, expires)
        .await
        .expect("start");
    let url = other.parts[0].url.clone().expect("url");
    let response = http
        .put(&url)
        .body(b"x".to_vec())
        .send()
        .await
        .expect("PUT part");
    assert!(response.status().is_success(), "{}", response.status());
    let etag = response.headers()["etag"]
        .to_str()
        .expect("etag")
        .to_string();
    let replaced = store
        .complete_multipart(
            key,
            &other.upload_id,
            &[CompletedPart {
                part_number: 1,
                etag,
            }],
            &BTreeMap::new(),
        )
        .await;
    match replaced {
        Err(StoreError::InvalidUpload(reason)) => assert_eq!(
            reason,
            "the batch's object is stored already; an upload cannot replace it"
        ),
        other => panic!("expected a refusal, found {other:?}"),
    }
    assert_eq!(collect(store.get(key).await.expect("get")).await, body);
}

#[tokio::test]
async fn chunk_messages_go_to_sqs_in_batches_of_ten() {
    require!(Service::Moto);
    use pipeline_shared::chunks::{ChunkBody, ChunkMessage, ChunkQueue, SqsChunkQueue};
    let moto = start_moto();
    let client = sqs(&moto.url).await;
    let url = client
        .create_queue()
        .queue_name("loader")
        .send()
        .await
        .expect("queue")
        .queue_url()
        .unwrap_or("")
        .to_string();
    let batch_id = uuid::Uuid::now_v7();
    let messages: Vec<ChunkMessage> = (0..12)
        .map(|chunk| ChunkMessage {
            batch_id,
            dataset: "events".into(),
            key: "raw/events/x.ndjson".into(),
            chunk,
            start: u64::from(chunk) * 100,
            end: u64::from(chunk) * 100 + 100,
            header: (chunk > 0).then(|| "a,b".to_string()),
        })
        .collect();
    SqsChunkQueue::new(client.clone(), &url)
        .send(messages.clone())
        .await
        .expect("send");
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.len() < 12 {
        assert!(
            Instant::now() < deadline,
            "only {} messages arrived",
            received.len()
        );
        let out = client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive");
        for m in out.messages() {
            let body: ChunkBody = serde_json::from_str(m.body().unwrap_or("")).expect("chunk body");
            received.push(body.chunk);
            client
                .delete_message()
                .queue_url(&url)
                .receipt_handle(m.receipt_handle().unwrap_or(""))
                .send()
                .await
                .expect("delete");
        }
    }
    received.sort_by_key(|m| m.chunk);
    assert_eq!(received, messages);
}

#[tokio::test]
async fn the_administrators_secret_is_read_from_secrets_manager() {
    require!(Service::Moto);
    use pipeline_shared::runtime::{AdminSecret, admin_secret};
    let moto = start_moto();
    let credentials =
        aws_sdk_secretsmanager::config::Credentials::new("testing", "testing", None, None, "tests");
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(aws_sdk_secretsmanager::config::Region::new("eu-west-1"))
        .http_client(pipeline_shared::runtime::https_client())
        .endpoint_url(&moto.url)
        .credentials_provider(credentials)
        .build();
    let client = aws_sdk_secretsmanager::Client::from_conf(config);
    // As RDS leaves it once the secret is attached to the instance.
    let value = r#"{"username":"pipeline_admin","password":"p@ss","engine":"postgres","host":"db.example.internal","port":5432,"dbInstanceIdentifier":"db"}"#;
    let arn = client
        .create_secret()
        .name("pipeline-dev-db")
        .secret_string(value)
        .send()
        .await
        .expect("create secret")
        .arn()
        .unwrap_or("")
        .to_string();
    let secret = admin_secret(&client, &arn).await.expect("secret");
    assert_eq!(
        secret,
        AdminSecret {
            username: "pipeline_admin".into(),
            password: "p@ss".into(),
            host: "db.example.internal".into(),
            port: 5432,
        }
    );
    assert!(
        !format!("{secret:?}").contains("p@ss"),
        "the password must not show in logs"
    );
    assert!(admin_secret(&client, "no-such-secret").await.is_err());
}

/// `count` pieces of 1 MiB, each filled with its number, then `end`.
fn pieces(count: u8, end: Option<StoreError>) -> ByteStream {
    let items = (0..count)
        .map(|i| Ok(Bytes::from(vec![b'a' + i % 26; 1 << 20])))
        .chain(end.map(Err));
    futures_util::stream::iter(items.collect::<Vec<_>>()).boxed()
}

/// A stream stored on S3 in 16 MiB parts, whole; one that fails stores
/// nothing and leaves no upload open (moto keeps multipart state as S3
/// does, so ListMultipartUploads shows an upload left behind).
#[tokio::test]
async fn s3_store_puts_a_stream_whole_or_not_at_all() {
    require!(Service::Moto);
    let moto = start_moto();
    let store = raw_bucket(&moto.url).await;
    let meta = BTreeMap::from([("decoded-from".to_string(), "raw/a.ndjson.gz".to_string())]);
    let key = "decoded/events/2024-01-01/x.ndjson";
    // 17 MiB: one full part and a last one.
    let size = store
        .put_stream(key, pieces(17, None), &meta)
        .await
        .expect("put a stream");
    assert_eq!(size, 17 << 20);
    assert_eq!(
        store.head(key).await.expect("head"),
        Some(ObjectInfo {
            size: 17 << 20,
            metadata: meta.clone()
        })
    );
    let body = collect(store.get(key).await.expect("get")).await;
    let expected: Vec<u8> = (0..17u8).flat_map(|i| vec![b'a' + i; 1 << 20]).collect();
    assert!(body == expected, "the object differs from the stream");

    // An empty stream is an empty object.
    let empty = "decoded/events/2024-01-01/empty.ndjson";
    assert_eq!(
        store
            .put_stream(empty, pieces(0, None), &meta)
            .await
            .expect("put nothing"),
        0
    );
    assert_eq!(
        store.head(empty).await.expect("head").map(|i| i.size),
        Some(0)
    );

    // A stream that fails after a part was sent.
    let failed = "decoded/events/2024-01-01/failed.ndjson";
    let outcome = store
        .put_stream(
            failed,
            pieces(
                20,
                Some(StoreError::Corrupt(
                    "the gzip stream is corrupt at byte 9".into(),
                )),
            ),
            &meta,
        )
        .await;
    assert!(
        matches!(&outcome, Err(StoreError::Corrupt(reason)) if reason == "the gzip stream is corrupt at byte 9"),
        "{outcome:?}"
    );
    assert_eq!(store.head(failed).await.expect("head"), None);
    let open = client(&moto.url)
        .await
        .list_multipart_uploads()
        .bucket("raw")
        .send()
        .await
        .expect("list uploads");
    assert!(open.uploads().is_empty(), "{:?}", open.uploads());
}

/// A stand-in for S3 as it answers a caller that may list only some
/// prefixes of the bucket (an `s3:prefix` condition): HeadObject of a
/// missing key is 403, as S3's HeadObject reference says for a caller
/// without `s3:ListBucket`, and so is HeadObject of `denied`, an object the
/// caller may not read; ListObjectsV2 lists the stored keys under the
/// prefix asked for. moto answers 404 whatever the caller's policy, so the
/// test serves these answers itself.
async fn prefix_only_s3(stored: &'static [&'static str], denied: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).to_string();
                        seen.drain(..end + 4);
                        let answer = s3_answer(&head, stored, denied);
                        if socket.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    endpoint
}

/// The answer of [`prefix_only_s3`] to a request's head.
fn s3_answer(head: &str, stored: &[&str], denied: &str) -> String {
    let target = head.split(' ').nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let key = path.strip_prefix("/raw/").unwrap_or("");
    if head.starts_with("HEAD ") {
        return if stored.contains(&key) && key != denied {
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-amz-meta-sha256: abc\r\n\r\n".into()
        } else {
            "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n".into()
        };
    }
    let prefix = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "prefix")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let contents: String = stored
        .iter()
        .filter(|k| k.starts_with(&prefix))
        .take(1)
        .map(|k| format!("<Contents><Key>{k}</Key><Size>3</Size></Contents>"))
        .collect();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><Name>raw</Name><Prefix>{prefix}</Prefix><KeyCount>{}</KeyCount><MaxKeys>1</MaxKeys><IsTruncated>false</IsTruncated>{contents}</ListBucketResult>",
        usize::from(!contents.is_empty())
    );
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A missing object is `None` whether S3 answers its HEAD with 404 or,
/// to a caller that may list only some prefixes, with 403; a 403 for an
/// object that is there is still an error. Before, the 403 was an error,
/// so every compressed upload would fail if a HEAD gave the functions'
/// `s3:prefix` condition no value.
#[tokio::test]
async fn a_missing_object_is_missing_when_its_head_is_forbidden() {
    const STORED: &[&str] = &[
        "raw/events/b.ndjson",
        "raw/events/b.ndjson.part",
        "raw/events/secret",
    ];
    let endpoint = prefix_only_s3(STORED, "raw/events/secret").await;
    let store = Store::S3(S3Store::new(client(&endpoint).await, "raw"));
    let found = store.head("raw/events/b.ndjson").await.expect("head");
    assert_eq!(found.map(|o| o.size), Some(3));
    // Listed under its prefix is a longer key, not this one.
    assert_eq!(store.head("raw/events/b.nd").await.expect("head"), None);
    assert_eq!(store.head("raw/events/none").await.expect("head"), None);
    let denied = store.head("raw/events/secret").await;
    assert!(matches!(denied, Err(StoreError::Io { .. })), "{denied:?}");
}
