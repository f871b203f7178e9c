//! TFTP against real clients: atftp, tftp-hpa and curl fetch files with and without options
//! (blksize 1468, windowsize 8) and get identical bytes; the traversal matrix and writes are
//! refused (checked with raw request packets, so NUL bytes and odd names reach the server as
//! sent). Each test listens on its own loopback address, but one: a veth link with a 1400-byte
//! MTU, where the kernel refuses UDP segmentation offload for full-size blocks.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::netns::Pair;
use crate::support::{self, Daemon};

/// A TFTP root with a 1 MiB random file, a subdirectory, a sibling directory whose name starts
/// with the root's, and symlinks that point out of the root.
fn root(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("tftp");
    std::fs::create_dir_all(root.join("arm64")).expect("root");
    let mut data = vec![0u8; 1 << 20];
    getrandom_fill(&mut data);
    std::fs::write(root.join("random.bin"), &data).expect("file");
    std::fs::write(root.join("arm64/snp.efi"), b"arm64 binary").expect("file");
    let sibling = dir.join("tftp-evil");
    std::fs::create_dir_all(&sibling).expect("sibling");
    std::fs::write(sibling.join("secret"), b"SIBLING-SECRET").expect("secret");
    std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).expect("symlink");
    std::os::unix::fs::symlink("../tftp-evil/secret", root.join("sibling")).expect("symlink");
    std::os::unix::fs::symlink("arm64/snp.efi", root.join("inside-link")).expect("symlink");
    root
}

fn getrandom_fill(buf: &mut [u8]) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
    for b in buf.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = (state >> 24) as u8;
    }
}

fn serve(dir: &Path, listen: &str) -> Daemon {
    let root = root(dir);
    let extra = format!(
        "[tftp]\nlisten = \"{listen}:69\"\nroot = \"{}\"\n[http]\nlisten = \"{listen}:8080\"\nimages = \"{}\"\n",
        root.display(),
        dir.display()
    );
    support::start(&support::config(dir, &extra), &[])
}

fn fetched(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn atftp_tftp_hpa_and_curl_get_identical_bytes_with_and_without_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = "127.69.0.1";
    let _daemon = serve(dir.path(), host);
    let want = std::fs::read(dir.path().join("tftp/random.bin")).expect("original");
    let out = |name: &str| dir.path().join(name);

    let runs: Vec<(&str, Vec<String>, std::path::PathBuf)> = vec![
        (
            "atftp",
            vec![
                "-g".into(),
                "-r".into(),
                "random.bin".into(),
                "-l".into(),
                out("a1").display().to_string(),
                host.into(),
                "69".into(),
            ],
            out("a1"),
        ),
        (
            "atftp",
            vec![
                "--option".into(),
                "blksize 1468".into(),
                "--option".into(),
                "windowsize 8".into(),
                "--option".into(),
                "tsize 0".into(),
                "-g".into(),
                "-r".into(),
                "random.bin".into(),
                "-l".into(),
                out("a2").display().to_string(),
                host.into(),
                "69".into(),
            ],
            out("a2"),
        ),
        (
            "tftp",
            vec![
                host.into(),
                "69".into(),
                "-m".into(),
                "binary".into(),
                "-c".into(),
                "get".into(),
                "random.bin".into(),
                out("h1").display().to_string(),
            ],
            out("h1"),
        ),
        (
            "curl",
            vec!["-sS".into(), "-o".into(), out("c1").display().to_string(), format!("tftp://{host}/random.bin")],
            out("c1"),
        ),
        (
            "curl",
            vec![
                "-sS".into(),
                "--tftp-blksize".into(),
                "1468".into(),
                "-o".into(),
                out("c2").display().to_string(),
                format!("tftp://{host}/random.bin"),
            ],
            out("c2"),
        ),
        (
            "curl",
            vec!["-sS".into(), "-o".into(), out("c3").display().to_string(), format!("tftp://{host}/inside-link")],
            out("c3"),
        ),
    ];
    for (program, args, file) in runs {
        let o = Command::new("timeout").arg("60").arg(program).args(&args).output().expect(program);
        fetched(&o, &format!("{program} {args:?}"));
        let got = std::fs::read(&file).unwrap_or_default();
        if file.ends_with("c3") {
            assert_eq!(got, b"arm64 binary", "a symlink inside the root is followed");
        } else {
            assert!(got == want, "{program} {args:?}: {} bytes, want {} identical bytes", got.len(), want.len());
        }
    }
    let o = Command::new("curl").args(["-sS", &format!("tftp://{host}/autoexec.ipxe")]).output().expect("curl");
    fetched(&o, "autoexec.ipxe");
    assert!(String::from_utf8_lossy(&o.stdout).contains("http://${next-server}:8080/boot.ipxe"));
}

