use super::*;

#[tokio::test]
async fn put_head_get_and_ranges() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::new(dir.path());
    let meta = BTreeMap::from([("records".to_string(), "2".to_string())]);
    store
        .put("raw/a/b.ndjson", Bytes::from_static(b"0123456789"), &meta)
        .await
        .expect("put");
    let info = store.head("raw/a/b.ndjson").await.expect("head");
    assert_eq!(
        info,
        Some(ObjectInfo {
            size: 10,
            metadata: meta.clone()
        })
    );
    assert_eq!(store.head("raw/a/none").await.expect("head"), None);
    let collect = |s: ByteStream| async move {
        let parts: Vec<Bytes> = s.map(|r| r.expect("chunk")).collect().await;
        parts.concat()
    };
    assert_eq!(
        collect(store.get("raw/a/b.ndjson").await.expect("get")).await,
        b"0123456789"
    );
    assert_eq!(
        collect(
            store
                .get_range("raw/a/b.ndjson", 3, Some(7))
                .await
                .expect("get")
        )
        .await,
        b"3456"
    );
    assert_eq!(
        store.list("raw/").await.expect("list"),
        vec!["raw/a/b.ndjson"]
    );
    assert!(matches!(
        store.get("raw/zzz").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.put("../x", Bytes::new(), &meta).await,
        Err(StoreError::BadKey(_))
    ));
}

mod uploads {
    use super::*;

    #[test]
    fn upload_urls_are_signed_and_expire() {
        let store = LocalStore::new("/tmp/x").with_signer(Signer {
            base_url: "http://127.0.0.1:1".into(),
            secret: b"secret".to_vec(),
        });
        let url = store
            .presign_put("raw/a/b.ndjson", 100, UploadTarget::Whole)
            .expect("url");
        let signature = url.rsplit_once("signature=").map(|(_, s)| s).unwrap_or("");
        assert!(
            url.starts_with(
                "http://127.0.0.1:1/local-uploads/raw/a/b.ndjson?expires=100&signature="
            )
        );
        let whole = UploadTarget::Whole;
        assert!(store.verify_upload("raw/a/b.ndjson", whole, 100, signature, 99));
        assert!(!store.verify_upload("raw/a/b.ndjson", whole, 100, signature, 101));
        assert!(!store.verify_upload("raw/a/c.ndjson", whole, 100, signature, 99));
        assert!(!store.verify_upload("raw/a/b.ndjson", whole, 101, signature, 99));
        let part = UploadTarget::Part {
            upload_id: "u1",
            part_number: 1,
        };
        assert!(!store.verify_upload("raw/a/b.ndjson", part, 100, signature, 99));
    }

    #[test]
    fn parts_cover_the_object_and_stay_under_the_part_limit() {
        assert_eq!(plan_parts(10, 4), vec![(1, 0, 4), (2, 4, 4), (3, 8, 2)]);
        assert_eq!(plan_parts(8, 4), vec![(1, 0, 4), (2, 4, 4)]);
        assert_eq!(plan_parts(3, 4), vec![(1, 0, 3)]);
        let parts = plan_parts(MAX_OBJECT_BYTES, DEFAULT_UPLOAD_PART_BYTES);
        assert!(parts.len() as u64 <= MAX_PARTS);
        let last = parts.last().expect("parts");
        assert_eq!(last.1 + last.2, MAX_OBJECT_BYTES);
    }

    struct Announced(std::sync::Mutex<Vec<(String, u64)>>);

