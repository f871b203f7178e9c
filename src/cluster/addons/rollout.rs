//! Whether a workload has rolled out, as `kubectl rollout status` decides it
//! (kubectl/pkg/polymorphichelpers/rollout_status.go), read from the object's `status` as the
//! API returns it (pure): the controller must have seen the current spec (`observedGeneration`
//! at least `metadata.generation`), then a Deployment has all its replicas updated, no old ones
//! left and every updated one available (a Deployment past its progress deadline fails the
//! wait at once); a StatefulSet has every replica ready and updated (up to its partition) and
//! one revision; a DaemonSet has every scheduled pod updated and available. A kind other than
//! these three is not a workload: its conditions are read instead.

use serde_json::Value;

/// What a workload's status says: rolled out, still rolling (what is seen), or failed (why).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    Done,
    Waiting(String),
    Failed(String),
}

/// `None` for a kind that is not a Deployment, StatefulSet or DaemonSet.
pub fn rollout(kind: &str, object: &Value) -> Option<Rollout> {
    let status = &object["status"];
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    let generation = count(&object["metadata"]["generation"]);
    let observed = count(&status["observedGeneration"]);
    let unseen = || Rollout::Waiting("the controller has not seen its current spec yet".into());
    Some(match kind {
        "Deployment" => {
            if observed == 0 || generation > observed {
                return Some(unseen());
            }
            let stalled = status["conditions"].as_array().into_iter().flatten().any(|c| {
                c["type"] == "Progressing" && c["status"] == "False" && c["reason"] == "ProgressDeadlineExceeded"
            });
            // The API defaults spec.replicas to 1.
            let wanted = object["spec"]["replicas"].as_u64().unwrap_or(1);
            let (replicas, updated, available) =
                (count(&status["replicas"]), count(&status["updatedReplicas"]), count(&status["availableReplicas"]));
            if stalled {
                Rollout::Failed(
                    "it exceeded its progress deadline (condition Progressing: ProgressDeadlineExceeded)".into(),
                )
            } else if updated < wanted {
                Rollout::Waiting(format!("{updated} of {wanted} new replicas updated"))
            } else if replicas > updated {
                Rollout::Waiting(format!("{} old replicas pending termination", replicas - updated))
            } else if available < updated {
                Rollout::Waiting(format!("{available} of {updated} updated replicas available"))
            } else {
                Rollout::Done
            }
        }
        "StatefulSet" => {
            if observed == 0 || generation > observed {
                return Some(unseen());
            }
            let wanted = object["spec"]["replicas"].as_u64().unwrap_or(1);
            let ready = count(&status["readyReplicas"]);
            let partition = object["spec"]["updateStrategy"]["rollingUpdate"]["partition"].as_u64();
            let rolling = object["spec"]["updateStrategy"]["type"].as_str().is_none_or(|t| t == "RollingUpdate");
            if ready < wanted {
                Rollout::Waiting(format!("{ready} of {wanted} pods ready"))
            } else if let Some(partition) = partition.filter(|_| rolling) {
                let updated = count(&status["updatedReplicas"]);
                let due = wanted.saturating_sub(partition);
                if updated < due {
                    Rollout::Waiting(format!("{updated} of {due} pods updated (partition {partition})"))
                } else {
                    Rollout::Done
                }
            } else if rolling && status["updateRevision"] != status["currentRevision"] {
                Rollout::Waiting(format!(
                    "{} pods at revision {}",
                    count(&status["updatedReplicas"]),
                    status["updateRevision"].as_str().unwrap_or("?")
                ))
            } else {
                Rollout::Done
            }
        }
        "DaemonSet" => {
            if observed == 0 || generation > observed {
                return Some(unseen());
            }
            let desired = count(&status["desiredNumberScheduled"]);
            let (updated, available) = (count(&status["updatedNumberScheduled"]), count(&status["numberAvailable"]));
            if updated < desired {
                Rollout::Waiting(format!("{updated} of {desired} scheduled pods updated"))
            } else if available < desired {
                Rollout::Waiting(format!("{available} of {desired} updated pods available"))
            } else {
                Rollout::Done
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A Deployment as kube-apiserver returns it mid-rollout and after (status fields as the
    /// deployment controller writes them).
    #[test]
    fn a_deployment_is_done_once_every_replica_is_updated_and_available() {
        let mut d = json!({
            "metadata": { "name": "argocd-server", "generation": 2 },
            "spec": { "replicas": 2 },
            "status": { "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
                "conditions": [{ "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable" }] }
        });
        // Available from the previous spec: not yet.
        assert_eq!(
            rollout("Deployment", &d),
            Some(Rollout::Waiting("the controller has not seen its current spec yet".into()))
        );
        d["status"] = json!({ "observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2 });
        assert_eq!(rollout("Deployment", &d), Some(Rollout::Waiting("1 of 2 new replicas updated".into())));
        d["status"] = json!({ "observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2 });
        assert_eq!(rollout("Deployment", &d), Some(Rollout::Waiting("1 old replicas pending termination".into())));
        d["status"] = json!({ "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1 });
        assert_eq!(rollout("Deployment", &d), Some(Rollout::Waiting("1 of 2 updated replicas available".into())));
        d["status"]["availableReplicas"] = json!(2);
        assert_eq!(rollout("Deployment", &d), Some(Rollout::Done));
        d["status"]["conditions"] =
            json!([{ "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded" }]);
        assert!(matches!(rollout("Deployment", &d), Some(Rollout::Failed(_))));
        // Scaled to zero: nothing to wait for once seen.
        let zero = json!({ "metadata": { "generation": 1 }, "spec": { "replicas": 0 }, "status": { "observedGeneration": 1 } });
        assert_eq!(rollout("Deployment", &zero), Some(Rollout::Done));
    }

    #[test]
    fn a_statefulset_and_a_daemonset_are_done_when_kubectl_says_so() {
        let mut s = json!({
            "metadata": { "generation": 1 }, "spec": { "replicas": 3, "updateStrategy": { "type": "RollingUpdate" } },
            "status": { "observedGeneration": 1, "replicas": 3, "readyReplicas": 2, "updatedReplicas": 3,
                "currentRevision": "redis-5d8f", "updateRevision": "redis-5d8f" }
        });
        assert_eq!(rollout("StatefulSet", &s), Some(Rollout::Waiting("2 of 3 pods ready".into())));
        s["status"]["readyReplicas"] = json!(3);
        s["status"]["updateRevision"] = json!("redis-6c9a");
        assert_eq!(rollout("StatefulSet", &s), Some(Rollout::Waiting("3 pods at revision redis-6c9a".into())));
        s["spec"]["updateStrategy"]["rollingUpdate"] = json!({ "partition": 2 });
        s["status"]["updatedReplicas"] = json!(1);
        assert_eq!(rollout("StatefulSet", &s), Some(Rollout::Done), "a partitioned update waits for the pods above it");
        let mut d = json!({
            "metadata": { "generation": 3 },
            "status": { "observedGeneration": 3, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 1 }
        });
        assert_eq!(rollout("DaemonSet", &d), Some(Rollout::Waiting("1 of 2 updated pods available".into())));
        d["status"]["numberAvailable"] = json!(2);
        assert_eq!(rollout("DaemonSet", &d), Some(Rollout::Done));
        assert_eq!(rollout("Application", &d), None);
    }
}
