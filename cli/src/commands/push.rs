//! `pipeline push`: send a batch file, inline or through an upload by size.

use pipeline_contract::{
    Batch, BatchAccepted, BatchRejected, BatchStatus, CompleteRequest, Completed, CompletedPart,
    ContentEncoding, PART_URLS_PER_ANSWER, PartUrls, PartsRequest, RejectionCode, Upload,
    UploadPart, UploadRequest,
};
use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Cli;
use crate::client::{Answer, Api, Target, client_error};
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Dataset the records belong to.
    #[arg(short, long)]
    pub dataset: String,
    /// The batch: NDJSON or CSV, as the dataset's format says; or such a
    /// file compressed with gzip or zstd, sent as it is.
    pub file: PathBuf,
    /// Send inline batches as they are: by default, one above 64 KiB is
    /// compressed with gzip on the way (API Gateway decodes it).
    #[arg(long)]
    pub no_compress: bool,
    /// Wait until the batch is loaded (or failed), and report it.
    #[arg(long)]
    pub wait: bool,
    /// Longest wait, in seconds.
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    pub timeout: u64,
    /// Idempotency key: pushing again with the same key stores nothing new.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

/// The outcome of a push.
#[derive(Debug, Serialize)]
pub struct Pushed {
    pub batch_id: String,
    pub dataset: String,
    /// `inline` or `upload`.
    pub via: &'static str,
    pub bytes: u64,
    pub status: BatchStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<Batch>,
}

impl fmt::Display for Pushed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.batch.as_ref() {
            Some(b) if self.status == BatchStatus::Loaded => {
                let count =
                    |n: Option<i64>| n.map_or_else(|| "null".to_string(), |n| n.to_string());
                writeln!(
                    f,
                    "loaded batch {} into {}: {} records, {} inserted, {} duplicates",
                    self.batch_id,
                    self.dataset,
                    count(b.records),
                    count(b.inserted),
                    count(b.duplicates)
                )
            }
            Some(Batch {
                error: Some(error), ..
            }) if self.status == BatchStatus::Failed => {
                writeln!(f, "batch {} failed: {error}", self.batch_id)
            }
            Some(Batch {
                failure: Some(reason),
                ..
            }) if self.status == BatchStatus::Failed => {
                writeln!(f, "batch {} failed: {reason}", self.batch_id)
            }
            _ => writeln!(
                f,
                "sent batch {} to {} ({} bytes, {}); status: {}",
                self.batch_id, self.dataset, self.bytes, self.via, self.status
            ),
        }
    }
}

pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let env = super::load_env(cli, &args.target.env, ui)?;
    let dataset = env
        .spec
        .datasets
        .get(&args.dataset)
        .ok_or_else(|| Error::Rejected {
            message: format!(
                "there is no dataset `{}` in `{}`; the datasets are: {}",
                args.dataset,
                env.name,
                env.spec
                    .datasets
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    let content_type = dataset.format.media_type();
    let inline_limit = u64::from(env.spec.api.max_inline_batch_kib) * 1024;
    let api = Api::new(&args.target)?.with_auth(env.spec.api.auth, &env.spec.region);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| client_error(format!("cannot start the async runtime: {e}")))?;
    let pushed = runtime.block_on(async {
        let bytes = tokio::fs::metadata(&args.file)
            .await
            .map_err(|source| Error::Read {
                path: args.file.display().to_string(),
                source,
            })?
            .len();
        let encoding = sniff(&args.file).await?;
        // The inline limit counts the body as Lambda gets it (decoded by
        // API Gateway), escaped in a JSON string: a file just under the
        // limit may need an upload. zstd goes through an upload always:
        // API Gateway decodes gzip and deflate only.
        let body = match encoding {
            None | Some(ContentEncoding::Gzip | ContentEncoding::Deflate)
                if bytes <= inline_limit =>
            {
                let body = tokio::fs::read(&args.file)
                    .await
                    .map_err(|source| Error::Read {
                        path: args.file.display().to_string(),
                        source,
                    })?;
                let fits = match encoding {
                    None => pipeline_shared::api::event_body_len(&body) <= inline_limit,
                    Some(e) => decoded_fits(e, &body, inline_limit),
                };
                fits.then_some(body)
            }
            _ => None,
        };
        let (batch_id, via) = match body {
            Some(body) => (
                inline(&api, args, content_type, body, encoding).await?,
                "inline",
            ),
            None => (
                upload(&api, args, content_type, bytes, encoding, ui).await?,
                "upload",
            ),
        };
        let mut pushed = Pushed {
            batch_id,
            dataset: args.dataset.clone(),
            via,
            bytes,
            status: BatchStatus::Received,
            batch: None,
        };
        if args.wait {
            let (status, batch) =
                wait(&api, &pushed.batch_id, Duration::from_secs(args.timeout)).await?;
            pushed.status = status;
            pushed.batch = Some(batch);
        }
        Ok::<_, Error>(pushed)
    })?;
    ui.result(&pushed);
    if pushed.status == BatchStatus::Failed {
        return Err(Error::Rejected {
            message: format!("batch {} failed to load", pushed.batch_id),
        });
    }
    Ok(())
}

/// Inline bodies above this many bytes are compressed, unless told not to.
const COMPRESS_ABOVE: usize = 64 * 1024;

/// How the file is compressed, from its first bytes.
async fn sniff(path: &std::path::Path) -> Result<Option<ContentEncoding>, Error> {
    use tokio::io::AsyncReadExt;
    let read_error = |source| Error::Read {
        path: path.display().to_string(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(read_error)?;
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match file.read(&mut magic[n..]).await.map_err(read_error)? {
            0 => break,
            read => n += read,
        }
    }
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Some(ContentEncoding::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd] => Some(ContentEncoding::Zstd),
        _ => None,
    })
}