/// Sends one raw request and returns the server's first answer (opcode, error code, text).
fn raw_request(host: &str, opcode: u8, name: &[u8]) -> (u16, u16, String) {
    let sock = UdpSocket::bind(format!("{host}:0")).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut pkt = vec![0, opcode];
    pkt.extend_from_slice(name);
    pkt.extend_from_slice(b"\0octet\0");
    sock.send_to(&pkt, format!("{host}:69")).expect("send");
    let mut buf = [0u8; 1600];
    let (n, _) = sock
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no answer to {:?} within 5 s: {e}", String::from_utf8_lossy(name)));
    let text = String::from_utf8_lossy(&buf[4..n]).trim_end_matches('\0').to_string();
    (u16::from_be_bytes([buf[0], buf[1]]), u16::from_be_bytes([buf[2], buf[3]]), text)
}

#[test]
fn traversal_symlinks_out_of_the_root_and_writes_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = "127.69.0.2";
    let daemon = serve(dir.path(), host);
    let long = vec![b'a'; 300];
    let names: Vec<&[u8]> = vec![
        b"../tftp-evil/secret",
        b"arm64/../../tftp-evil/secret",
        b"..\\tftp-evil\\secret",
        b"/etc/passwd",
        b"//etc/passwd",
        b"arm64//snp.efi",
        b"%2e%2e/tftp-evil/secret",
        b"..%2ftftp-evil%2fsecret",
        b"",
        &long,
        b"passwd",
        b"sibling",
    ];
    for name in names {
        let (op, code, text) = raw_request(host, 1, name);
        assert_eq!(
            (op, code),
            (5, 2),
            "{:?} must get ERROR 2 (access violation), got {op} {code} {text}",
            String::from_utf8_lossy(name)
        );
    }
    // A NUL inside the name ends it for the protocol; what follows is read as the mode, which
    // is not a TFTP mode: the request is dropped (no answer), and never served.
    let sock = UdpSocket::bind(format!("{host}:0")).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    sock.send_to(b"\0\x01random.bin\0../../etc/passwd\0octet\0", format!("{host}:69")).expect("send");
    let mut buf = [0u8; 1600];
    if let Ok((n, _)) = sock.recv_from(&mut buf) {
        assert_eq!(&buf[..2], &[0, 5], "a NUL-mangled request got {n} bytes that are not an ERROR");
    }
    let (op, code, _) = raw_request(host, 1, b"missing.bin");
    assert_eq!((op, code), (5, 1), "a missing file is file-not-found");
    let (op, code, _) = raw_request(host, 2, b"upload.bin");
    assert_eq!((op, code), (5, 2), "writes are refused");
    let o = Command::new("timeout")
        .args(["20", "atftp", "-p", "-l", "/etc/hostname", "-r", "upload.bin", host, "69"])
        .output()
        .expect("atftp");
    assert!(!o.status.success(), "atftp upload must fail");
    assert!(!dir.path().join("tftp/upload.bin").exists());
    // A file that exists: the first DATA block.
    let (op, block, _) = raw_request(host, 1, b"arm64/snp.efi");
    assert_eq!((op, block), (3, 1));
    // The refusals are logged inside the service's span and the transfer's (with the client),
    // one JSON object per line, with no hand-written prefix.
    let lines: Vec<serde_json::Value> = daemon.log.try_iter().filter_map(|l| serde_json::from_str(&l).ok()).collect();
    let refused = lines.iter().find(|l| l["message"] == "read refused").unwrap_or_else(|| panic!("{lines:?}"));
    let spans: Vec<&str> =
        refused["spans"].as_array().into_iter().flatten().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(spans, ["tftp", "transfer"], "{refused}");
    assert!(refused["spans"][1]["client"].as_str().is_some_and(|c| c.starts_with(host)), "{refused}");
}

