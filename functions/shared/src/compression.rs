//! Compressed batches: gzip (one member or several, as `cat a.gz b.gz`
//! writes), zlib `deflate` as HTTP names it, and zstd (one frame or
//! several). Decoding streams: memory stays bounded whatever the size, and
//! a corrupt or truncated stream is reported with the byte offset in the
//! compressed input where decoding stopped.

use std::io::{BufRead, Read};

use bytes::Bytes;
use futures_util::StreamExt;

pub use pipeline_contract::ContentEncoding;

use crate::store::{ByteStream, StoreError};

/// How much decoded data one read gives at most.
const PIECE: usize = 256 * 1024;

/// A compressed input that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {encoding} stream is corrupt at byte {offset} of the compressed data: {reason}")]
pub struct Corrupt {
    pub encoding: ContentEncoding,
    /// Compressed bytes read before decoding stopped.
    pub offset: u64,
    pub reason: String,
}

/// What stopped a decode: the input, or the consumer of its output.
#[derive(Debug)]
pub enum DecodeError<E> {
    Corrupt(Corrupt),
    Sink(E),
}

/// A reader that counts the bytes its consumer takes.
struct Counted<R> {
    inner: R,
    taken: u64,
}

impl<R: BufRead> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.taken += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.taken += amt as u64;
        self.inner.consume(amt);
    }
}

impl<R: BufRead> Counted<R> {
    fn at_end(&mut self) -> std::io::Result<bool> {
        Ok(self.inner.fill_buf()?.is_empty())
    }
}

/// Decodes `input`, handing the decoded bytes to `sink` in pieces; returns
/// how many decoded bytes there were.
pub fn decode<R: BufRead, E>(
    encoding: ContentEncoding,
    input: R,
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, DecodeError<E>> {
    let mut input = Counted {
        inner: input,
        taken: 0,
    };
    let mut buf = vec![0u8; PIECE];
    let mut total = 0u64;
    let corrupt = |taken: u64, reason: String| {
        DecodeError::Corrupt(Corrupt {
            encoding,
            offset: taken,
            reason,
        })
    };
    let mut pump = |reader: &mut dyn Read, total: &mut u64| -> Result<(), Result<String, E>> {
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    *total += n as u64;
                    sink(&buf[..n]).map_err(Err)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Ok(describe(&e))),
            }
        }
    };
    match input.at_end() {
        Ok(true) => return Err(corrupt(0, "there is no data".into())),
        Ok(false) => {}
        Err(e) => return Err(corrupt(0, describe(&e))),
    }
    let result = match encoding {
        ContentEncoding::Gzip => {
            let mut reader = flate2::bufread::MultiGzDecoder::new(&mut input);
            pump(&mut reader, &mut total)
        }
        ContentEncoding::Deflate => {
            let mut reader = flate2::bufread::ZlibDecoder::new(&mut input);
            pump(&mut reader, &mut total)
        }
        ContentEncoding::Zstd => loop {
            // Frames follow each other until the input ends.
            match input.at_end() {
                Ok(true) => break Ok(()),
                Ok(false) => {}
                Err(e) => break Err(Ok(describe(&e))),
            }
            let mut reader = match ruzstd::decoding::StreamingDecoder::new(&mut input) {
                Ok(r) => r,
                Err(e) => break Err(Ok(e.to_string())),
            };
            if let Err(e) = pump(&mut reader, &mut total) {
                break Err(e);
            }
        },
    };
    match result {
        Ok(()) => Ok(total),
        Err(Ok(reason)) => Err(corrupt(input.taken, reason)),
        Err(Err(e)) => Err(DecodeError::Sink(e)),
    }
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "the data ends before the stream does".into(),
        _ => e.to_string(),
    }
}

