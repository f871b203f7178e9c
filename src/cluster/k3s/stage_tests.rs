use std::collections::BTreeSet;
use std::time::Duration;

use super::*;

fn name(s: &str) -> Name {
    s.parse().expect("name")
}

fn at(secs: u64) -> Timestamp {
    Timestamp::from_unix_millis(1_000_000_000_000 + secs * 1000)
}

fn members() -> Members {
    Members { servers: vec![name("s0"), name("s1"), name("s2")], agents: vec![name("a0"), name("a1")] }
}

fn ready(nodes: &[&str]) -> Look {
    Look { ready: Some(Ok(nodes.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>())), ..Look::default() }
}

fn saved(n: Option<K3sRecord>) -> K3sRecord {
    n.expect("a record to store")
}

fn started() -> K3sRecord {
    K3sRecord::start(name("edge"), name("s0"), StageLimits::DEFAULT, at(0))
}

#[test]
fn servers_join_one_at_a_time_then_the_agents_together() {
    let m = members();
    let r = started();
    assert_eq!(r.deadline, Some(at(15 * 60)));
    // Ready without the CA checked is not enough: the joiners' token needs its hash.
    assert_eq!(next(&r, &m, &ready(&["s0"]), at(5)), None);
    let look = Look { ca_hash: Some(Ok("ab".repeat(32))), ..ready(&["s0"]) };
    let r = saved(next(&r, &m, &look, at(10)));
    assert_eq!(
        (r.stage, r.facts.joining.clone(), r.facts.joined.clone()),
        (Stage::JoiningServers, Some(name("s1")), vec![name("s0")])
    );
    assert_eq!(r.deadline, Some(at(10 + 10 * 60)), "each server has its own limit");
    // s2 waits while s1 joins; agents wait for every server.
    assert_eq!(turn(Some(&r), &m, &name("s1"), true), Turn::Join { ca_hash: "ab".repeat(32) });
    assert!(matches!(turn(Some(&r), &m, &name("s2"), true), Turn::Wait(w) if w.contains("s1 is joining")));
    assert!(matches!(turn(Some(&r), &m, &name("a0"), false), Turn::Wait(_)));
    assert_eq!(
        next(&r, &m, &ready(&["s0"]), at(20)),
        Some(K3sRecord { observed: Some("s1 is joining".into()), ..r.clone() })
    );
    let r = saved(next(&r, &m, &ready(&["s0", "s1"]), at(30)));
    assert_eq!((r.facts.joining.clone(), r.facts.joined.len()), (Some(name("s2")), 2));
    assert_eq!(turn(Some(&r), &m, &name("s1"), true), Turn::Joined, "a joined server is not handed the token again");
    assert_eq!(turn(Some(&r), &m, &name("s0"), true), Turn::Joined, "nor the first: it never initialises again");
    let r = saved(next(&r, &m, &ready(&["s0", "s1", "s2"]), at(40)));
    assert_eq!(r.stage, Stage::JoiningAgents);
    assert_eq!(turn(Some(&r), &m, &name("a1"), false), Turn::Join { ca_hash: "ab".repeat(32) });
    let r = saved(next(&r, &m, &ready(&["s0", "s1", "s2", "a0"]), at(50)));
    assert_eq!((r.stage, r.observed.as_deref()), (Stage::JoiningAgents, Some("not Ready yet: a1")));
    assert_eq!(turn(Some(&r), &m, &name("a0"), false), Turn::Joined);
    assert_eq!(turn(Some(&r), &m, &name("a1"), false), Turn::Join { ca_hash: "ab".repeat(32) });
    assert_eq!(turn(Some(&r), &m, &name("a0"), false), Turn::Joined);
    assert_eq!(turn(Some(&r), &m, &name("a1"), false), Turn::Join { ca_hash: "ab".repeat(32) });
    let r = saved(next(&r, &m, &ready(&["s0", "s1", "s2", "a0", "a1"]), at(60)));
    assert_eq!(r.stage, Stage::FetchingKubeconfig);
    let look = Look { through_lb: Some(Ok("v1.33.4+k3s1".into())), ..Look::default() };
    let r = saved(next(&r, &m, &look, at(70)));
    assert_eq!(r.stage, Stage::Ready);
    assert!(conditions(Some(&r)).iter().all(|c| c.status == "True"));
}

#[test]
fn before_the_first_server_runs_only_it_may_fetch() {
    let m = members();
    assert_eq!(turn(None, &m, &name("s0"), true), Turn::Init);
    assert!(matches!(turn(None, &m, &name("s1"), true), Turn::Wait(w) if w.contains("s0")));
    let r = started();
    assert_eq!(turn(Some(&r), &m, &name("s0"), true), Turn::Init, "it may fetch again after a reboot");
    assert!(matches!(turn(Some(&r), &m, &name("s1"), true), Turn::Wait(w) if w.contains("not initialised")));
    assert!(conditions(Some(&r)).iter().all(|c| c.status == "False"));
}