fn recv_block(sock: &UdpSocket) -> Option<u16> {
    let mut buf = [0u8; 1600];
    let n = sock.recv(&mut buf).ok()?;
    assert!(n >= 4 && buf[1] == 3, "expected DATA, got {:?}", &buf[..n.min(8)]);
    Some(u16::from_be_bytes([buf[2], buf[3]]))
}

#[test]
fn a_window_resends_from_the_first_unacknowledged_block_and_a_client_error_ends_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = "127.69.0.3";
    let _daemon = serve(dir.path(), host);
    let sock = UdpSocket::bind(format!("{host}:0")).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    sock.send_to(b"\0\x01random.bin\0octet\0windowsize\x004\0", format!("{host}:69")).expect("send");
    let mut buf = [0u8; 1600];
    let (n, server) = sock.recv_from(&mut buf).expect("OACK");
    assert_eq!(&buf[..n], b"\0\x06windowsize\x004\0");
    sock.connect(server).expect("connect to the transfer's port");
    sock.send(b"\0\x04\0\0").expect("ACK 0");
    let first: Vec<Option<u16>> = (0..4).map(|_| recv_block(&sock)).collect();
    assert_eq!(first, [Some(1), Some(2), Some(3), Some(4)]);
    // Blocks 3 and 4 "lost": acknowledging 2 brings the window from 3.
    sock.send(b"\0\x04\0\x02").expect("ACK 2");
    let second: Vec<Option<u16>> = (0..4).map(|_| recv_block(&sock)).collect();
    assert_eq!(second, [Some(3), Some(4), Some(5), Some(6)]);
    // A duplicate of ACK 2 changes nothing; silence brings the same window again after the timeout.
    sock.send(b"\0\x04\0\x02").expect("duplicate ACK 2");
    assert_eq!(recv_block(&sock), Some(3), "resent after the timeout, not doubled");
    for _ in 0..3 {
        recv_block(&sock);
    }
    sock.send(b"\0\x05\0\0client gave up\0").expect("ERROR");
    sock.set_read_timeout(Some(Duration::from_millis(2500))).expect("timeout");
    let mut extra = 0;
    while recv_block(&sock).is_some() {
        extra += 1;
        assert!(extra < 5, "the transfer went on after the client's error");
    }
}

#[test]
fn a_file_past_65535_blocks_rolls_over_and_arrives_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = "127.69.0.4";
    let _daemon = serve(dir.path(), host);
    let mut data = vec![0u8; (65_536 + 3) * 512 + 100];
    getrandom_fill(&mut data);
    std::fs::write(dir.path().join("tftp/huge.bin"), &data).expect("file");
    let out_path = dir.path().join("huge.out");
    let out = std::process::Command::new("atftp")
        .args(["--option", "windowsize 16", "-g", "-r", "huge.bin", "-l"])
        .arg(&out_path)
        .args([host, "69"])
        .output()
        .expect("atftp");
    fetched(&out, "atftp 512-byte blocks");
    let got = std::fs::read(&out_path).expect("downloaded");
    assert!(got == data, "{} bytes, want {} identical bytes", got.len(), data.len());
}

