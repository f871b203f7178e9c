//! The checks RFC 8906 (section 8) and ISC's EDNS compliance tester make of an authoritative
//! server, one test per behaviour, with dig against a running slipway: plain DNS, EDNS version
//! 0, an unknown version (BADVERS with an OPT of version 0, no answer), unknown options and
//! flags (ignored, not echoed), the DO bit (copied, RFC 3225), EDNS over TCP, an unknown opcode
//! (NOTIMP) and the reserved header bit Z (ignored, clear in the answer).

use crate::dns::{run, serve, status};

const ZONE: &str = "prod.lab.example";

/// dig's answer to `args` (a SOA query for the cluster zone, no recursion, no cookie) from a
/// daemon on `server`.
fn dig(server: &str, args: &[&str]) -> String {
    let mut all = vec!["+norec", "+nocookie", "+noad"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[ZONE, "SOA"]);
    run("dig", server, &all)
}

/// The `; EDNS:` line of a dig answer, if it has an OPT record.
fn edns(output: &str) -> Option<&str> {
    output.lines().find(|l| l.starts_with("; EDNS:"))
}

/// The count of answer records in dig's header line.
fn answers(output: &str) -> usize {
    output
        .split("ANSWER: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ANSWER count in:\n{output}"))
}

fn with_daemon(listen: &str, check: impl FnOnce(&str)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let _daemon = serve(dir.path(), listen, "");
    check(listen);
}

#[test]
fn a_plain_query_gets_an_authoritative_answer_and_no_opt() {
    with_daemon("127.53.1.1", |s| {
        let out = dig(s, &["+noedns"]);
        assert_eq!(status(&out), "NOERROR", "{out}");
        assert!(out.contains("flags: qr aa;"), "authoritative, nothing else set:\n{out}");
        assert_eq!(answers(&out), 1, "{out}");
        assert_eq!(edns(&out), None, "no OPT to a query without one:\n{out}");
    });
}

#[test]
fn an_edns0_query_gets_an_opt_of_version_0_and_no_flags() {
    with_daemon("127.53.1.2", |s| {
        let out = dig(s, &["+edns=0"]);
        assert_eq!((status(&out), answers(&out)), ("NOERROR".to_owned(), 1), "{out}");
        assert_eq!(edns(&out), Some("; EDNS: version: 0, flags:; udp: 1232"), "{out}");
    });
}

#[test]
fn an_unknown_edns_version_gets_badvers_with_version_0_and_no_answer() {
    with_daemon("127.53.1.3", |s| {
        let out = dig(s, &["+edns=1", "+noednsneg"]);
        assert_eq!(status(&out), "BADVERS", "{out}");
        assert_eq!(answers(&out), 0, "{out}");
        assert_eq!(edns(&out), Some("; EDNS: version: 0, flags:; udp: 1232"), "{out}");
        // With an unknown option or flag beside it, still BADVERS, neither echoed.
        let out = dig(s, &["+edns=1", "+noednsneg", "+ednsopt=100"]);
        assert_eq!(
            (status(&out), edns(&out)),
            ("BADVERS".to_owned(), Some("; EDNS: version: 0, flags:; udp: 1232")),
            "{out}"
        );
        assert!(!out.contains("OPT=100"), "{out}");
        let out = dig(s, &["+edns=1", "+noednsneg", "+ednsflags=0x40"]);
        assert_eq!(
            (status(&out), edns(&out)),
            ("BADVERS".to_owned(), Some("; EDNS: version: 0, flags:; udp: 1232")),
            "{out}"
        );
        // Over TCP the same.
        let out = dig(s, &["+tcp", "+edns=1", "+noednsneg"]);
        assert_eq!((status(&out), answers(&out)), ("BADVERS".to_owned(), 0), "{out}");
    });
}

