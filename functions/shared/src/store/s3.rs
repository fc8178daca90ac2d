//! The object store on S3, with presigned uploads (single and multipart).

use super::*;

/// Objects in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
}

fn s3_error(key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        key: key.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// An S3 error's code, such as `PreconditionFailed`.
fn error_code<E: aws_sdk_s3::error::ProvideErrorMetadata, R>(
    e: &aws_sdk_s3::error::SdkError<E, R>,
) -> Option<&str> {
    e.as_service_error()
        .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code)
}

impl S3Store {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> S3Store {
        S3Store {
            client,
            bucket: bucket.into(),
        }
    }

    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .set_metadata(Some(metadata.clone().into_iter().collect()))
            // Never over a stored object (S3 conditional writes: 412).
            .if_none_match("*")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("PreconditionFailed") => {
                same_data(key, metadata, self.head(key).await?)
            }
            Err(e) => Err(s3_error(key, aws_sdk_s3::error::DisplayErrorContext(e))),
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectInfo {
                size: out.content_length().unwrap_or(0).max(0) as u64,
                metadata: out
                    .metadata()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 403) => {
                match self.listed(key).await? {
                    false => Ok(None),
                    true => Err(s3_error(key, aws_sdk_s3::error::DisplayErrorContext(e))),
                }
            }
            Err(e) => Err(s3_error(key, aws_sdk_s3::error::DisplayErrorContext(e))),
        }
    }

    /// Whether `key` is in the bucket, from a listing of its own prefix.
    /// HeadObject of a missing key answers 404 only to a caller that may
    /// list the bucket, and 403 to others (S3's HeadObject reference); the
    /// functions may list only their prefixes (an `s3:prefix` condition),
    /// and nothing documents that a HEAD gives that condition a value. A
    /// listing does (`s3:prefix` is ListObjectsV2's `prefix`), so a 403 is
    /// told apart from a missing key here: the key is the first listed
    /// under its own name, or it is not there.
    async fn listed(&self, key: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(key)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| s3_error(key, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(out.contents().iter().any(|o| o.key() == Some(key)))
    }

    pub async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<ByteStream, StoreError> {
        if end.is_some_and(|end| end <= start) {
            return Ok(futures_util::stream::empty().boxed());
        }
        let mut request = self.client.get_object().bucket(&self.bucket).key(key);
        if start > 0 || end.is_some() {
            let last = end.map(|e| (e - 1).to_string()).unwrap_or_default();
            request = request.range(format!("bytes={start}-{last}"));
        }
        let out = request.send().await.map_err(|e| {
            if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                StoreError::NotFound(key.to_string())
            } else {
                s3_error(key, aws_sdk_s3::error::DisplayErrorContext(e))
            }
        })?;
        let key = key.to_string();
        let stream = futures_util::stream::unfold((out.body, key), |(mut body, key)| async move {
            match body.try_next().await {
                Ok(Some(bytes)) => Some((Ok(bytes), (body, key))),
                Ok(None) => None,
                Err(e) => Some((
                    Err(s3_error(&key, e)),
                    (aws_sdk_s3::primitives::ByteStream::from_static(b""), key),
                )),
            }
        });
        Ok(stream.boxed())
    }

    /// Starts a multipart upload of the object: its upload id.
    async fn create_upload(
        &self,
        key: &str,
        metadata: Option<&BTreeMap<String, String>>,
    ) -> Result<String, StoreError> {
        let started = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_metadata(metadata.map(|m| m.clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| s3_error(key, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(started
            .upload_id()
            .ok_or_else(|| s3_error(key, "S3 answered no upload id"))?
            .to_string())
    }

    /// Stores a stream's bytes with a multipart upload, aborted when the
    /// stream or a part fails.
    pub async fn put_stream(
        &self,
        key: &str,
        mut stream: ByteStream,
        metadata: &BTreeMap<String, String>,
    ) -> Result<u64, StoreError> {
        let upload_id = self.create_upload(key, Some(metadata)).await?;
        let uploaded = async {
            let mut parts = Vec::new();
            let mut buffer = bytes::BytesMut::new();
            let mut size = 0u64;
            loop {
                let piece = stream.next().await.transpose()?;
                if let Some(piece) = &piece {
                    buffer.extend_from_slice(piece);
                    size += piece.len() as u64;
                }
                let last = piece.is_none();
                // Every part but the last takes at least 5 MiB; an empty
                // object is one empty part.
                if buffer.len() >= STREAM_PART_BYTES
                    || (last && (!buffer.is_empty() || parts.is_empty()))
                {
                    if parts.len() as u64 >= MAX_PARTS {
                        return Err(s3_error(
                            key,
                            format!("more than {MAX_PARTS} parts of {STREAM_PART_BYTES} bytes"),
                        ));
                    }
                    let number = parts.len() as u32 + 1;
                    let out = self
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(&upload_id)
                        .part_number(number as i32)
                        .body(aws_sdk_s3::primitives::ByteStream::from(
                            buffer.split().freeze(),
                        ))
                        .send()
                        .await
                        .map_err(|e| s3_error(key, aws_sdk_s3::error::DisplayErrorContext(e)))?;
                    parts.push(CompletedPart {
                        part_number: number,
                        etag: out.e_tag().unwrap_or_default().to_string(),
                    });
                }
                if last {
                    break;
                }
            }
            self.complete_multipart(key, &upload_id, &parts).await?;
            Ok(size)
        }
        .await;
        if uploaded.is_err() {
            // Best effort: the bucket's lifecycle rule aborts what is left.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        uploaded
    }

    /// A presigned PUT URL of the object, valid until `expires` (Unix seconds).
    pub async fn presign_put(&self, key: &str, expires: i64) -> Result<String, StoreError> {
        let config = presigning(key, expires)?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            // Signed into the URL: the client must send it, and S3 then
            // refuses to replace a stored object (412).
            .if_none_match(pipeline_contract::UPLOAD_CONDITION.1)
            .presigned(config)
            .await
            .map_err(|e| s3_error(key, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(request.uri().to_string())
    }

    /// Starts a multipart upload and presigns a PUT URL for each part.
    pub async fn start_multipart(
        &self,
        key: &str,
        size: u64,
        part_bytes: u64,
        expires: i64,
    ) -> Result<MultipartUpload, StoreError> {
        let upload_id = self.create_upload(key, None).await?;
        let (mut parts, first) = unsigned_parts(size, part_bytes);
        let urls = self.presign_parts(key, &upload_id, &first, expires).await?;
        for (part, url) in parts.iter_mut().zip(urls) {
            part.url = Some(url);
        }
        Ok(MultipartUpload { upload_id, parts })
    }

    /// Presigned UploadPart URLs of some parts of an upload, in the order asked.
    pub async fn presign_parts(
        &self,
        key: &str,
        upload_id: &str,
        part_numbers: &[u32],
        expires: i64,
    ) -> Result<Vec<String>, StoreError> {
        let config = presigning(key, expires)?;
        let mut urls = Vec::with_capacity(part_numbers.len());
        for &part_number in part_numbers {
            let request = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(part_number as i32)
                .presigned(config.clone())
                .await
                .map_err(|e| s3_error(key, aws_sdk_s3::error::DisplayErrorContext(e)))?;
            urls.push(request.uri().to_string());
        }
        Ok(urls)
    }

    /// Completes a multipart upload; S3 then announces the object.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart as S3Part};
        let parts = parts
            .iter()
            .map(|p| {
                S3Part::builder()
                    .part_number(p.part_number as i32)
                    .e_tag(&p.etag)
                    .build()
            })
            .collect();
        let result = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            // Never over a stored object (S3 conditional writes: 412).
            .if_none_match("*")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let code = error_code(&e).map(str::to_string);
                match code.as_deref() {
                    Some(
                        "NoSuchUpload" | "InvalidPart" | "InvalidPartOrder" | "EntityTooSmall"
                        | "MalformedXML",
                    ) => Err(StoreError::InvalidUpload(format!(
                        "S3 refused the completion: {}",
                        aws_sdk_s3::error::DisplayErrorContext(e)
                    ))),
                    Some("PreconditionFailed") => Err(StoreError::InvalidUpload(
                        "the batch's object is stored already; an upload cannot replace it".into(),
                    )),
                    _ => Err(s3_error(key, aws_sdk_s3::error::DisplayErrorContext(e))),
                }
            }
        }
    }
}

/// Presigning that lasts until `expires` (Unix seconds).
fn presigning(
    key: &str,
    expires: i64,
) -> Result<aws_sdk_s3::presigning::PresigningConfig, StoreError> {
    let seconds = (expires - chrono::Utc::now().timestamp()).max(1) as u64;
    aws_sdk_s3::presigning::PresigningConfig::expires_in(std::time::Duration::from_secs(seconds))
        .map_err(|e| s3_error(key, e))
}
