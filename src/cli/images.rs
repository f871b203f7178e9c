//! `slipway images list` and `slipway images fetch NAME`: downloads a manifest's files into the
//! images directory, checked against their sha256 and resumed after an interruption. Runs
//! locally; no daemon needed.

use std::path::{Path, PathBuf};

use crate::images::fetch::{self, FetchError, Fetched};
use crate::images::{BUILT_IN, Manifest, ManifestError, Wanted, from_files, from_stream, mirrored};

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{0}")]
    Setup(String),
}

/// Prints the built-in manifests.
pub fn list() {
    for (name, text) in BUILT_IN {
        let description = Manifest::parse(name, text).map(|m| m.description).unwrap_or_default();
        crate::outln!("{name:<22} {description}");
    }
}

/// What `fetch` needs.
#[derive(Debug)]
pub struct FetchArgs {
    /// A built-in manifest's name, or a path to a manifest file.
    pub manifest: String,
    pub dir: PathBuf,
    /// Replaces the manifest's stream URL (`file:PATH` or a URL).
    pub stream: Option<String>,
    /// A mirror that keeps upstream paths under each host's name (`images::mirrored`).
    pub mirror: Option<String>,
}

pub async fn run_fetch(args: &FetchArgs) -> Result<(), ImagesError> {
    let (manifest, base) = if Path::new(&args.manifest).is_file() {
        let text = std::fs::read_to_string(&args.manifest)
            .map_err(|e| ImagesError::Setup(format!("{}: {e}", args.manifest)))?;
        let base = Path::new(&args.manifest).parent().map(Path::to_owned).unwrap_or_default();
        (Manifest::parse(&args.manifest, &text)?, base)
    } else {
        (Manifest::built_in(&args.manifest)?, std::env::current_dir().unwrap_or_default())
    };
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(20))
        .build()
        .map_err(|e| ImagesError::Setup(e.to_string()))?;
    let wanted = resolve(&client, &manifest, args.stream.as_deref(), args.mirror.as_deref(), &base).await?;
    let mut ready = Vec::new();
    for w in &wanted {
        let fetched = fetch::fetch(&client, w, &args.dir).await?;
        match &fetched {
            Fetched::Present => crate::outln!("{}: present, sha256 ok", w.path),
            Fetched::Downloaded { bytes, resumed_at: 0, .. } => {
                crate::outln!("{}: downloaded {bytes} bytes, sha256 ok", w.path)
            }
            Fetched::Downloaded { bytes, resumed_at, .. } => {
                crate::outln!("{}: resumed at byte {resumed_at}, downloaded {bytes} more, sha256 ok", w.path)
            }
        }
        ready.push((w, fetched));
    }
    // Every file is checked before any is put in place.
    for (w, fetched) in &ready {
        if let Fetched::Downloaded { part, .. } = fetched {
            fetch::install(part, w, &args.dir)?;
        }
    }
    for (w, fetched) in &ready {
        let only_missing = *fetched == Fetched::Present;
        for (path, bytes) in fetch::extract(&args.dir.join(&w.path), &w.extract, &args.dir, only_missing)? {
            crate::outln!("{path}: extracted from {} ({bytes} bytes)", w.path);
        }
    }
    Ok(())
}

async fn resolve(
    client: &reqwest::Client,
    m: &Manifest,
    stream_url: Option<&str>,
    mirror: Option<&str>,
    base: &Path,
) -> Result<Vec<Wanted>, ImagesError> {
    let mut out = Vec::new();
    if let Some(stream) = &m.stream {
        let mut stream = stream.clone();
        if let Some(url) = stream_url {
            stream.url =
                if url.contains("://") || url.starts_with("file:") { url.to_string() } else { format!("file:{url}") };
        }
        let json = fetch::read_text(client, &mirrored(&stream.url, mirror), base).await?;
        out.extend(from_stream(m, &stream, &json)?);
    }
    let sums = match &m.sha256sums {
        Some(url) if m.files.iter().any(|f| f.sha256.is_none()) => {
            Some(fetch::read_text(client, &mirrored(url, mirror), base).await?)
        }
        _ => None,
    };
    out.extend(from_files(m, sums.as_deref())?);
    for w in &mut out {
        w.url = mirrored(&w.url, mirror);
    }
    Ok(out)
}