/// Whether a compressed body decodes to one that fits the inline limit.
fn decoded_fits(encoding: ContentEncoding, body: &[u8], limit: u64) -> bool {
    let mut decoded = Vec::new();
    let result = pipeline_shared::compression::decode(encoding, body, |piece| {
        decoded.extend_from_slice(piece);
        if decoded.len() as u64 > limit {
            Err(())
        } else {
            Ok(())
        }
    });
    // A body that does not decode goes up inline, to be answered with why.
    result.is_err() && decoded.len() as u64 <= limit
        || pipeline_shared::api::event_body_len(&decoded) <= limit
}

async fn inline(
    api: &Api,
    args: &Args,
    content_type: &str,
    body: Vec<u8>,
    encoding: Option<ContentEncoding>,
) -> Result<String, Error> {
    let (body, encoding) = match encoding {
        None if !args.no_compress && body.len() > COMPRESS_ABOVE => {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            let compressed = gz.write_all(&body).and_then(|()| gz.finish());
            match compressed {
                Ok(compressed) => (compressed, Some(ContentEncoding::Gzip)),
                Err(_) => (body, None),
            }
        }
        other => (body, other),
    };
    let mut request = api
        .request(
            reqwest::Method::POST,
            &format!("/v1/datasets/{}/batches", args.dataset),
        )
        .header("content-type", content_type)
        .body(body);
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding.name());
    }
    if let Some(key) = &args.idempotency_key {
        request = request.header("idempotency-key", key);
    }
    let answer = api.send(request).await?;
    if answer.status == 400
        && let Ok(rejected) = answer.read::<BatchRejected>()
        && rejected.error == RejectionCode::InvalidBatch
    {
        let mut lines: Vec<String> = rejected
            .errors
            .iter()
            .map(|e| {
                let column = e
                    .column
                    .as_deref()
                    .map(|c| format!(": column `{c}`"))
                    .unwrap_or_default();
                format!("  {}:{}{column}: {}", args.file.display(), e.line, e.reason)
            })
            .collect();
        if rejected.truncated {
            lines.push("  (more errors not shown)".into());
        }
        return Err(Error::Rejected {
            message: format!(
                "the batch was rejected, nothing was stored:\n{}",
                lines.join("\n")
            ),
        });
    }
    if answer.status != 202 {
        return Err(answer.error());
    }
    Ok(answer.read::<BatchAccepted>()?.batch_id.to_string())
}