#[test]
fn a_link_with_a_smaller_mtu_gets_blocks_that_fit_it() {
    // blksize 1468 fills a 1500-byte MTU; on a 1400-byte link (an overlay, a tunnel) such blocks
    // would be fragmented, and sent with segmentation offload they are refused outright
    // (EMSGSIZE). The server answers a smaller blksize that fits the path.
    let pair = Pair::new("g");
    pair.client_address("10.1.107.50/24");
    for (ns, dev) in [(&pair.srv, "srv0"), (&pair.cli, "cli0")] {
        let out =
            std::process::Command::new("ip").args(["-n", ns, "link", "set", dev, "mtu", "1400"]).output().expect("ip");
        fetched(&out, "ip link set mtu 1400");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = root(dir.path());
    let mut data = vec![0u8; 3_000_000];
    getrandom_fill(&mut data);
    std::fs::write(root.join("big.bin"), &data).expect("file");
    let extra = format!("[tftp]\nlisten = \"10.1.107.1:69\"\nroot = \"{}\"\n", root.display());
    let _daemon = support::start_in(Some(&pair.srv), &support::config(dir.path(), &extra), &[]);
    let out_path = dir.path().join("big.out");
    let out = pair
        .cli_command("atftp")
        .args(["--option", "blksize 1468", "--option", "windowsize 16", "-g", "-r", "big.bin", "-l"])
        .arg(&out_path)
        .args(["10.1.107.1", "69"])
        .output()
        .expect("atftp");
    fetched(&out, "atftp over a 1400-byte MTU");
    let got = std::fs::read(&out_path).expect("downloaded");
    assert!(got == data, "{} bytes, want {} identical bytes", got.len(), data.len());
    let oack = crate::netns::in_netns(&pair.cli, || {
        let sock = UdpSocket::bind("10.1.107.50:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        sock.send_to(b"\x00\x01big.bin\x00octet\x00blksize\x001468\x00", "10.1.107.1:69").expect("send");
        let mut buf = [0u8; 512];
        let (n, _) = sock.recv_from(&mut buf).expect("an OACK");
        buf[..n].to_vec()
    });
    assert_eq!(oack, b"\x00\x06blksize\x001368\x00", "1400 - 20 IP - 8 UDP - 4 TFTP");
}

#[test]
fn transfers_that_share_the_server_get_identical_bytes() {
    // A lone transfer sends datagram by datagram; while others run, windows go out with
    // segmentation offload. A held transfer (OACK never acknowledged, long timeout) keeps the
    // server shared while four atftp clients fetch the file at once.
    let dir = tempfile::tempdir().expect("tempdir");
    let host = "127.69.0.5";
    let _daemon = serve(dir.path(), host);
    let want = std::fs::read(dir.path().join("tftp/random.bin")).expect("original");
    let holder = UdpSocket::bind(format!("{host}:0")).expect("bind");
    holder.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    holder.send_to(b"\0\x01random.bin\0octet\0timeout\x0030\0", format!("{host}:69")).expect("send");
    let mut buf = [0u8; 1600];
    let (n, held) = holder.recv_from(&mut buf).expect("OACK");
    assert_eq!(&buf[..n], b"\0\x06timeout\x0030\0");
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let out = dir.path().join(format!("shared{i}"));
            let child = Command::new("timeout")
                .args(["60", "atftp", "--option", "blksize 1468", "--option", "windowsize 8", "-g", "-r", "random.bin"])
                .arg("-l")
                .arg(&out)
                .args([host, "69"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("atftp");
            (child, out)
        })
        .collect();
    for (child, out) in clients {
        let o = child.wait_with_output().expect("atftp ran");
        fetched(&o, "atftp beside other transfers");
        let got = std::fs::read(&out).unwrap_or_default();
        assert!(got == want, "{}: {} bytes, want {} identical bytes", out.display(), got.len(), want.len());
    }
    holder.send_to(b"\0\x05\0\0done\0", held).expect("end the held transfer");
}
