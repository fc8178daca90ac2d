//! The object store on a local folder, as `pipeline local` runs it: uploads
//! through signed URLs of its own, like S3's presigned ones.

use super::*;

/// Objects in a local directory: `<root>/<key>`, metadata beside it in
/// `<root>/.meta/<key>.json`. Writes go to a temporary file first and are
/// renamed into place, so a reader never sees half an object.
#[derive(Clone)]
pub struct LocalStore {
    root: PathBuf,
    notify: Option<std::sync::Arc<dyn Notify>>,
    signer: Option<Signer>,
    /// Upload URLs still to sign as expired already (a fault injected for
    /// tests: a client slower than the URLs' lifetime).
    expired: std::sync::Arc<std::sync::atomic::AtomicU32>,
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

/// What an upload URL lets its holder PUT: a whole object, or one part of a
/// multipart upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadTarget<'a> {
    Whole,
    Part {
        upload_id: &'a str,
        part_number: u32,
    },
}

impl Signer {
    fn signature(&self, key: &str, expires: i64, target: UploadTarget<'_>) -> String {
        use hmac::Mac;
        let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(format!("PUT\n{key}\n{expires}").as_bytes());
        if let UploadTarget::Part {
            upload_id,
            part_number,
        } = target
        {
            mac.update(format!("\n{upload_id}\n{part_number}").as_bytes());
        }
        hex(&mac.finalize().into_bytes())
    }
}

