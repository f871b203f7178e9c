use super::*;

fn vars() -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("hostname", "m0".to_string()),
        ("phone_home_url", "http://10.1.107.1:8080/phone-home".to_string()),
    ])
}

fn rendered(base: Base<'_>, keys: &[&str]) -> (Value, Vec<String>) {
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let r = render(base, &vars(), &Additions { ssh_keys: &keys, ..Additions::default() }).expect("renders");
    (serde_json::from_str(&r.body).expect("JSON"), r.left_out)
}

const KEY: &str = "ssh-ed25519 AAAA ops@lab";

#[test]
fn the_additions_set_hostname_keys_and_the_phone_home_unit() {
    let (v, left_out) = rendered(Base::Empty, &[KEY]);
    assert_eq!(v["ignition"]["version"], SPEC_VERSION);
    assert_eq!(v["storage"]["files"][0]["path"], "/etc/hostname");
    assert_eq!(v["storage"]["files"][0]["contents"]["source"], "data:,m0");
    assert_eq!(v["passwd"]["users"], json!([{ "name": "core", "sshAuthorizedKeys": [KEY] }]));
    assert_eq!(v["systemd"]["units"][0]["name"], PHONE_HOME_UNIT);
    let unit = v["systemd"]["units"][0]["contents"].as_str().expect("contents");
    assert!(unit.contains("-X POST http://10.1.107.1:8080/phone-home"), "{unit}");
    assert_eq!(check::parse_unit(unit), Ok(()));
    assert!(left_out.is_empty());
}

#[test]
fn a_template_is_rendered_and_keeps_its_own_entries() {
    let base = r#"{"ignition":{"version":"3.2.0"},"systemd":{"units":[{"name":"k3s.service","enabled":true}]},"storage":{"files":[{"path":"/etc/motd","contents":{"source":"data:,{{hostname}}"}}]}}"#;
    let (v, _) = rendered(Base::Template(base), &[]);
    assert_eq!(v["systemd"]["units"].as_array().expect("units").len(), 2);
    assert_eq!(v["storage"]["files"][0]["contents"]["source"], "data:,m0");
    assert!(v.get("passwd").is_none());
    assert_eq!(v["ignition"]["version"], "3.2.0", "the base's version is kept");
}

#[test]
fn the_keys_join_user_core_of_the_base_each_once() {
    let base = r#"{"ignition":{"version":"3.2.0"},"passwd":{"users":[{"name":"core","sshAuthorizedKeys":["ssh-rsa AAAA installer","ssh-ed25519 AAAA ops@lab"]},{"name":"ops","groups":["wheel"]}]}}"#;
    let (v, left_out) = rendered(Base::Verbatim(base), &[KEY, "ssh-ed25519 BBBB second"]);
    assert_eq!(
        v["passwd"]["users"],
        json!([
            { "name": "core", "sshAuthorizedKeys": ["ssh-rsa AAAA installer", KEY, "ssh-ed25519 BBBB second"] },
            { "name": "ops", "groups": ["wheel"] },
        ])
    );
    assert!(left_out.is_empty());
    // A key configured twice is given once, to a base without user core too.
    let (v, _) = rendered(Base::Empty, &[KEY, KEY]);
    assert_eq!(v["passwd"]["users"], json!([{ "name": "core", "sshAuthorizedKeys": [KEY] }]));
    let base = r#"{"ignition":{"version":"3.2.0"},"passwd":{"users":[{"name":"core","passwordHash":"x"}]}}"#;
    let (v, _) = rendered(Base::Verbatim(base), &[KEY]);
    assert_eq!(v["passwd"]["users"], json!([{ "name": "core", "passwordHash": "x", "sshAuthorizedKeys": [KEY] }]));
}

#[test]
fn a_path_or_unit_the_base_defines_stays_the_bases_and_is_reported() {
    let base = r#"{"ignition":{"version":"3.2.0"},"storage":{"files":[{"path":"/etc/hostname","contents":{"source":"data:,theirs"}}]},"systemd":{"units":[{"name":"slipway-phone-home.service","mask":true}]}}"#;
    let (v, left_out) = rendered(Base::Verbatim(base), &[]);
    assert_eq!(v["storage"]["files"], json!([{ "path": "/etc/hostname", "contents": { "source": "data:,theirs" } }]));
    assert_eq!(v["systemd"]["units"], json!([{ "name": PHONE_HOME_UNIT, "mask": true }]));
    assert_eq!(left_out.len(), 2, "{left_out:?}");
    assert!(left_out[0].contains("/etc/hostname") && left_out[1].contains(PHONE_HOME_UNIT), "{left_out:?}");

    // A directory or link at the path counts too, and so does a file where the unit is written.
    let base = r#"{"ignition":{"version":"3.3.0"},"storage":{"links":[{"path":"/etc/hostname","target":"/run/h"}],"files":[{"path":"/etc/systemd/system/slipway-phone-home.service"}]}}"#;
    let (v, left_out) = rendered(Base::Verbatim(base), &[]);
    assert_eq!(v["storage"]["files"].as_array().expect("files").len(), 1);
    assert!(v["systemd"]["units"].is_null());
    assert_eq!(left_out.len(), 2, "{left_out:?}");
}