#[test]
fn a_single_server_cluster_goes_straight_to_its_agents() {
    let m = Members { servers: vec![name("s0")], agents: vec![] };
    let look = Look { ca_hash: Some(Ok("cd".repeat(32))), ..ready(&["s0"]) };
    let r = saved(next(&started(), &m, &look, at(1)));
    assert_eq!(r.stage, Stage::JoiningAgents);
    assert_eq!(saved(next(&r, &m, &ready(&["s0"]), at(2))).stage, Stage::FetchingKubeconfig);
}

#[test]
fn a_stage_past_its_deadline_fails_naming_what_it_waited_for() {
    let m = members();
    let look = Look { ca_hash: Some(Err("s0:6443/cacerts: connection refused".into())), ..Look::default() };
    let r = saved(next(&started(), &m, &look, at(16 * 60)));
    assert_eq!((r.stage, r.failed_in), (Stage::Failed, Some(Stage::InitServer)));
    let reason = r.error.clone().expect("reason");
    assert!(reason.contains("s0's /cacerts and kubeconfig were not read within 15m"), "{reason}");
    assert!(reason.contains("connection refused"), "{reason}");
    // Retried: the same stage with a fresh limit; a joining server stays the one let in.
    let back =
        r.retried(StageLimits { init: Duration::from_secs(60), ..StageLimits::DEFAULT }, at(2000)).expect("retry");
    assert_eq!((back.stage, back.deadline), (Stage::InitServer, Some(at(2060))));
    let look = Look { ca_hash: Some(Ok("ab".repeat(32))), ..ready(&["s0"]) };
    let joining = saved(next(&started(), &m, &look, at(1)));
    let failed = saved(next(&joining, &m, &ready(&["s0"]), at(11 * 60 + 2)));
    assert!(failed.error.as_deref().is_some_and(|e| e.starts_with("s1 did not join within 10m")), "{failed:?}");
    assert!(matches!(turn(Some(&failed), &m, &name("s2"), true), Turn::Wait(_)), "still one at a time");
    assert_eq!(turn(Some(&failed), &m, &name("s1"), true), Turn::Join { ca_hash: "ab".repeat(32) });
}

#[test]
fn a_server_let_in_and_then_gone_gives_its_slot_to_the_next() {
    let m = members();
    let look = Look { ca_hash: Some(Ok("ab".repeat(32))), ..ready(&["s0"]) };
    let r = saved(next(&started(), &m, &look, at(1)));
    assert_eq!(r.facts.joining, Some(name("s1")));
    let without = Members { servers: vec![name("s0"), name("s2")], agents: m.agents.clone() };
    let r = saved(next(&r, &without, &ready(&["s0"]), at(2)));
    assert_eq!(r.facts.joining, Some(name("s2")));
    // A first server reinstalled (no longer joined) waits for a slot; it never initialises again.
    let mut reinstalled = r.clone();
    reinstalled.facts.joined.clear();
    assert!(matches!(turn(Some(&reinstalled), &m, &name("s0"), true), Turn::Wait(_)));
}

#[test]
fn a_server_added_after_the_servers_stage_claims_the_slot_and_joins_alone() {
    let m = members();
    let mut r = started();
    r.stage = Stage::Ready;
    r.facts.ca_hash = Some("ab".repeat(32));
    r.facts.joined = vec![name("s0"), name("s1"), name("s2")];
    let grown =
        Members { servers: vec![name("s0"), name("s1"), name("s2"), name("s3"), name("s4")], agents: m.agents.clone() };
    assert_eq!(turn(Some(&r), &grown, &name("s3"), true), Turn::Claim { ca_hash: "ab".repeat(32) });
    r.facts.joining = Some(name("s3"));
    assert_eq!(turn(Some(&r), &grown, &name("s3"), true), Turn::Join { ca_hash: "ab".repeat(32) });
    assert!(matches!(turn(Some(&r), &grown, &name("s4"), true), Turn::Wait(w) if w.contains("s3 is joining")));
    assert_eq!(next(&r, &grown, &ready(&["s0", "s1", "s2"]), at(5)), None, "s3 not Ready yet");
    let r = saved(next(&r, &grown, &ready(&["s0", "s1", "s2", "s3"]), at(6)));
    assert_eq!((r.stage, r.facts.joining.clone()), (Stage::Ready, None));
    assert!(r.facts.joined.contains(&name("s3")));
    assert_eq!(turn(Some(&r), &grown, &name("s4"), true), Turn::Claim { ca_hash: "ab".repeat(32) });
}

#[test]
fn the_record_keeps_its_stored_shape_with_the_facts_beside_the_stage() {
    let stored = serde_json::json!({
        "cluster": "edge", "stage": "joining-servers", "since": at(5), "deadline": at(605),
        "init": "s0", "ca_hash": "ab", "joined": ["s0"], "joining": "s1",
        "limits": {"init": "15m", "server_join": "10m", "agent_join": "10m", "kubeconfig": "5m"},
    });
    let record: K3sRecord = serde_json::from_value(stored.clone()).expect("a stored record reads");
    assert_eq!(
        (record.stage, record.facts.joining.clone(), record.facts.init.clone()),
        (Stage::JoiningServers, Some(name("s1")), name("s0"))
    );
    assert_eq!(serde_json::to_value(&record).expect("json"), stored, "written back unchanged");
}