/// A stream's pieces as a blocking reader, for the decoders (which read).
struct Pieces {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, StoreError>>,
    current: Bytes,
    /// An error of the underlying stream, given back as is.
    failed: Option<StoreError>,
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Pieces {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(piece)) => self.current = piece,
                Some(Err(e)) => {
                    let message = e.to_string();
                    self.failed = Some(e);
                    return Err(std::io::Error::other(message));
                }
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, amt: usize) {
        let _ = self.current.split_to(amt.min(self.current.len()));
    }
}

/// The most a compressed upload may decode to by default, per byte of it
/// (`api.max_decoded_ratio`): text such as NDJSON and CSV compresses 5 to 20
/// times with gzip or zstd, and a stream made to decode to much more (a
/// "bomb": gzip reaches about 1,000 times) is refused at this bound rather
/// than loaded for hours.
pub const DEFAULT_DECODED_RATIO: u64 = 200;

/// The most a compressed object may decode to: `ratio` times its `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedLimit {
    pub size: u64,
    pub ratio: u64,
}

impl DecodedLimit {
    /// No limit.
    pub const NONE: DecodedLimit = DecodedLimit {
        size: u64::MAX,
        ratio: 1,
    };

    pub fn bytes(&self) -> u64 {
        self.size.saturating_mul(self.ratio)
    }
}