    impl Notify for Announced {
        fn stored(
            &self,
            key: &str,
            size: u64,
        ) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
            if let Ok(mut seen) = self.0.lock() {
                seen.push((key.to_string(), size));
            }
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn multipart_uploads_join_their_parts_in_order() {
        use sha2::Digest;
        let dir = tempfile::tempdir().expect("temp dir");
        let announced = std::sync::Arc::new(Announced(Default::default()));
        let store = LocalStore::new(dir.path().join("objects"))
            .with_notify(announced.clone())
            .with_signer(Signer {
                base_url: "http://127.0.0.1:1".into(),
                secret: b"secret".to_vec(),
            });
        let key = "raw/a/b.ndjson";
        let upload = store.start_multipart(key, 10, 4, 100).await.expect("start");
        assert_eq!(upload.parts.len(), 3);
        assert!(
            upload.parts[1]
                .url
                .as_deref()
                .unwrap_or("")
                .contains(&format!(
                    "/local-uploads/{key}?uploadId={}&partNumber=2&expires=100&signature=",
                    upload.upload_id
                ))
        );
        let body = b"0123456789";
        let mut completed = Vec::new();
        // Parts may arrive in any order.
        for part in upload.parts.iter().rev() {
            let bytes = &body[part.offset as usize..(part.offset + part.size) as usize];
            let file = dir.path().join(format!("part-{}", part.part_number));
            std::fs::write(&file, bytes).expect("write part");
            store
                .put_part(key, &upload.upload_id, part.part_number, &file)
                .await
                .expect("part");
            completed.insert(
                0,
                CompletedPart {
                    part_number: part.part_number,
                    etag: format!("\"{}\"", hex(&sha2::Sha256::digest(bytes))),
                },
            );
        }
        let meta = BTreeMap::from([("batch-id".to_string(), "b".to_string())]);

        let mut wrong = completed.clone();
        wrong[1].etag = "\"00\"".into();
        let refused = store
            .complete_multipart(key, &upload.upload_id, &wrong, &meta)
            .await;
        assert!(
            matches!(&refused, Err(StoreError::InvalidUpload(m)) if m == "part 2's ETag does not match the part uploaded"),
            "{refused:?}"
        );
        let reversed: Vec<_> = completed.iter().rev().cloned().collect();
        assert!(matches!(
            store
                .complete_multipart(key, &upload.upload_id, &reversed, &meta)
                .await,
            Err(StoreError::InvalidUpload(_))
        ));
        assert!(store.head(key).await.expect("head").is_none());

        store
            .complete_multipart(key, &upload.upload_id, &completed, &meta)
            .await
            .expect("complete");
        let info = store.head(key).await.expect("head").expect("object");
        assert_eq!(info.size, 10);
        assert_eq!(
            info.metadata.get("sha256"),
            Some(&hex(&sha2::Sha256::digest(body)))
        );
        assert_eq!(
            std::fs::read(dir.path().join("objects").join(key)).expect("read"),
            body
        );
        assert_eq!(
            *announced.0.lock().expect("lock"),
            vec![(key.to_string(), 10)]
        );
        assert_eq!(store.list("").await.expect("list"), vec![key.to_string()]);
        // The upload is gone once complete.
        let again = store
            .complete_multipart(key, &upload.upload_id, &completed, &meta)
            .await;
        assert!(
            matches!(&again, Err(StoreError::InvalidUpload(m)) if m.starts_with("there is no upload")),
            "{again:?}"
        );
        assert!(matches!(
            store.put_part(key, "../x", 1, dir.path()).await,
            Err(StoreError::InvalidUpload(_))
        ));
    }
}

#[tokio::test]
async fn a_stream_is_stored_whole_or_not_at_all() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::new(dir.path());
    let meta = BTreeMap::from([("decoded-from".to_string(), "raw/a/b.ndjson.gz".to_string())]);
    let pieces = |end: Option<StoreError>| {
        futures_util::stream::iter(
            [
                Ok(Bytes::from_static(b"01234")),
                Ok(Bytes::from_static(b"56789")),
            ]
            .into_iter()
            .chain(end.map(Err))
            .collect::<Vec<_>>(),
        )
        .boxed()
    };
    let key = "decoded/a/b.ndjson";
    assert_eq!(
        store
            .put_stream(key, pieces(None), &meta)
            .await
            .expect("put"),
        10
    );
    let info = store.head(key).await.expect("head").expect("stored");
    assert_eq!((info.size, info.metadata), (10, meta.clone()));
    let parts: Vec<Bytes> = store
        .get(key)
        .await
        .expect("get")
        .map(|r| r.expect("chunk"))
        .collect()
        .await;
    assert_eq!(parts.concat(), b"0123456789");

    let failed = "decoded/a/c.ndjson";
    let outcome = store
        .put_stream(
            failed,
            pieces(Some(StoreError::Corrupt("corrupt at byte 3".into()))),
            &meta,
        )
        .await;
    assert!(
        matches!(outcome, Err(StoreError::Corrupt(_))),
        "{outcome:?}"
    );
    assert_eq!(store.head(failed).await.expect("head"), None);
    // Nothing of it is left beside the objects.
    let names: Vec<String> = std::fs::read_dir(dir.path().join("decoded/a"))
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["b.ndjson"]);
}
