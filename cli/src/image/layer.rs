//! A reproducible image layer: a gzipped tar whose bytes depend only on the
//! files in it (fixed order, owner, modes and timestamps; no gzip name or
//! time), so equal inputs give an equal digest on every machine.

use std::io::Write;

use super::{Blob, ImageError};

/// Every entry's modification time: 1980-01-01, as in the zip packages.
pub const EPOCH: u64 = 315_532_800;

/// A file of a layer: its absolute path in the image, bytes and mode.
pub struct File<'a> {
    pub path: &'a str,
    pub bytes: &'a [u8],
    pub mode: u32,
}

/// A built layer: the compressed bytes (the blob) and the digest of the
/// uncompressed tar (the config's `diff_id`).
pub struct Layer {
    pub blob: Blob,
    pub diff_id: String,
}

/// Writes the layer of `files`, with every parent directory as an entry
/// (mode 0755, owned by root) before its contents.
pub fn build(files: &[File<'_>]) -> Result<Layer, ImageError> {
    let io = |e: std::io::Error| ImageError::Layer {
        message: e.to_string(),
    };
    let mut sorted: Vec<&File<'_>> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(b.path));
    let mut dirs: Vec<String> = Vec::new();
    let mut tar = tar::Builder::new(Vec::new());
    for file in sorted {
        let relative = file.path.trim_start_matches('/');
        let mut parent = String::new();
        for part in relative
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, p)| p)
        {
            parent.push_str(part);
            parent.push('/');
            if !dirs.contains(&parent) {
                tar.append(
                    &header(&parent, 0, 0o755, tar::EntryType::Directory)?,
                    &[][..],
                )
                .map_err(io)?;
                dirs.push(parent.clone());
            }
        }
        let h = header(
            relative,
            file.bytes.len() as u64,
            file.mode,
            tar::EntryType::Regular,
        )?;
        tar.append(&h, file.bytes).map_err(io)?;
    }
    let tar = tar.into_inner().map_err(io)?;
    let diff_id = super::digest_of(&tar);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        // gzip's default level: a third of level 9's time for 1% more bytes.
        .write(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&tar).map_err(io)?;
    let bytes = gz.finish().map_err(io)?;
    Ok(Layer {
        blob: Blob::new(super::media::OCI_LAYER_GZIP, bytes),
        diff_id,
    })
}

fn header(
    path: &str,
    size: u64,
    mode: u32,
    kind: tar::EntryType,
) -> Result<tar::Header, ImageError> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).map_err(|e| ImageError::Layer {
        message: format!("{path}: {e}"),
    })?;
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(EPOCH);
    h.set_entry_type(kind);
    h.set_cksum();
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<File<'static>> {
        vec![
            File {
                path: "/var/task/datasets.json",
                bytes: b"{}",
                mode: 0o644,
            },
            File {
                path: "/var/task/bootstrap",
                bytes: b"\x7fELF",
                mode: 0o755,
            },
        ]
    }

    #[test]
    fn layers_depend_only_on_their_files() {
        let a = build(&files()).expect("layer");
        let mut reversed = files();
        reversed.reverse();
        let b = build(&reversed).expect("layer");
        assert_eq!(a.blob.digest, b.blob.digest);
        assert_eq!(a.diff_id, b.diff_id);
        assert_ne!(a.blob.digest, a.diff_id, "the blob is compressed");

        let tar = flate2::read::GzDecoder::new(&a.blob.bytes[..]);
        let mut archive = tar::Archive::new(tar);
        let entries: Vec<(String, u32, u64, u64)> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let h = e.header();
                (
                    e.path().expect("path").display().to_string(),
                    h.mode().expect("mode"),
                    h.mtime().expect("mtime"),
                    h.uid().expect("uid"),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("var/".to_string(), 0o755, EPOCH, 0),
                ("var/task/".to_string(), 0o755, EPOCH, 0),
                ("var/task/bootstrap".to_string(), 0o755, EPOCH, 0),
                ("var/task/datasets.json".to_string(), 0o644, EPOCH, 0),
            ]
        );
    }
}
