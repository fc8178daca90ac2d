//! Object storage for raw batches: S3 in AWS, a directory on this machine in
//! local mode. Objects carry a little metadata (batch id, record count,
//! SHA-256), as S3 user metadata does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::io::AsyncReadExt;

/// An error of the object store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object `{0}` does not exist")]
    NotFound(String),
    #[error("object store I/O on `{key}`: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("object key `{0}` is not allowed")]
    BadKey(String),
}

/// What is known of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub metadata: BTreeMap<String, String>,
}

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// Objects in a local directory: `<root>/<key>`, metadata beside it in
/// `<root>/.meta/<key>.json`. Writes go to a temporary file first and are
/// renamed into place, so a reader never sees half an object.
#[derive(Clone)]
pub struct LocalStore {
    root: PathBuf,
    notify: Option<std::sync::Arc<dyn Notify>>,
    signer: Option<Signer>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "local store in {}", self.root.display())
    }
}

/// Signs upload URLs of the local server, as S3 presigns them.
#[derive(Clone)]
pub struct Signer {
    /// Where the local server listens, such as `http://127.0.0.1:8080`.
    pub base_url: String,
    pub secret: Vec<u8>,
}

impl Signer {
    fn signature(&self, key: &str, expires: i64) -> String {
        use hmac::Mac;
        let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(format!("PUT\n{key}\n{expires}").as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

const READ_CHUNK: usize = 256 * 1024;

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore {
            root: root.into(),
            notify: None,
            signer: None,
        }
    }

    /// Announces every stored object (the local stand-in for S3 notifications).
    pub fn with_notify(mut self, notify: std::sync::Arc<dyn Notify>) -> LocalStore {
        self.notify = Some(notify);
        self
    }

    /// Lets the store hand out upload URLs of the local server.
    pub fn with_signer(mut self, signer: Signer) -> LocalStore {
        self.signer = Some(signer);
        self
    }

    /// A URL that accepts one PUT of the object until `expires` (Unix seconds).
    pub fn presign_put(&self, key: &str, expires: i64) -> Result<String, StoreError> {
        self.path(key)?;
        let signer = self.signer.as_ref().ok_or_else(|| StoreError::Io {
            key: key.to_string(),
            source: std::io::Error::other("this store takes no uploads"),
        })?;
        Ok(format!(
            "{}/local-uploads/{key}?expires={expires}&signature={}",
            signer.base_url,
            signer.signature(key, expires)
        ))
    }

    /// Whether an upload URL's signature is right and not expired.
    pub fn verify_upload(&self, key: &str, expires: i64, signature: &str, now: i64) -> bool {
        let Some(signer) = &self.signer else {
            return false;
        };
        now <= expires
            && constant_time_eq(
                signer.signature(key, expires).as_bytes(),
                signature.as_bytes(),
            )
    }

    async fn announce(&self, key: &str, size: u64) -> Result<(), StoreError> {
        if let Some(n) = &self.notify {
            n.stored(key, size).await.map_err(|e| StoreError::Io {
                key: key.to_string(),
                source: std::io::Error::other(e),
            })?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let valid = !key.is_empty()
            && !key.starts_with('/')
            && key
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
            && !key.starts_with(".meta");
        if !valid {
            return Err(StoreError::BadKey(key.to_string()));
        }
        Ok(self.root.join(key))
    }

    fn meta_path(&self, key: &str) -> Result<PathBuf, StoreError> {
        self.path(key)?;
        Ok(self.root.join(".meta").join(format!("{key}.json")))
    }

    fn io(key: &str) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            key: key.to_string(),
            source,
        }
    }

    /// Writes an object's metadata, creating the directories it needs;
    /// returns the object's path.
    async fn write_metadata(
        &self,
        key: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<PathBuf, StoreError> {
        let path = self.path(key)?;
        let meta = self.meta_path(key)?;
        for p in [&path, &meta] {
            if let Some(dir) = p.parent() {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(Self::io(key))?;
            }
        }
        let meta_json = serde_json::to_vec(metadata).unwrap_or_default();
        write_atomically(&meta, &meta_json)
            .await
            .map_err(Self::io(key))?;
        Ok(path)
    }

    /// Stores an object and its metadata.
    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let path = self.write_metadata(key, metadata).await?;
        let size = body.len() as u64;
        write_atomically(&path, &body)
            .await
            .map_err(Self::io(key))?;
        self.announce(key, size).await
    }

    /// Stores an object from a file on the same file system (a local
    /// upload), then announces it.
    pub async fn put_file(
        &self,
        key: &str,
        file: &Path,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let path = self.write_metadata(key, metadata).await?;
        tokio::fs::rename(file, &path)
            .await
            .map_err(Self::io(key))?;
        let size = tokio::fs::metadata(&path)
            .await
            .map_err(Self::io(key))?
            .len();
        self.announce(key, size).await
    }

