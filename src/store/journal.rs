//! The lease journal: `leases.journal` beside the store file, one line per lease change
//! (`<crc32 of the JSON, 8 hex digits> <the lease as JSON>`), appended and synced (fdatasync)
//! before `put` returns, so a lease is on disk before anything that depends on it is sent.
//!
//! Why not a redb table: a DHCP server commits a few leases hundreds of times a second, and a
//! redb commit rewrites B-tree pages and checksums each time; measured under perfdhcp, the
//! table cost the server a third of its core, an appended line a few percent.
//!
//! Loading replays the lines; the last line for an address wins. A last line that is cut short
//! (a crash during a write nobody was told had succeeded) is cut off; a damaged line in the
//! middle is skipped with a warning. Once the file holds many more lines than leases it is
//! rewritten whole (written beside, synced, renamed over). After a failed write or sync the file
//! is rewritten from the committed leases before the next append, so file and memory agree.
//! Knows nothing about DHCP.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use crate::inventory::Lease;

/// The journal's file name inside the state directory.
pub const FILE_NAME: &str = "leases.journal";

/// Lines beyond the live leases before the file is rewritten: a rewrite costs about one line per
/// lease, so this keeps rewrites to a small share of the writes while loading stays quick.
const SLACK_LINES: u64 = 100_000;
const SLACK_FACTOR: u64 = 8;

#[derive(Debug, thiserror::Error)]
#[error("lease journal {path}: {source}")]
pub struct JournalError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// The leases as committed: what the file says.
    leases: RwLock<HashMap<Ipv4Addr, Lease>>,
    /// Held for a whole write and sync, so writes reach the file one after another.
    file: Mutex<Appender>,
}

#[derive(Debug)]
struct Appender {
    /// `None` until the first write after a failed rewrite.
    file: Option<File>,
    len: u64,
    lines: u64,
    /// A write or sync failed: what the file holds is not known, so it is rewritten first.
    stale: bool,
    #[cfg(test)]
    fail_next: bool,
}