async fn upload(
    api: &Api,
    args: &Args,
    content_type: &str,
    bytes: u64,
    encoding: Option<ContentEncoding>,
    ui: &Ui,
) -> Result<String, Error> {
    let request = api
        .request(
            reqwest::Method::POST,
            &format!("/v1/datasets/{}/uploads", args.dataset),
        )
        .json(&UploadRequest {
            size_bytes: bytes,
            content_type: content_type.to_string(),
            content_encoding: encoding,
            idempotency_key: args.idempotency_key.clone(),
        });
    let answer = api.send(request).await?;
    let answer: Upload = match answer.status {
        201 => answer.read()?,
        // A retry of a batch whose upload is over: nothing to send again.
        200 => {
            let done: Upload = answer.read()?;
            ui.info(format_args!(
                "batch {} was uploaded before; its upload is over",
                done.batch_id
            ));
            return Ok(done.batch_id.to_string());
        }
        _ => return Err(answer.error()),
    };
    let batch_id = answer.batch_id.to_string();
    let progress = progress_bar(bytes, ui);
    match (&answer.url, &answer.parts, &answer.upload_id) {
        (Some(url), _, _) => {
            let part = UploadPart {
                part_number: 0,
                offset: 0,
                size: bytes,
                url: Some(url.clone()),
            };
            put_part(api, &args.file, &part, &answer.headers, progress.as_ref())
                .await
                .map_err(PutFailed::error)?;
        }
        (None, Some(parts), Some(upload_id)) => {
            let mut parts = parts.clone();
            fill_part_urls(api, &answer, upload_id, &mut parts).await?;
            multipart(api, args, &batch_id, upload_id, &parts, progress.as_ref()).await?;
        }
        _ => {
            return Err(client_error(
                "the upload answer has no URL and no parts with an upload id",
            ));
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    ui.info(format_args!("uploaded {bytes} bytes"));
    Ok(batch_id)
}

/// Gets the URLs of the parts the upload's answer listed without one, from
/// its `parts_url`, a page at a time.
async fn fill_part_urls(
    api: &Api,
    answer: &Upload,
    upload_id: &str,
    parts: &mut [UploadPart],
) -> Result<(), Error> {
    let missing: Vec<u32> = parts
        .iter()
        .filter(|p| p.url.is_none())
        .map(|p| p.part_number)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if answer.parts_url.is_none() {
        return Err(client_error(
            "the upload answer has parts without a URL and no `parts_url`",
        ));
    }
    let batch_id = answer.batch_id.to_string();
    let mut urls = std::collections::HashMap::new();
    for page in missing.chunks(PART_URLS_PER_ANSWER) {
        urls.extend(part_urls(api, &batch_id, upload_id, page).await?);
    }
    for part in parts.iter_mut().filter(|p| p.url.is_none()) {
        part.url = Some(urls.remove(&part.part_number).ok_or_else(|| {
            client_error(format!("the API gave no URL for part {}", part.part_number))
        })?);
    }
    Ok(())
}

/// Fresh URLs of some parts of an upload, from the API (at most
/// [`PART_URLS_PER_ANSWER`] at a time).
async fn part_urls(
    api: &Api,
    batch_id: &str,
    upload_id: &str,
    numbers: &[u32],
) -> Result<std::collections::HashMap<u32, String>, Error> {
    let request = api
        .request(
            reqwest::Method::POST,
            &format!("/v1/batches/{batch_id}/parts"),
        )
        .json(&PartsRequest {
            upload_id: upload_id.to_string(),
            part_numbers: numbers.to_vec(),
        });
    let answer = api.send(request).await?;
    if answer.status != 200 {
        return Err(client_error(format!(
            "the API refused the part URLs ({}): {}",
            answer.status,
            answer.message()
        )));
    }
    Ok(answer
        .read::<PartUrls>()?
        .parts
        .into_iter()
        .map(|p| (p.part_number, p.url))
        .collect())
}

/// Parts uploaded at once.
const PARALLEL_PARTS: usize = 4;
/// Tries of a part before the push gives up.
const PART_TRIES: u32 = 3;

/// Uploads the parts, a few at a time, each retried alone, then asks the
/// API to join them.
async fn multipart(
    api: &Api,
    args: &Args,
    batch_id: &str,
    upload_id: &str,
    parts: &[UploadPart],
    progress: Option<&indicatif::ProgressBar>,
) -> Result<(), Error> {
    use futures_util::{StreamExt, TryStreamExt};
    let mut etags: Vec<(u32, String)> = futures_util::stream::iter(parts)
        .map(|part| async move {
            let mut part = part.clone();
            let mut tries = 0;
            loop {
                tries += 1;
                match put_part(api, &args.file, &part, &Default::default(), progress).await {
                    Ok(etag) => return Ok((part.part_number, etag)),
                    Err(failed) if tries >= PART_TRIES => return Err(failed.error()),
                    Err(failed) => {
                        if let Some(bar) = progress {
                            bar.set_position(bar.position().saturating_sub(part.size));
                        }
                        // An upload that outlasts its URLs (an hour in AWS)
                        // goes on with fresh ones.
                        if let PutFailed::Refused(_) = failed {
                            let mut fresh =
                                part_urls(api, batch_id, upload_id, &[part.part_number]).await?;
                            part.url = fresh.remove(&part.part_number);
                        }
                    }
                }
            }
        })
        .buffer_unordered(PARALLEL_PARTS)
        .try_collect()
        .await?;
    etags.sort();
    let request = api
        .request(
            reqwest::Method::POST,
            &format!("/v1/batches/{batch_id}/complete"),
        )
        .json(&CompleteRequest {
            upload_id: upload_id.to_string(),
            parts: etags
                .into_iter()
                .map(|(part_number, etag)| CompletedPart { part_number, etag })
                .collect(),
        });
    let _: Completed = api.call(request, 202).await?;
    Ok(())
}

/// A PUT to an upload URL that failed.
enum PutFailed {
    /// Storage refused the URL (403), as S3 refuses an expired one.
    Refused(Error),
    Other(Error),
}

impl PutFailed {
    fn error(self) -> Error {
        match self {
            PutFailed::Refused(e) | PutFailed::Other(e) => e,
        }
    }
}

impl From<Error> for PutFailed {
    fn from(e: Error) -> PutFailed {
        PutFailed::Other(e)
    }
}

/// PUTs bytes `offset..offset + size` of the file to the part's URL, with
/// the headers its answer asks; the answer's ETag.
async fn put_part(
    api: &Api,
    path: &std::path::Path,
    part: &UploadPart,
    headers: &std::collections::BTreeMap<String, String>,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<String, PutFailed> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let read_error = |source| Error::Read {
        path: path.display().to_string(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(read_error)?;
    file.seek(std::io::SeekFrom::Start(part.offset))
        .await
        .map_err(read_error)?;
    let bar = progress.cloned();
    let stream = futures_util::StreamExt::inspect(
        tokio_util::io::ReaderStream::with_capacity(file.take(part.size), 1 << 20),
        move |chunk| {
            if let (Ok(chunk), Some(bar)) = (chunk, &bar) {
                bar.inc(chunk.len() as u64);
            }
        },
    );
    let what = if part.part_number == 0 {
        "the upload".to_string()
    } else {
        format!("the upload of part {}", part.part_number)
    };
    let mut request = api
        .http
        .put(part.url.as_deref().unwrap_or_default())
        .header("content-length", part.size);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .map_err(|e| client_error(format!("{what} failed: {e}")))?;
    if !response.status().is_success() {
        let refused = response.status() == reqwest::StatusCode::FORBIDDEN;
        let error = Answer::of(response).await?.error();
        return Err(match refused {
            true => PutFailed::Refused(error),
            false => PutFailed::Other(error),
        });
    }
    Ok(response
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string())
}

/// A progress bar on a terminal; nothing otherwise.
fn progress_bar(bytes: u64, ui: &Ui) -> Option<indicatif::ProgressBar> {
    if ui.json() || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(bytes);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

/// Polls the batch until it is loaded or failed: that status, and the batch.
async fn wait(api: &Api, batch_id: &str, timeout: Duration) -> Result<(BatchStatus, Batch), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let batch: Batch = api
            .call(
                api.request(reqwest::Method::GET, &format!("/v1/batches/{batch_id}")),
                200,
            )
            .await?;
        let status = batch.status;
        if status.is_final() {
            return Ok((status, batch));
        }
        if Instant::now() >= deadline {
            return Err(client_error(format!(
                "batch {batch_id} is still {status} after {} seconds",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
