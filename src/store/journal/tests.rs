use super::*;
use crate::inventory::{LeaseState, Timestamp};

fn lease(ip: &str, mac: &str, state: LeaseState) -> Lease {
    Lease {
        ip: ip.parse().expect("ip"),
        mac: mac.parse().expect("mac"),
        network: "cluster".parse().expect("name"),
        state,
        expires: Timestamp::from_unix_millis(1_800_000_360_000),
        updated: Timestamp::from_unix_millis(1_800_000_000_000),
        hostname: Some("pxe-1".into()),
        client_id: Some("01525400aabbcc".into()),
    }
}

fn path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join(FILE_NAME)
}

#[test]
fn crc32_is_the_ieee_one() {
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn leases_put_survive_a_reopen_and_the_last_line_for_an_address_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&path(&dir)).expect("open");
    assert!(journal.all().is_empty());
    assert!(!path(&dir).exists(), "no file before the first lease");
    let a = lease("10.1.0.5", "52:54:00:00:00:05", LeaseState::Bound);
    let b = lease("10.1.0.6", "52:54:00:00:00:06", LeaseState::Bound);
    journal.put(vec![a.clone(), b.clone()]).expect("put");
    let released = Lease { state: LeaseState::Released, ..a.clone() };
    journal.put(vec![released.clone()]).expect("put");
    assert_eq!(journal.get(a.ip), Some(released.clone()));
    drop(journal);
    let reopened = Journal::open(&path(&dir)).expect("reopen");
    assert_eq!(reopened.all(), vec![released, b]);
    assert_eq!(reopened.lines(), 3);
}

#[test]
fn an_unfinished_last_line_is_cut_off_and_writing_goes_on_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = lease("10.1.0.5", "52:54:00:00:00:05", LeaseState::Bound);
    Journal::open(&path(&dir)).expect("open").put(vec![a.clone()]).expect("put");
    let whole = std::fs::read(path(&dir)).expect("read");
    // A crash in the middle of the next write: half a line, no newline.
    let b = lease("10.1.0.6", "52:54:00:00:00:06", LeaseState::Bound);
    let mut torn = Vec::new();
    line(&mut torn, &b);
    let mut file = OpenOptions::new().append(true).open(path(&dir)).expect("open");
    file.write_all(&torn[..torn.len() / 2]).expect("write");
    drop(file);

    let journal = Journal::open(&path(&dir)).expect("reopen");
    assert_eq!(journal.all(), vec![a.clone()]);
    assert_eq!(std::fs::read(path(&dir)).expect("read"), whole, "the torn line is gone from the file");
    let c = lease("10.1.0.7", "52:54:00:00:00:07", LeaseState::Bound);
    journal.put(vec![c.clone()]).expect("put");
    drop(journal);
    assert_eq!(Journal::open(&path(&dir)).expect("reopen").all(), vec![a, c]);
}

#[test]
fn a_damaged_line_between_good_ones_is_skipped_and_the_rest_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = lease("10.1.0.5", "52:54:00:00:00:05", LeaseState::Bound);
    let b = lease("10.1.0.6", "52:54:00:00:00:06", LeaseState::Bound);
    let c = lease("10.1.0.7", "52:54:00:00:00:07", LeaseState::Bound);
    let mut bytes = Vec::new();
    for l in [&a, &b, &c] {
        line(&mut bytes, l);
    }
    // Flip one character inside b's JSON: its checksum no longer matches.
    let second = bytes.iter().position(|&x| x == b'\n').expect("line") + 1;
    let at = second + 20;
    bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(path(&dir), &bytes).expect("write");

    let journal = Journal::open(&path(&dir)).expect("open");
    assert_eq!(journal.all(), vec![a, c]);
    assert_eq!(std::fs::read(path(&dir)).expect("read").len(), bytes.len(), "only a torn tail is cut");
}

#[test]
fn a_failed_write_changes_nothing_and_the_next_write_rewrites_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&path(&dir)).expect("open");
    let a = lease("10.1.0.5", "52:54:00:00:00:05", LeaseState::Bound);
    journal.put(vec![a.clone()]).expect("put");
    journal.fail_next_write();
    let b = lease("10.1.0.6", "52:54:00:00:00:06", LeaseState::Bound);
    let e = journal.put(vec![b.clone()]).expect_err("injected");
    assert!(e.to_string().contains(FILE_NAME), "{e}");
    assert_eq!(journal.all(), vec![a.clone()], "a failed write is not committed");
    let c = lease("10.1.0.7", "52:54:00:00:00:07", LeaseState::Bound);
    journal.put(vec![c.clone()]).expect("the next write works");
    drop(journal);
    let reopened = Journal::open(&path(&dir)).expect("reopen");
    assert_eq!(reopened.all(), vec![a, c]);
    assert_eq!(reopened.lines(), 2, "rewritten from the committed leases");
}

#[test]
fn update_changes_one_lease_and_an_unknown_address_is_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&path(&dir)).expect("open");
    let a = lease("10.1.0.5", "52:54:00:00:00:05", LeaseState::Bound);
    journal.put(vec![a.clone()]).expect("put");
    let changed = journal.update(a.ip, |l| l.state = LeaseState::Released).expect("update").expect("found");
    assert_eq!(changed.state, LeaseState::Released);
    assert_eq!(journal.update("10.1.0.9".parse().expect("ip"), |_| {}).expect("update"), None);
    drop(journal);
    assert_eq!(Journal::open(&path(&dir)).expect("reopen").all(), vec![changed]);
}

#[test]
fn a_journal_of_many_more_lines_than_leases_is_rewritten_with_one_line_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&path(&dir)).expect("open");
    let batch: Vec<Lease> = (0..1000u32)
        .map(|i| Lease {
            ip: Ipv4Addr::from(0x0a01_0000 + i),
            ..lease("10.1.0.0", "52:54:00:00:00:01", LeaseState::Bound)
        })
        .collect();
    let limit = 1000 * SLACK_FACTOR + SLACK_LINES;
    let mut rewritten = false;
    for round in 0..=(limit / 1000) {
        journal.put(batch.clone()).expect("put");
        if journal.lines() < (round + 1) * 1000 {
            rewritten = true;
            break;
        }
    }
    assert!(rewritten, "rewritten once past {limit} lines");
    assert_eq!(journal.lines(), 1000);
    let text = std::fs::read_to_string(path(&dir)).expect("read");
    assert_eq!(text.lines().count(), 1000);
    assert!(!dir.path().join("leases.journal.new").exists());
    drop(journal);
    assert_eq!(Journal::open(&path(&dir)).expect("reopen").all(), batch);
}

#[test]
fn create_replaces_a_journal_with_exactly_the_given_leases() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(path(&dir), b"left over from an interrupted migration\n").expect("write");
    let a = lease("10.1.0.5", "52:54:00:00:00:05", LeaseState::Bound);
    drop(Journal::create(&path(&dir), vec![a.clone()]).expect("create"));
    assert_eq!(Journal::open(&path(&dir)).expect("open").all(), vec![a]);
}
