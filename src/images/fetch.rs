//! Downloads the files a manifest resolves to into the images directory: into `<file>.part`,
//! resumed with a Range request when a part is already there, checked against its sha256, and
//! only then renamed into place. A file already present with the right sum is left alone.

use std::io::Read;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::Wanted;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: sha256 is {got}, the manifest says {want}; the download was removed")]
    Mismatch { path: PathBuf, want: String, got: String },
    #[error("{archive}: no member {member} in the archive")]
    NoMember { archive: PathBuf, member: String },
}

/// What `fetch` did with one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// Already there with the right sum.
    Present,
    /// Downloaded and checked into `part`; `install` puts it in place. `resumed_at` bytes came
    /// from an earlier partial download.
    Downloaded { bytes: u64, resumed_at: u64, part: PathBuf },
}

/// The partial download of `target` with sum `sha256`: named by the sum, so a part of another
/// release is never resumed against this one.
fn part_of(target: &Path, sha256: &str) -> PathBuf {
    PathBuf::from(format!("{}.{}.part", target.display(), &sha256[..sha256.len().min(16)]))
}

/// Puts the checked download of `wanted` in place. A manifest's files are all downloaded and
/// checked before the first is installed, so a machine booting meanwhile does not get a kernel
/// of one release and an initramfs of another for long.
pub fn install(part: &Path, wanted: &Wanted, dir: &Path) -> Result<(), FetchError> {
    let target = dir.join(&wanted.path);
    std::fs::rename(part, &target).map_err(io(&target))
}

/// Removes partial downloads of `target` for other sums (an earlier release's).
fn remove_stale_parts(target: &Path, keep: &Path) {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name().and_then(|n| n.to_str())) else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if path != keep && file.starts_with(&format!("{name}.")) && file.ends_with(".part") {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io { path: path.to_owned(), source }
}

/// The sha256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads a small text resource: `file:PATH` (relative to `base`) or an http(s) URL.
pub async fn read_text(client: &reqwest::Client, url: &str, base: &Path) -> Result<String, FetchError> {
    if let Some(path) = url.strip_prefix("file://").or_else(|| url.strip_prefix("file:")) {
        let path = base.join(path);
        return std::fs::read_to_string(&path).map_err(io(&path));
    }
    let err = |message: String| FetchError::Http { url: url.to_string(), message };
    let response = client.get(url).send().await.map_err(|e| err(e.to_string()))?;
    if !response.status().is_success() {
        return Err(err(format!("HTTP {}", response.status())));
    }
    response.text().await.map_err(|e| err(e.to_string()))
}

/// Downloads `wanted` into `dir`, as far as a checked part beside its place (`install`).
pub async fn fetch(client: &reqwest::Client, wanted: &Wanted, dir: &Path) -> Result<Fetched, FetchError> {
    let target = dir.join(&wanted.path);
    let part = part_of(&target, &wanted.sha256);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    if target.exists() && sha256_file(&target).map_err(io(&target))? == wanted.sha256 {
        return Ok(Fetched::Present);
    }
    remove_stale_parts(&target, &part);
    let mut offset = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let err = |message: String| FetchError::Http { url: wanted.url.clone(), message };
    let mut request = client.get(&wanted.url);
    if offset > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
    }
    let response = request.send().await.map_err(|e| err(e.to_string()))?;
    let status = response.status();
    let mut file = match status.as_u16() {
        206 => tokio::fs::OpenOptions::new().append(true).open(&part).await.map_err(io(&part))?,
        // The part is already whole (or the server lost the range): check it as it is.
        416 if offset > 0 => tokio::fs::OpenOptions::new().append(true).open(&part).await.map_err(io(&part))?,
        200 => {
            offset = 0;
            tokio::fs::File::create(&part).await.map_err(io(&part))?
        }
        _ => return Err(err(format!("HTTP {status}"))),
    };
    let mut bytes = 0u64;
    if status.as_u16() != 416 {
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| err(e.to_string()))?;
            file.write_all(&chunk).await.map_err(io(&part))?;
            bytes += chunk.len() as u64;
        }
    }
    file.sync_all().await.map_err(io(&part))?;
    drop(file);
    let got = sha256_file(&part).map_err(io(&part))?;
    if got != wanted.sha256 {
        let _ = std::fs::remove_file(&part);
        return Err(FetchError::Mismatch { path: target, want: wanted.sha256.clone(), got });
    }
    Ok(Fetched::Downloaded { bytes, resumed_at: offset, part })
}

/// Writes each `(member, path)` of the tar archive at `archive` (gzip-compressed or not) to
/// `dir/path`, through a `.part` file. With `only_missing`, members already written are kept.
/// Returns the paths written and their sizes.
pub fn extract(
    archive: &Path,
    members: &[(String, String)],
    dir: &Path,
    only_missing: bool,
) -> Result<Vec<(String, u64)>, FetchError> {
    let wanted: Vec<&(String, String)> =
        members.iter().filter(|(_, path)| !(only_missing && dir.join(path).exists())).collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let mut file = std::fs::File::open(archive).map_err(io(archive))?;
    let mut magic = [0u8; 2];
    let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let file = std::fs::File::open(archive).map_err(io(archive))?;
    let reader: Box<dyn Read> = if gzip { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
    let mut tar = tar::Archive::new(reader);
    let mut written = Vec::new();
    for entry in tar.entries().map_err(io(archive))? {
        let mut entry = entry.map_err(io(archive))?;
        let name = entry.path().map_err(io(archive))?.to_string_lossy().trim_start_matches("./").to_string();
        let Some((_, path)) = wanted.iter().find(|(member, _)| *member == name) else { continue };
        let target = dir.join(path);
        let part = PathBuf::from(format!("{}.part", target.display()));
        let mut out = std::fs::File::create(&part).map_err(io(&part))?;
        let bytes = std::io::copy(&mut entry, &mut out).map_err(io(&part))?;
        out.sync_all().map_err(io(&part))?;
        std::fs::rename(&part, &target).map_err(io(&target))?;
        written.push((path.clone(), bytes));
    }
    match wanted.iter().find(|(_, path)| !written.iter().any(|(w, _)| w == path)) {
        Some((member, _)) => Err(FetchError::NoMember { archive: archive.to_owned(), member: member.clone() }),
        None => Ok(written),
    }
}
