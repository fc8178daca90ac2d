//! `pipeline build` for real: two clean clones of the repository, in two
//! different folders, build the functions for Lambda with cargo-lambda and
//! get byte-identical zips (all three in the first, one asked for alone in
//! the second), whose `bootstrap` is an arm64 Linux executable that needs no
//! glibc newer than `provided.al2023` has (2.34).
//!
//! Building for Lambda takes minutes, so the test is ignored by a plain
//! `cargo test`; `scripts/test` (and so CI) runs it. It needs what
//! `.ci/tools.sh` installs: cargo-lambda and zig (`CARGO_LAMBDA_PATH`) and
//! the aarch64 Rust target.

use crate::common;

use pipeline_testkit::{Service, require};

use std::path::{Path, PathBuf};
use std::process::Command;

/// A clean clone of the committed tree.
fn clone(to: &Path) {
    let status = Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(common::repo())
        .arg(to)
        .status()
        .expect("git clone");
    assert!(status.success(), "git clone failed");
}

/// Builds the packages of dev in a clone (only `function`'s, with one);
/// the zips' paths.
fn build(clone: &Path, function: Option<&str>) -> Vec<PathBuf> {
    let mut path = vec![pipeline_testkit::cargo_lambda_dir()];
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let mut command = common::command(clone, &["--output", "json", "build", "--env", "dev"]);
    if let Some(function) = function {
        command.args(["--function", function]);
    }
    let started = std::time::Instant::now();
    let out = command
        .arg("--rds-ca-bundle")
        .arg(common::repo().join("functions/shared/tests/fixtures/unrelated-ca.pem"))
        .env("PATH", std::env::join_paths(path).expect("PATH"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        // The test command builds the tests through clippy-driver; packages
        // are built as a user builds them.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .output()
        .expect("run pipeline build");
    assert_eq!(
        out.status.code(),
        Some(0),
        "build failed:\n{}",
        common::stderr(&out)
    );
    eprintln!(
        "built {} in {} s",
        function.unwrap_or("every function"),
        started.elapsed().as_secs()
    );
    let built: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    built["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| clone.join(p["path"].as_str().expect("path")))
        .collect()
}

/// The newest `GLIBC_2.N` version an executable asks for.
fn newest_glibc(binary: &[u8]) -> u32 {
    let needle = b"GLIBC_2.";
    binary
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .filter_map(|(i, _)| {
            let rest = &binary[i + needle.len()..];
            let digits: Vec<u8> = rest
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .copied()
                .collect();
            std::str::from_utf8(&digits).ok()?.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

#[test]
#[ignore = "builds the functions for Lambda twice (minutes); scripts/test runs it"]
fn two_clean_clones_build_byte_identical_packages() {
    require!(Service::CargoLambda);
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = (dir.path().join("one"), dir.path().join("elsewhere/two"));
    clone(&a);
    clone(&b);
    // The second clone reuses the first one's compiled dependencies (as a
    // CI cache would); its own crates build again from its own folder.
    std::fs::create_dir_all(a.join("target")).expect("target");
    std::os::unix::fs::symlink(a.join("target"), b.join("target")).expect("symlink");
    let first = build(&a, None);
    // One function asked for alone: its package must be the same as in a
    // full build, from another folder too.
    let second = build(&b, Some("ingest"));
    assert_eq!(first.len(), 3);
    assert_eq!(second.len(), 1);
    let again = std::fs::read(&second[0]).expect("zip");
    for x in &first {
        let bx = std::fs::read(x).expect("zip");
        if x.file_name() == second[0].file_name() {
            assert!(bx == again, "{} differs between the clones", x.display());
        }
        eprintln!("{}: {} bytes", x.display(), bx.len());

        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bx)).expect("zip archive");
        let names: Vec<&str> = archive.file_names().collect();
        assert_eq!(
            names,
            [
                "amazon-root-ca.pem",
                "bootstrap",
                "datasets.json",
                "rds-ca.pem"
            ]
        );
        let mut bootstrap = Vec::new();
        std::io::Read::read_to_end(
            &mut archive.by_name("bootstrap").expect("bootstrap"),
            &mut bootstrap,
        )
        .expect("read bootstrap");
        // ELF, 64-bit, machine AArch64 (183).
        assert_eq!(&bootstrap[..5], b"\x7fELF\x02");
        assert_eq!(u16::from_le_bytes([bootstrap[18], bootstrap[19]]), 183);
        let glibc = newest_glibc(&bootstrap);
        assert!(
            (17..=34).contains(&glibc),
            "{} needs GLIBC_2.{glibc}",
            x.display()
        );
    }
}