/// The decoded bytes of a compressed stream. Decoding runs on a blocking
/// thread between two small channels, so memory stays at a few pieces. A
/// corrupt input, or one that decodes to more than `limit` bytes, ends the
/// stream with [`StoreError::Corrupt`].
pub fn decompress(
    encoding: ContentEncoding,
    mut stream: ByteStream,
    limit: DecodedLimit,
) -> ByteStream {
    let (in_tx, in_rx) = tokio::sync::mpsc::channel(4);
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Result<Bytes, StoreError>>(4);
    tokio::spawn(async move {
        while let Some(piece) = stream.next().await {
            if in_tx.send(piece).await.is_err() {
                break;
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        let mut pieces = Pieces {
            rx: in_rx,
            current: Bytes::new(),
            failed: None,
        };
        let mut total: u64 = 0;
        let sent = decode(encoding, &mut pieces, |decoded| {
            total += decoded.len() as u64;
            if total > limit.bytes() {
                return Err(true);
            }
            out_tx
                .blocking_send(Ok(Bytes::copy_from_slice(decoded)))
                .map_err(|_| false)
        });
        let error = match sent {
            Ok(_) | Err(DecodeError::Sink(false)) => return,
            Err(DecodeError::Sink(true)) => StoreError::Corrupt(format!(
                "the {} stream decodes to more than {} bytes, the most it may ({} times its size, `api.max_decoded_ratio`)",
                encoding.name(),
                limit.bytes(),
                limit.ratio,
            )),
            Err(DecodeError::Corrupt(corrupt)) => match pieces.failed.take() {
                // The object store failed, not the data.
                Some(e) => e,
                None => StoreError::Corrupt(corrupt.to_string()),
            },
        };
        let _ = out_tx.blocking_send(Err(error));
    });
    futures_util::stream::poll_fn(move |cx| out_rx.poll_recv(cx)).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = e.write_all(data);
        e.finish().unwrap_or_default()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    fn decoded(encoding: ContentEncoding, input: &[u8]) -> Result<Vec<u8>, Corrupt> {
        let mut out = Vec::new();
        match decode(encoding, input, |piece| {
            out.extend_from_slice(piece);
            Ok::<(), ()>(())
        }) {
            Ok(n) => {
                assert_eq!(n as usize, out.len());
                Ok(out)
            }
            Err(DecodeError::Corrupt(c)) => Err(c),
            Err(DecodeError::Sink(())) => panic!("the sink never fails here"),
        }
    }

    #[test]
    fn members_and_frames_decode_one_after_another() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
            .collect();
        let (a, b) = data.split_at(77_777);
        let gz = [gzip(a), gzip(b)].concat();
        assert_eq!(decoded(ContentEncoding::Gzip, &gz), Ok(data.clone()));
        let zs = [zstd(a), zstd(b)].concat();
        assert_eq!(decoded(ContentEncoding::Zstd, &zs), Ok(data.clone()));
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = z.write_all(&data);
        let zl = z.finish().unwrap_or_default();
        assert_eq!(decoded(ContentEncoding::Deflate, &zl), Ok(data));
    }

    #[test]
    fn corrupt_and_truncated_streams_name_their_offset() {
        let data = b"{\"n\":1}\n".repeat(10_000);
        let mut gz = gzip(&data);
        let middle = gz.len() / 2;
        gz[middle] ^= 0xff;
        gz[middle + 1] ^= 0xff;
        let e = decoded(ContentEncoding::Gzip, &gz).expect_err("corrupt");
        assert!(e.offset > 10 && e.offset <= gz.len() as u64, "{e}");
        let gz = gzip(&data);
        let e = decoded(ContentEncoding::Gzip, &gz[..gz.len() - 4]).expect_err("cut");
        assert_eq!(e.reason, "the data ends before the stream does");
        let e = decoded(ContentEncoding::Zstd, b"plain text, not zstd").expect_err("plain");
        assert_eq!(e.offset, 4);
        assert!(
            e.to_string()
                .starts_with("the zstd stream is corrupt at byte 4"),
            "{e}"
        );
        let e = decoded(ContentEncoding::Gzip, b"").expect_err("empty");
        assert_eq!(e.reason, "there is no data");
    }

    #[tokio::test]
    async fn a_stream_decodes_in_pieces_and_ends_with_the_corruption() {
        let data = b"{\"n\":1}\n".repeat(100_000);
        let zs = zstd(&data);
        let pieces: Vec<Result<Bytes, StoreError>> = zs
            .chunks(1000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut out = Vec::new();
        let mut s = decompress(
            ContentEncoding::Zstd,
            futures_util::stream::iter(pieces).boxed(),
            DecodedLimit::NONE,
        );
        while let Some(piece) = s.next().await {
            out.extend_from_slice(&piece.expect("piece"));
        }
        assert_eq!(out, data);
        let mut bad = gzip(&data);
        bad.truncate(bad.len() / 2);
        let mut s = decompress(
            ContentEncoding::Gzip,
            futures_util::stream::iter(vec![Ok(Bytes::from(bad))]).boxed(),
            DecodedLimit::NONE,
        );
        let mut last = None;
        while let Some(piece) = s.next().await {
            last = Some(piece);
        }
        match last {
            Some(Err(StoreError::Corrupt(reason))) => {
                assert!(
                    reason.starts_with("the gzip stream is corrupt at byte "),
                    "{reason}"
                );
            }
            other => panic!("expected corruption, found {other:?}"),
        }
    }

    /// A stream that decodes past its limit ends with the reason, having
    /// passed on no more than the limit.
    #[tokio::test]
    async fn a_stream_that_decodes_past_its_limit_is_cut_with_the_reason() {
        let data = vec![b'a'; 4 << 20];
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&data).expect("gzip");
        let bomb = e.finish().expect("gzip");
        assert!(data.len() > 200 * bomb.len(), "{}", bomb.len());
        let decoded = DecodedLimit {
            size: bomb.len() as u64,
            ratio: DEFAULT_DECODED_RATIO,
        };
        let limit = decoded.bytes();
        let mut s = decompress(
            ContentEncoding::Gzip,
            futures_util::stream::iter(vec![Ok(Bytes::from(bomb))]).boxed(),
            decoded,
        );
        let (mut passed, mut last) = (0u64, None);
        while let Some(piece) = s.next().await {
            match piece {
                Ok(p) => passed += p.len() as u64,
                Err(e) => last = Some(e),
            }
        }
        assert!(passed <= limit, "{passed} > {limit}");
        match last {
            Some(StoreError::Corrupt(reason)) => assert_eq!(
                reason,
                format!(
                    "the gzip stream decodes to more than {limit} bytes, the most it may (200 times its size, `api.max_decoded_ratio`)"
                )
            ),
            other => panic!("expected the limit, found {other:?}"),
        }
    }
}