    /// Size and metadata, or `None` when there is no such object.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let path = self.path(key)?;
        let size = match tokio::fs::metadata(&path).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io(key)(e)),
        };
        let metadata = match tokio::fs::read(self.meta_path(key)?).await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        };
        Ok(Some(ObjectInfo { size, metadata }))
    }

    /// The object's bytes from `start` (inclusive) to `end` (exclusive, or the end).
    pub async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<ByteStream, StoreError> {
        let path = self.path(key)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(key.to_string()));
            }
            Err(e) => return Err(Self::io(key)(e)),
        };
        if start > 0 {
            use tokio::io::AsyncSeekExt;
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(Self::io(key))?;
        }
        let remaining = end.map(|e| e.saturating_sub(start));
        let key = key.to_string();
        let stream = futures_util::stream::unfold(
            (file, remaining, key),
            |(mut file, remaining, key)| async move {
                let want = remaining.map_or(READ_CHUNK, |r| (r as usize).min(READ_CHUNK));
                if want == 0 {
                    return None;
                }
                let mut buf = vec![0u8; want];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        let remaining = remaining.map(|r| r - n as u64);
                        Some((Ok(Bytes::from(buf)), (file, remaining, key)))
                    }
                    Err(source) => Some((
                        Err(StoreError::Io {
                            key: key.clone(),
                            source,
                        }),
                        (file, Some(0), key),
                    )),
                }
            },
        );
        Ok(stream.boxed())
    }

    /// The whole object as a stream.
    pub async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        self.get_range(key, 0, None).await
    }

    /// Keys under a prefix, in order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Self::io(prefix)(e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(Self::io(prefix))? {
                let path = entry.path();
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let rel = rel.to_string_lossy().replace('\\', "/");
                if rel.starts_with(".meta") || rel.contains(".tmp-") {
                    continue;
                }
                if entry.file_type().await.map_err(Self::io(prefix))?.is_dir() {
                    dirs.push(path);
                } else if rel.starts_with(prefix) {
                    out.push(rel);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!("{name}.tmp-{}", uuid::Uuid::new_v4()));
    let mut file = tokio::fs::File::create(&tmp).await?;
    tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&tmp, path).await
}

/// Called after an object is stored, as S3 event notifications are in AWS.
pub trait Notify: Send + Sync {
    fn stored(
        &self,
        key: &str,
        size: u64,
    ) -> futures_util::future::BoxFuture<'_, Result<(), String>>;
}

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
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .set_metadata(Some(metadata.clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| s3_error(key, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
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
            Err(e) => Err(s3_error(key, aws_sdk_s3::error::DisplayErrorContext(e))),
        }
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

    /// A presigned PUT URL of the object, valid until `expires` (Unix seconds).
    pub async fn presign_put(&self, key: &str, expires: i64) -> Result<String, StoreError> {
        let seconds = (expires - chrono::Utc::now().timestamp()).max(1) as u64;
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(
            std::time::Duration::from_secs(seconds),
        )
        .map_err(|e| s3_error(key, e))?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| s3_error(key, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(request.uri().to_string())
    }
}

/// The store a function uses.
#[derive(Debug, Clone)]
pub enum Store {
    Local(LocalStore),
    S3(S3Store),
}

impl Store {
    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Local(store) => store.put(key, body, metadata).await,
            Store::S3(store) => store.put(key, body, metadata).await,
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match self {
            Store::Local(store) => store.head(key).await,
            Store::S3(store) => store.head(key).await,
        }
    }

    pub async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        self.get_range(key, 0, None).await
    }

    pub async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<ByteStream, StoreError> {
        match self {
            Store::Local(store) => store.get_range(key, start, end).await,
            Store::S3(store) => store.get_range(key, start, end).await,
        }
    }

    /// A URL that takes one PUT of the object until `expires` (Unix seconds).
    pub async fn presign_put(&self, key: &str, expires: i64) -> Result<String, StoreError> {
        match self {
            Store::Local(store) => store.presign_put(key, expires),
            Store::S3(store) => store.presign_put(key, expires).await,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
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
}

#[cfg(test)]
mod upload_tests {
    use super::*;

    #[test]
    fn upload_urls_are_signed_and_expire() {
        let store = LocalStore::new("/tmp/x").with_signer(Signer {
            base_url: "http://127.0.0.1:1".into(),
            secret: b"secret".to_vec(),
        });
        let url = store.presign_put("raw/a/b.ndjson", 100).expect("url");
        let signature = url.rsplit_once("signature=").map(|(_, s)| s).unwrap_or("");
        assert!(
            url.starts_with(
                "http://127.0.0.1:1/local-uploads/raw/a/b.ndjson?expires=100&signature="
            )
        );
        assert!(store.verify_upload("raw/a/b.ndjson", 100, signature, 99));
        assert!(!store.verify_upload("raw/a/b.ndjson", 100, signature, 101));
        assert!(!store.verify_upload("raw/a/c.ndjson", 100, signature, 99));
        assert!(!store.verify_upload("raw/a/b.ndjson", 101, signature, 99));
    }
}