#[test]
fn a_config_that_replaces_itself_reports_that_nothing_of_slipways_is_applied() {
    let base = r#"{"ignition":{"version":"3.2.0","config":{"replace":{"source":"https://elsewhere/config.ign"}}}}"#;
    let (_, left_out) = rendered(Base::Verbatim(base), &[]);
    assert!(left_out.iter().any(|l| l.contains("ignition.config.replace")), "{left_out:?}");
}

#[test]
fn a_render_that_would_be_invalid_is_an_error_naming_where_without_values() {
    for (base, want) in [
        (
            r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/a","contents":{"source":"data:,SECRET"}},{"path":"/etc/a"}]}}"#,
            "$.storage.files.1: duplicate entry (path /etc/a)",
        ),
        (r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"etc/a"}]}}"#, "path not absolute"),
        (r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc//a"}]}}"#, "path is not clean"),
        (
            r#"{"ignition":{"version":"3.3.0"},"storage":{"links":[{"path":"/opt","target":"/var/opt"}],"files":[{"path":"/opt/x"}]}}"#,
            "under the link /opt",
        ),
        (r#"{"ignition":{"version":"3.3.0"},"systemd":{"units":[{"name":"k3s"}]}}"#, "invalid systemd unit extension"),
        (
            r#"{"ignition":{"version":"3.3.0"},"systemd":{"units":[{"name":"a.service","contents":"[Unit]\nSECRET\n"}]}}"#,
            "$.systemd.units.0.contents: invalid unit content",
        ),
        (
            r#"{"ignition":{"version":"3.3.0"},"systemd":{"units":[{"name":"a.service","dropins":[{"name":"x.txt"}]}]}}"#,
            "drop-in extension",
        ),
        (
            r#"{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"ops","sshAuthorizedKeys":["SECRET","SECRET"]}]}}"#,
            "$.passwd.users.0.sshAuthorizedKeys.1: duplicate entry",
        ),
        (r#"{"ignition":{"version":"3.3.0"},"storage":{"files":"SECRET"}}"#, "invalid type"),
        (
            r#"{"ignition":{"version":"3.3.0"},"kernelArguments":{"shouldExist":["quiet"],"shouldNotExist":["quiet"]}}"#,
            "$.kernelArguments.shouldNotExist.0: duplicate entry",
        ),
    ] {
        let err = render(Base::Template(base), &vars(), &Additions::default()).expect_err(base).to_string();
        assert!(err.contains(want) && !err.contains("SECRET"), "{base}:\n{err}");
    }
}

#[test]
fn a_template_that_is_not_json_is_an_error() {
    assert!(matches!(render(Base::Template("not json"), &vars(), &Additions::default()), Err(IgnitionError::Json(_))));
    assert!(matches!(render(Base::Verbatim("[1]"), &vars(), &Additions::default()), Err(IgnitionError::Json(_))));
    assert!(matches!(
        render(Base::Verbatim(r#"{"ignition":"x"}"#), &vars(), &Additions::default()),
        Err(IgnitionError::Json(_))
    ));
    let err = render(Base::Verbatim(r#"{"storage":"x"}"#), &vars(), &Additions::default())
        .expect_err("storage is not an object");
    assert!(matches!(err, IgnitionError::Invalid(_)), "{err}");
}

#[test]
fn a_verbatim_base_is_not_template_rendered() {
    let base = r#"{"ignition":{"version":"3.2.0"},"storage":{"files":[{"path":"/etc/x","contents":{"source":"data:,{{not-a-var}}"}}]}}"#;
    let (v, _) = rendered(Base::Verbatim(base), &[]);
    assert_eq!(v["storage"]["files"][0]["contents"]["source"], "data:,{{not-a-var}}");
}

#[test]
fn templates_may_place_the_keys_themselves() {
    let base = r#"{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"ops","sshAuthorizedKeys":{{ssh_authorized_keys}}}]}}"#;
    let (v, _) = rendered(Base::Template(base), &[KEY]);
    assert_eq!(v["passwd"]["users"][0]["sshAuthorizedKeys"], json!([KEY]));
    assert_eq!(v["passwd"]["users"][1]["name"], "core");
}

#[test]
fn uploads_are_checked_against_their_spec_and_ignitions_rules_without_quoting_values() {
    assert_eq!(check_upload(br#"{"ignition":{"version":"3.2.0"}}"#), Ok("3.2.0".into()));
    let err = check_upload(
        br#"{"ignition":{"version":"3.2.0"},"passwd":{"users":[{"name":"core","sshAuthorizedKeys":"SECRET-KEY"}]}}"#,
    )
    .expect_err("a string where a list belongs")
    .to_string();
    assert!(err.contains("line 1") && !err.contains("SECRET"), "{err}");
    let err = check_upload(
        br#"{"ignition":{"version":"3.2.0"},"passwd":{"users":[{"name":"core","sshAuthorizedKeys":"a\"b SECRET"}]}}"#,
    )
    .expect_err("an escaped quote inside the value")
    .to_string();
    assert!(!err.contains("SECRET"), "{err}");
    let err = check_upload(br#"{"ignition":{"version":"9.0.0"}}"#).expect_err("unknown version").to_string();
    assert!(err.contains("9.0.0"), "{err}");
    assert!(check_upload(b"not json").is_err());
    let err = check_upload(br#"{"ignition":{"version":"3.2.0"},"passwd":{"users":[{"name":"core"},{"name":"core"}]}}"#)
        .expect_err("two users core")
        .to_string();
    assert!(err.contains("$.passwd.users.1: duplicate entry"), "{err}");
}

#[test]
fn unit_files_parse_as_go_systemd_parses_them() {
    for ok in [
        "",
        "[Unit]\nDescription=x\n",
        "# comment \\\n continued comment\n[Service]\nExecStart=/bin/sh -c \\\n  'echo a'\n\n[Install]\nWantedBy=multi-user.target",
        "text before any section is skipped\n[Unit]\n  Indented=yes\n; other comment\n",
    ] {
        assert_eq!(check::parse_unit(ok), Ok(()), "{ok:?}");
    }
    let long = format!("[Service]\nExecStart=/bin/true {}\n", "x".repeat(2048));
    let spaced = "[Service]\nExecStart=/bin/echo \\ \nnot an option\n";
    for bad in ["[Unit\n", "[Unit] x\n", "[Unit]\nno equals sign\n", "[Unit]\nlast", &long, spaced] {
        assert!(check::parse_unit(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_host_key_goes_in_whole_or_not_at_all() {
    let host = HostKeyFiles { private: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n", public: "ssh-ed25519 BBBB m0" };
    let keys = [KEY.to_string()];
    let additions =
        Additions { ssh_keys: &keys, cluster_key: Some("ssh-ed25519 CCCC slipway@prod"), host_key: Some(host) };
    let r = render(Base::Empty, &vars(), &additions).expect("renders");
    assert_eq!(r.merged, fragments::ALL.to_vec());
    // A base with its own public host key file: neither of slipway's host key files goes in.
    let base = r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/ssh/ssh_host_ed25519_key.pub","contents":{"source":"data:,theirs"}}]}}"#;
    let r = render(Base::Verbatim(base), &vars(), &additions).expect("renders");
    let v: Value = serde_json::from_str(&r.body).expect("JSON");
    let paths: Vec<&str> =
        v["storage"]["files"].as_array().expect("files").iter().filter_map(|f| f["path"].as_str()).collect();
    assert_eq!(paths, ["/etc/ssh/ssh_host_ed25519_key.pub", "/etc/hostname"]);
    assert!(!r.merged.contains(&fragments::HOST_KEY));
    assert_eq!(
        r.left_out,
        [
            "ssh-host-key.ign: file /etc/ssh/ssh_host_ed25519_key.pub (the base defines /etc/ssh/ssh_host_ed25519_key.pub)"
        ]
    );
    // The cluster's key joins core's, after the operator's; a template's variable has only the operator's.
    assert_eq!(v["passwd"]["users"][0]["sshAuthorizedKeys"], json!([KEY, "ssh-ed25519 CCCC slipway@prod"]));
    let template = r#"{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"ops","sshAuthorizedKeys":{{ssh_authorized_keys}}}]}}"#;
    let r = render(Base::Template(template), &vars(), &additions).expect("renders");
    let v: Value = serde_json::from_str(&r.body).expect("JSON");
    assert_eq!(v["passwd"]["users"][0], json!({ "name": "ops", "sshAuthorizedKeys": [KEY] }));
    // A config that replaces itself carries none of them.
    let base = r#"{"ignition":{"version":"3.3.0","config":{"replace":{"source":"http://x/y.ign"}}}}"#;
    assert!(render(Base::Verbatim(base), &vars(), &additions).expect("renders").merged.is_empty());
}
