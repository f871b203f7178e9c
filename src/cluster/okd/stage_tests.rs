use super::*;

fn at(secs: u64) -> Timestamp {
    Timestamp::from_unix_millis(1_800_000_000_000 + secs * 1000)
}

fn record(stage: Stage) -> ClusterRecord {
    ClusterRecord::start("prod".parse().expect("name"), StageLimits::DEFAULT, at(0)).enter(stage, at(0))
}

fn up() -> Look {
    Look { api: Some(Ok("v1.32.5".into())), ..Look::default() }
}

fn saved(next: Next) -> ClusterRecord {
    match next {
        Next::Save(r) | Next::RemoveBootstrap(r) => r,
        Next::Wait => panic!("waits"),
    }
}

#[test]
fn the_stages_follow_what_the_installer_waits_for() {
    let r = record(Stage::WaitingForApi);
    assert_eq!(r.deadline, Some(at(20 * 60)));
    let down = Look { api: Some(Err("connection refused".into())), ..Look::default() };
    let still = saved(next(&r, &down, true, at(10)));
    assert_eq!((still.stage, still.error.as_deref()), (Stage::WaitingForApi, Some("connection refused")));
    let r = saved(next(&r, &up(), true, at(20)));
    assert_eq!((r.stage, r.facts.api_seen, r.deadline), (Stage::Bootstrapping, Some(at(20)), Some(at(20 + 3600))));
    assert_eq!(next(&r, &up(), true, at(30)), Next::Wait, "nothing new");
    let r = saved(next(&r, &Look { bootstrap_complete: true, ..up() }, true, at(40)));
    assert_eq!(r.stage, Stage::WaitingEtcdHandoff);
    assert!(matches!(next(&r, &up(), true, at(50)), Next::Wait), "not before etcd let go of the bootstrap");
    let Next::RemoveBootstrap(r) = next(&r, &Look { etcd_bootstrap_removed: true, ..up() }, true, at(60)) else {
        panic!("removes the bootstrap")
    };
    assert_eq!(r.stage, Stage::RemovingBootstrap);
    assert_eq!(next(&r, &Look { bootstrap_left: 1, ..up() }, true, at(70)), Next::Wait);
    let r = saved(next(&r, &up(), true, at(80)));
    assert_eq!((r.stage, r.facts.bootstrap_done), (Stage::JoiningWorkers, true));
    let joining = Look { not_ready: vec!["worker-1".into()], ..up() };
    assert_eq!(next(&r, &joining, true, at(90)), Next::Wait);
    let r = saved(next(&r, &up(), true, at(100)));
    assert_eq!(r.stage, Stage::Finalizing);
}

#[test]
fn a_kept_bootstrap_skips_its_removal() {
    let r = record(Stage::WaitingEtcdHandoff);
    let r = saved(next(&r, &Look { etcd_bootstrap_removed: true, ..up() }, false, at(10)));
    assert_eq!((r.stage, r.facts.bootstrap_done), (Stage::JoiningWorkers, true));
}

#[test]
fn ready_needs_clusterversion_done_and_every_operator_settled_for_30_s() {
    let r = record(Stage::Finalizing);
    let done = VersionSeen { available: true, ..VersionSeen::default() };
    let progressing =
        VersionSeen { progressing: true, message: "Working towards 4.19".into(), ..VersionSeen::default() };
    let r = saved(next(&r, &Look { version: Some(progressing), ..up() }, true, at(10)));
    assert_eq!(r.observed.as_deref(), Some("ClusterVersion Progressing: Working towards 4.19"));
    let degraded = Look { version: Some(done.clone()), degraded: vec!["ingress: no router".into()], ..up() };
    let r = saved(next(&r, &degraded, true, at(20)));
    assert_eq!((r.stage, r.observed.as_deref()), (Stage::Finalizing, Some("Degraded: ingress: no router")));
    let settled = Look { version: Some(done), ..up() };
    let r = saved(next(&r, &settled, true, at(30)));
    assert_eq!((r.stage, r.facts.stable_since), (Stage::Finalizing, Some(at(30))));
    assert_eq!(next(&r, &settled, true, at(59)), Next::Wait, "29 s settled");
    assert_eq!(saved(next(&r, &settled, true, at(60))).stage, Stage::Ready);
    let unsettled = Look { unsettled: vec!["console".into()], ..settled.clone() };
    assert_eq!(saved(next(&r, &unsettled, true, at(45))).facts.stable_since, None, "the 30 s start again");
}

#[test]
fn a_passed_deadline_fails_with_what_was_waited_for_and_retry_resumes() {
    let r = record(Stage::Finalizing);
    let look = Look {
        version: Some(VersionSeen { available: true, ..Default::default() }),
        degraded: vec!["dns: Degraded".into()],
        ..up()
    };
    let r = saved(next(&r, &look, true, at(10)));
    let failed = saved(next(&r, &look, true, at(3601)));
    assert_eq!((failed.stage, failed.failed_in), (Stage::Failed, Some(Stage::Finalizing)));
    assert_eq!(
        failed.error.as_deref(),
        Some("the install did not complete within 1h; last seen: Degraded: dns: Degraded")
    );
    let again = failed.retried(StageLimits::DEFAULT, at(4000)).expect("retry");
    assert_eq!((again.stage, again.deadline), (Stage::Finalizing, Some(at(4000 + 3600))));
    let longer = StageLimits { finalize: std::time::Duration::from_secs(7200), ..StageLimits::DEFAULT };
    assert_eq!(failed.retried(longer, at(4000)).expect("retry").deadline, Some(at(4000 + 7200)), "raised limits count");

    let api = record(Stage::WaitingForApi);
    let down = Look { api: Some(Err("connection refused".into())), ..Look::default() };
    let failed = saved(next(&api, &down, true, at(1201)));
    assert_eq!(
        failed.error.as_deref(),
        Some("the API did not answer /version within 20m; last error: connection refused")
    );
}

#[test]
fn a_cluster_seen_settled_is_not_failed_while_it_waits_out_its_30_s() {
    let r = record(Stage::Finalizing);
    let settled = Look { version: Some(VersionSeen { available: true, ..Default::default() }), ..up() };
    let r = saved(next(&r, &settled, true, at(3590)));
    assert_eq!(r.facts.stable_since, Some(at(3590)));
    assert_eq!(next(&r, &settled, true, at(3605)), Next::Wait, "past the deadline but settling");
    assert_eq!(saved(next(&r, &settled, true, at(3620))).stage, Stage::Ready);
    let down = Look { api: Some(Err("refused".into())), ..Look::default() };
    let unseen = saved(next(&r, &down, true, at(100)));
    assert_eq!(unseen.facts.stable_since, None, "what was not seen did not settle");
}

#[test]
fn bootstrap_complete_is_what_was_seen_not_where_the_stage_is() {
    let r = saved(next(&record(Stage::Bootstrapping), &Look { bootstrap_complete: true, ..up() }, true, at(10)));
    assert!(r.facts.complete_seen);
    let forced = record(Stage::WaitingForApi).enter(Stage::RemovingBootstrap, at(5));
    let status =
        |r: &ClusterRecord| conditions(Some(r)).into_iter().find(|c| c.kind == "BootstrapComplete").expect("c").status;
    assert_eq!(status(&forced), "False", "a forced removal did not see it");
    assert_eq!(status(&r), "True");
}