const READ_CHUNK: usize = 256 * 1024;

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore {
            root: root.into(),
            notify: None,
            signer: None,
            expired: Default::default(),
        }
    }

    /// Signs the next `count` upload URLs as already expired, as if their
    /// client had been slower than their lifetime (a fault for tests).
    pub fn with_expired_urls(self, count: u32) -> LocalStore {
        self.expired
            .store(count, std::sync::atomic::Ordering::SeqCst);
        self
    }

    /// `expires`, or a moment past for a URL signed expired.
    fn expiry(&self, expires: i64) -> i64 {
        use std::sync::atomic::Ordering;
        let take = self
            .expired
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match take {
            Ok(_) => chrono::Utc::now().timestamp() - 1,
            Err(_) => expires,
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

    /// A URL that accepts one PUT of the object, or of one part of it,
    /// until `expires` (Unix seconds).
    pub fn presign_put(
        &self,
        key: &str,
        expires: i64,
        target: UploadTarget<'_>,
    ) -> Result<String, StoreError> {
        self.path(key)?;
        let signer = self.signer.as_ref().ok_or_else(|| StoreError::Io {
            key: key.to_string(),
            source: std::io::Error::other("this store takes no uploads"),
        })?;
        let expires = self.expiry(expires);
        let part = match target {
            UploadTarget::Whole => String::new(),
            UploadTarget::Part {
                upload_id,
                part_number,
            } => format!("uploadId={upload_id}&partNumber={part_number}&"),
        };
        Ok(format!(
            "{}/local-uploads/{key}?{part}expires={expires}&signature={}",
            signer.base_url,
            signer.signature(key, expires, target)
        ))
    }

    /// Whether an upload URL's signature is right and not expired.
    pub fn verify_upload(
        &self,
        key: &str,
        target: UploadTarget<'_>,
        expires: i64,
        signature: &str,
        now: i64,
    ) -> bool {
        let Some(signer) = &self.signer else {
            return false;
        };
        now <= expires
            && constant_time_eq(
                signer.signature(key, expires, target).as_bytes(),
                signature.as_bytes(),
            )
    }

    /// Where the parts of a multipart upload wait for its completion.
    fn upload_dir(&self, upload_id: &str) -> Result<PathBuf, StoreError> {
        let valid = !upload_id.is_empty()
            && upload_id.len() <= 64
            && upload_id.bytes().all(|b| b.is_ascii_alphanumeric());
        if !valid {
            return Err(StoreError::InvalidUpload(format!(
                "`{upload_id}` is not an upload id"
            )));
        }
        Ok(self.root.join(".multipart").join(upload_id))
    }

    /// The upload's directory, checked to belong to `key`.
    async fn open_upload(&self, key: &str, upload_id: &str) -> Result<PathBuf, StoreError> {
        self.path(key)?;
        let dir = self.upload_dir(upload_id)?;
        match tokio::fs::read_to_string(dir.join("key")).await {
            Ok(k) if k == key => Ok(dir),
            _ => Err(StoreError::InvalidUpload(format!(
                "there is no upload `{upload_id}` of `{key}` in progress"
            ))),
        }
    }

    /// Starts a multipart upload of `size` bytes: its parts' URLs.
    pub async fn start_multipart(
        &self,
        key: &str,
        size: u64,
        part_bytes: u64,
        expires: i64,
    ) -> Result<MultipartUpload, StoreError> {
        self.path(key)?;
        let upload_id = uuid::Uuid::new_v4().simple().to_string();
        let dir = self.upload_dir(&upload_id)?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(Self::io(key))?;
        write_atomically(&dir.join("key"), key.as_bytes())
            .await
            .map_err(Self::io(key))?;
        let (mut parts, first) = unsigned_parts(size, part_bytes);
        for (part, url) in parts
            .iter_mut()
            .zip(self.presign_parts(key, &upload_id, &first, expires)?)
        {
            part.url = Some(url);
        }
        Ok(MultipartUpload { upload_id, parts })
    }

    /// Presigned URLs of some parts of an upload, in the order asked.
    pub fn presign_parts(
        &self,
        key: &str,
        upload_id: &str,
        part_numbers: &[u32],
        expires: i64,
    ) -> Result<Vec<String>, StoreError> {
        part_numbers
            .iter()
            .map(|&part_number| {
                let target = UploadTarget::Part {
                    upload_id,
                    part_number,
                };
                self.presign_put(key, expires, target)
            })
            .collect()
    }

    /// Keeps an uploaded part (a file on the same file system) until the
    /// upload completes; a part uploaded again replaces the earlier one.
    pub async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        file: &Path,
    ) -> Result<(), StoreError> {
        let dir = self.open_upload(key, upload_id).await?;
        tokio::fs::rename(file, dir.join(part_number.to_string()))
            .await
            .map_err(Self::io(key))
    }

    /// Joins the parts, in the order given, into the object, as S3's
    /// CompleteMultipartUpload does: each part must be there and match its
    /// ETag (here the SHA-256 of the part). The object's metadata gets the
    /// SHA-256 of the whole; then it is announced.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        let dir = self.open_upload(key, upload_id).await?;
        // As S3 with `If-None-Match: *`: never over a stored object.
        if tokio::fs::try_exists(self.path(key)?)
            .await
            .unwrap_or(false)
        {
            return Err(StoreError::InvalidUpload(
                "the batch's object is stored already; an upload cannot replace it".into(),
            ));
        }
        if parts.is_empty() {
            return Err(StoreError::InvalidUpload(
                "a completion lists at least one part".into(),
            ));
        }
        if parts
            .windows(2)
            .any(|w| w[0].part_number >= w[1].part_number)
        {
            return Err(StoreError::InvalidUpload(
                "parts must be listed in ascending order of part number".into(),
            ));
        }
        let joined = dir.join("object");
        let mut out = tokio::fs::File::create(&joined)
            .await
            .map_err(Self::io(key))?;
        let mut whole = sha2::Sha256::new();
        let mut buf = vec![0u8; READ_CHUNK];
        for part in parts {
            let mut file = tokio::fs::File::open(dir.join(part.part_number.to_string()))
                .await
                .map_err(|_| {
                    StoreError::InvalidUpload(format!("part {} was not uploaded", part.part_number))
                })?;
            let mut hash = sha2::Sha256::new();
            loop {
                let n = file.read(&mut buf).await.map_err(Self::io(key))?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                whole.update(&buf[..n]);
                out.write_all(&buf[..n]).await.map_err(Self::io(key))?;
            }
            if hex(&hash.finalize()) != part.etag.trim_matches('"') {
                return Err(StoreError::InvalidUpload(format!(
                    "part {}'s ETag does not match the part uploaded",
                    part.part_number
                )));
            }
        }
        out.sync_all().await.map_err(Self::io(key))?;
        drop(out);
        let mut metadata = metadata.clone();
        metadata.insert("sha256".into(), hex(&whole.finalize()));
        self.put_file(key, &joined, &metadata).await?;
        tokio::fs::remove_dir_all(&dir).await.map_err(Self::io(key))
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
            && !key.starts_with('.');
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
        // As S3 with `If-None-Match: *`: never over a stored object.
        if let Some(stored) = self.head(key).await? {
            return super::same_data(key, metadata, Some(stored));
        }
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

    /// Stores a stream's bytes through a file beside the object, renamed
    /// into place once all are written.
    pub async fn put_stream(
        &self,
        key: &str,
        mut stream: ByteStream,
        metadata: &BTreeMap<String, String>,
    ) -> Result<u64, StoreError> {
        let path = self.path(key)?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(Self::io(key))?;
        }
        let tmp = temp_beside(&path);
        let written = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(Self::io(key))?;
            let mut size = 0;
            while let Some(piece) = stream.next().await {
                let piece = piece?;
                tokio::io::AsyncWriteExt::write_all(&mut file, &piece)
                    .await
                    .map_err(Self::io(key))?;
                size += piece.len() as u64;
            }
            file.sync_all().await.map_err(Self::io(key))?;
            Ok(size)
        }
        .await;
        match written {
            Ok(size) => {
                self.put_file(key, &tmp, metadata).await?;
                Ok(size)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
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
                if rel.starts_with('.') || rel.contains(".tmp-") {
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

/// A fresh name beside `path` to write a file under before it is renamed
/// into place.
fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{name}.tmp-{}", uuid::Uuid::new_v4()))
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_beside(path);
    let mut file = tokio::fs::File::create(&tmp).await?;
    tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&tmp, path).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