#[test]
fn an_unknown_edns_option_is_ignored_and_not_echoed() {
    with_daemon("127.53.1.4", |s| {
        let out = dig(s, &["+edns=0", "+ednsopt=100"]);
        assert_eq!((status(&out), answers(&out)), ("NOERROR".to_owned(), 1), "{out}");
        assert_eq!(edns(&out), Some("; EDNS: version: 0, flags:; udp: 1232"), "{out}");
        assert!(!out.contains("OPT=100"), "the unknown option is not echoed:\n{out}");
    });
}

#[test]
fn unknown_edns_flags_are_ignored_and_not_echoed() {
    with_daemon("127.53.1.5", |s| {
        let out = dig(s, &["+edns=0", "+ednsflags=0x40"]);
        assert_eq!((status(&out), answers(&out)), ("NOERROR".to_owned(), 1), "{out}");
        assert_eq!(edns(&out), Some("; EDNS: version: 0, flags:; udp: 1232"), "no MBZ flag back:\n{out}");
    });
}

#[test]
fn the_do_bit_is_copied_into_the_answer() {
    with_daemon("127.53.1.6", |s| {
        let out = dig(s, &["+edns=0", "+dnssec"]);
        assert_eq!((status(&out), answers(&out)), ("NOERROR".to_owned(), 1), "{out}");
        assert_eq!(edns(&out), Some("; EDNS: version: 0, flags: do; udp: 1232"), "{out}");
        // A name that is not there and a name under a wildcard take other paths: the same.
        let out = run("dig", s, &["+norec", "+nocookie", "+dnssec", "nope.prod.lab.example", "A"]);
        assert_eq!(
            (status(&out), edns(&out)),
            ("NXDOMAIN".to_owned(), Some("; EDNS: version: 0, flags: do; udp: 1232")),
            "{out}"
        );
        let out = run("dig", s, &["+norec", "+nocookie", "+dnssec", "x.apps.prod.lab.example", "A"]);
        assert_eq!(
            (status(&out), edns(&out)),
            ("NOERROR".to_owned(), Some("; EDNS: version: 0, flags: do; udp: 1232")),
            "{out}"
        );
    });
}

#[test]
fn edns_over_tcp_gets_the_same_answer() {
    with_daemon("127.53.1.7", |s| {
        let out = dig(s, &["+tcp", "+edns=0"]);
        assert_eq!((status(&out), answers(&out)), ("NOERROR".to_owned(), 1), "{out}");
        assert_eq!(edns(&out), Some("; EDNS: version: 0, flags:; udp: 1232"), "{out}");
        let out = dig(s, &["+tcp", "+noedns"]);
        assert_eq!((status(&out), answers(&out), edns(&out)), ("NOERROR".to_owned(), 1, None), "{out}");
    });
}

#[test]
fn an_unknown_opcode_gets_notimp() {
    with_daemon("127.53.1.8", |s| {
        for extra in [&["+noedns"][..], &["+noedns", "+header-only"], &["+edns=0"]] {
            let mut args = vec!["+opcode=15"];
            args.extend_from_slice(extra);
            let out = dig(s, &args);
            assert_eq!(status(&out), "NOTIMP", "{extra:?}:\n{out}");
            assert_eq!(answers(&out), 0, "{extra:?}:\n{out}");
            assert!(!out.contains(" aa"), "not authoritative for what it did not do, {extra:?}:\n{out}");
        }
    });
}

#[test]
fn the_reserved_header_bit_is_ignored_and_clear_in_the_answer() {
    with_daemon("127.53.1.9", |s| {
        for extra in [&["+noedns"][..], &["+edns=0"], &["+tcp", "+noedns"]] {
            let mut args = vec!["+zflag"];
            args.extend_from_slice(extra);
            let out = dig(s, &args);
            assert_eq!((status(&out), answers(&out)), ("NOERROR".to_owned(), 1), "{extra:?}:\n{out}");
            assert!(!out.contains("MBZ"), "Z is clear in the answer, {extra:?}:\n{out}");
        }
    });
}