impl Journal {
    /// Opens the journal at `path` (no file: no leases) and replays it.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let err = |source| JournalError { path: path.to_owned(), source };
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(err)?;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let replayed = replay(&bytes);
        if replayed.damaged > 0 {
            tracing::warn!(path = %path.display(), lines = replayed.damaged, "lease journal: skipped damaged lines");
        }
        let mut file = None;
        if !bytes.is_empty() {
            let f = open_append(path).map_err(err)?;
            if replayed.valid_len < bytes.len() {
                tracing::warn!(
                    path = %path.display(),
                    bytes = bytes.len() - replayed.valid_len,
                    "lease journal: cut off an unfinished last line (a write interrupted by a crash)"
                );
                f.set_len(replayed.valid_len as u64).and_then(|()| f.sync_data()).map_err(err)?;
            }
            file = Some(f);
        }
        Ok(Journal {
            path: path.to_owned(),
            leases: RwLock::new(replayed.leases),
            file: Mutex::new(Appender {
                file,
                len: replayed.valid_len as u64,
                lines: replayed.lines,
                stale: false,
                #[cfg(test)]
                fail_next: false,
            }),
        })
    }

    /// Replaces whatever is at `path` with a journal holding exactly `leases` (used once, when a
    /// store from before the journal moves its leases here).
    pub fn create(path: &Path, leases: Vec<Lease>) -> Result<Journal, JournalError> {
        let map: HashMap<Ipv4Addr, Lease> = leases.into_iter().map(|l| (l.ip, l)).collect();
        let journal = Journal {
            path: path.to_owned(),
            leases: RwLock::new(map),
            file: Mutex::new(Appender {
                file: None,
                len: 0,
                lines: 0,
                stale: true,
                #[cfg(test)]
                fail_next: false,
            }),
        };
        {
            let mut appender = journal.appender();
            journal.rewrite(&mut appender)?;
        }
        Ok(journal)
    }

    /// Every lease, ordered by address.
    pub fn all(&self) -> Vec<Lease> {
        let mut all: Vec<Lease> = self.read().values().cloned().collect();
        all.sort_unstable_by_key(|l| l.ip);
        all
    }

    pub fn get(&self, ip: Ipv4Addr) -> Option<Lease> {
        self.read().get(&ip).cloned()
    }

    /// Writes `leases` and syncs them; only then are they what `all` and `get` answer. On an
    /// error nothing of `leases` counts as written.
    pub fn put(&self, leases: Vec<Lease>) -> Result<(), JournalError> {
        let mut appender = self.appender();
        self.append(&mut appender, &leases)?;
        let mut map = self.write();
        for lease in leases {
            map.insert(lease.ip, lease);
        }
        let live = map.len() as u64;
        drop(map);
        if appender.lines > live * SLACK_FACTOR + SLACK_LINES
            && let Err(e) = self.rewrite(&mut appender)
        {
            // The appended lines are synced; a later write tries again.
            tracing::warn!(error = %e, "lease journal: cannot rewrite the journal smaller");
        }
        Ok(())
    }

    /// Changes the lease on `ip` with `change` and writes it; `None` when there is no lease.
    pub fn update(&self, ip: Ipv4Addr, change: impl FnOnce(&mut Lease)) -> Result<Option<Lease>, JournalError> {
        let mut appender = self.appender();
        let Some(mut lease) = self.get(ip) else { return Ok(None) };
        change(&mut lease);
        self.append(&mut appender, std::slice::from_ref(&lease))?;
        self.write().insert(ip, lease.clone());
        Ok(Some(lease))
    }

    fn append(&self, appender: &mut Appender, leases: &[Lease]) -> Result<(), JournalError> {
        if appender.stale {
            self.rewrite(appender)?;
        }
        let mut buf = Vec::with_capacity(leases.len() * 192);
        for lease in leases {
            line(&mut buf, lease);
        }
        let err = |source| JournalError { path: self.path.clone(), source };
        let file = match appender.file.as_mut() {
            Some(f) => f,
            None => appender.file.insert(open_append(&self.path).map_err(err)?),
        };
        #[cfg(test)]
        let injected = std::mem::take(&mut appender.fail_next);
        #[cfg(not(test))]
        let injected = false;
        let written = if injected {
            Err(std::io::Error::other("injected write failure"))
        } else {
            file.write_all(&buf).and_then(|()| file.sync_data())
        };
        if let Err(e) = written {
            // Part of the batch may be in the file, or in the page cache and never to reach the
            // disk: rewrite from the committed leases before the next append.
            let _ = file.set_len(appender.len);
            appender.stale = true;
            return Err(err(e));
        }
        appender.len += buf.len() as u64;
        appender.lines += leases.len() as u64;
        Ok(())
    }

    /// Writes the committed leases to a new file, syncs it and renames it over the journal.
    fn rewrite(&self, appender: &mut Appender) -> Result<(), JournalError> {
        let mut buf = Vec::new();
        let lines = {
            let map = self.read();
            for lease in map.values() {
                line(&mut buf, lease);
            }
            map.len() as u64
        };
        let err = |source| JournalError { path: self.path.clone(), source };
        let beside = self.path.with_extension("journal.new");
        let mut f =
            OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&beside).map_err(err)?;
        f.write_all(&buf).and_then(|()| f.sync_all()).map_err(err)?;
        std::fs::rename(&beside, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        *appender = Appender {
            file: Some(open_append(&self.path).map_err(err)?),
            len: buf.len() as u64,
            lines,
            stale: false,
            #[cfg(test)]
            fail_next: false,
        };
        Ok(())
    }

    fn appender(&self) -> std::sync::MutexGuard<'_, Appender> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Ipv4Addr, Lease>> {
        self.leases.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Ipv4Addr, Lease>> {
        self.leases.write().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    pub(crate) fn fail_next_write(&self) {
        self.appender().fail_next = true;
    }

    #[cfg(test)]
    fn lines(&self) -> u64 {
        self.appender().lines
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().append(true).create(true).mode(0o600).open(path)
}

/// Appends one journal line for `lease` to `buf`.
fn line(buf: &mut Vec<u8>, lease: &Lease) {
    let start = buf.len();
    buf.extend_from_slice(b"00000000 ");
    // Plain data with string keys: serialising into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, lease);
    let crc = crc32(&buf[start + 9..]);
    // Eight hex digits into the eight bytes reserved for them: cannot fail, allocates nothing.
    let _ = write!(&mut buf[start..start + 8], "{crc:08x}");
    buf.push(b'\n');
}

struct Replayed {
    leases: HashMap<Ipv4Addr, Lease>,
    /// Bytes up to the end of the last whole line.
    valid_len: usize,
    lines: u64,
    damaged: u64,
}

fn replay(bytes: &[u8]) -> Replayed {
    let mut out = Replayed { leases: HashMap::new(), valid_len: 0, lines: 0, damaged: 0 };
    let mut pending_damage = 0;
    let mut at = 0;
    while at < bytes.len() {
        let Some(end) = bytes[at..].iter().position(|&b| b == b'\n').map(|i| at + i) else {
            break; // No newline: a write cut short.
        };
        match parse_line(&bytes[at..end]) {
            Some(lease) => {
                out.damaged += pending_damage;
                pending_damage = 0;
                out.lines += 1;
                out.leases.insert(lease.ip, lease);
                out.valid_len = end + 1;
            }
            // Damage is only counted once a good line follows: damage at the very end is a
            // write cut short, and is cut off.
            None => pending_damage += 1,
        }
        at = end + 1;
    }
    out
}

fn parse_line(line: &[u8]) -> Option<Lease> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    if line.get(8) != Some(&b' ') {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if crc != crc32(json) {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// CRC-32 (IEEE 802.3, as zlib and `cksum -a crc32b`), bitwise over a byte table.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 == 1 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |c, &b| TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8))
}

#[cfg(test)]
mod tests;
