//! Where a cluster's add-ons stand, kept in its lifecycle record, and the pure decisions on it:
//! which set is next (the first one not applied with its current content, so a changed set is
//! applied again and an unchanged one is not), and what one pass's result makes of that set —
//! applied, still applying (until its deadline), or failed with the API's message or the last
//! thing seen. Sets run one after another, in the definition's order.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::apply::Pass;
use crate::inventory::{Name, Timestamp};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SetPhase {
    Applying,
    Applied,
    Failed,
    /// Applied with other content (its files or settings changed since): applied again in its
    /// turn.
    Changed,
}

/// One set's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SetState {
    pub name: Name,
    /// The content hash this state is about.
    pub hash: String,
    pub phase: SetPhase,
    #[schema(value_type = String)]
    pub since: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub deadline: Option<Timestamp>,
    /// Objects applied by the last pass.
    pub applied: usize,
    /// The last thing seen (what it waits for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the k3s first server's copy of an `at_install` set was last looked at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub copy_checked: Option<Timestamp>,
}

/// Every set's state, in the order they were first applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddonProgress {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<SetState>,
}

/// One set of a definition as `cluster status` and `cluster addons` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AddonStatus {
    pub name: Name,
    /// `pending` (not begun), `applying`, `applied`, `failed` or `changed` (applied with other
    /// content than the definition's now: applied again in its turn).
    pub state: String,
    /// Objects applied by its last pass.
    pub objects: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub since: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub deadline: Option<Timestamp>,
    /// What it waits for, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A set as the definition and its files say now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub name: Name,
    pub hash: String,
    pub timeout: Duration,
}

/// How often the first server's copy of an `at_install` set is looked at while k3s has not
/// applied it.
pub const COPY_CHECK: Duration = Duration::from_secs(30);

/// What a pass's result made of the set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to say yet (still applying, nothing new seen).
    Quiet,
    Applied,
    Failed(String),
}

impl AddonProgress {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The first wanted set not applied with its current content; `None` when all are.
    pub fn current<'a>(&self, wanted: &'a [Wanted]) -> Option<&'a Wanted> {
        wanted
            .iter()
            .find(|w| !self.sets.iter().any(|s| s.name == w.name && s.hash == w.hash && s.phase == SetPhase::Applied))
    }

    fn state(&self, name: &Name) -> Option<&SetState> {
        self.sets.iter().find(|s| &s.name == name)
    }

    /// Whether the first server's copy of `set` (an `at_install` set k3s has not applied with
    /// its current content) is to be looked at in this pass: at once, then once every
    /// `COPY_CHECK` (k3s reads its directory every 15 s).
    pub fn copy_due(&self, set: &Wanted, now: Timestamp) -> bool {
        match self.state(&set.name) {
            Some(s) if s.hash == set.hash && s.phase == SetPhase::Applying => {
                s.copy_checked.is_none_or(|at| now.0.duration_since(at.0).unwrap_or_default() >= COPY_CHECK)
            }
            _ => true,
        }
    }

    /// The deadline of the set being applied, if one is.
    pub fn applying_until(&self) -> Option<Timestamp> {
        self.sets.iter().filter(|s| s.phase == SetPhase::Applying).find_map(|s| s.deadline)
    }

    /// Notes that the copy of `set` was looked at `now`.
    pub fn copy_checked(&mut self, set: &Name, now: Timestamp) {
        if let Some(s) = self.sets.iter_mut().find(|s| &s.name == set) {
            s.copy_checked = Some(now);
        }
    }

    /// The progress after a pass of `set` returned `pass` at `now`, and what that made of it.
    pub fn after(&self, set: &Wanted, pass: &Pass, now: Timestamp) -> (AddonProgress, Outcome) {
        let mut state = match self.state(&set.name) {
            Some(s) if s.hash == set.hash && s.phase == SetPhase::Applying => s.clone(),
            _ => SetState {
                name: set.name.clone(),
                hash: set.hash.clone(),
                phase: SetPhase::Applying,
                since: now,
                deadline: now.0.checked_add(set.timeout).map(Timestamp),
                applied: 0,
                observed: None,
                error: None,
                copy_checked: None,
            },
        };
        let outcome = match pass {
            Pass::Done { applied } => {
                state = SetState {
                    phase: SetPhase::Applied,
                    since: now,
                    deadline: None,
                    applied: *applied,
                    observed: Some(format!("{applied} objects applied")),
                    error: None,
                    ..state
                };
                Outcome::Applied
            }
            Pass::Refused { object, message } => failed(&mut state, format!("{object}: {message}"), now),
            Pass::Waiting { applied, seen } => {
                state.applied = *applied;
                state.observed = Some(seen.clone());
                if state.deadline.is_some_and(|d| now > d) {
                    let limit = crate::inventory::types::format_duration(set.timeout);
                    failed(&mut state, format!("not applied within {limit}; last seen: {seen}"), now)
                } else {
                    Outcome::Quiet
                }
            }
        };
        let mut next = self.clone();
        match next.sets.iter_mut().find(|s| s.name == set.name) {
            Some(slot) => *slot = state,
            None => next.sets.push(state),
        }
        (next, outcome)
    }

    /// One condition per set begun: `Addon/<name>`, True once applied, else what it waits for
    /// or why it failed.
    pub fn conditions(&self) -> Vec<crate::cluster::phase::Condition> {
        self.sets
            .iter()
            .map(|s| {
                let (status, message) = match s.phase {
                    SetPhase::Applied => ("True", format!("{} objects applied", s.applied)),
                    SetPhase::Applying => ("False", s.observed.clone().unwrap_or_else(|| "applying".into())),
                    SetPhase::Failed => ("False", s.error.clone().unwrap_or_else(|| "failed".into())),
                    SetPhase::Changed => ("False", "changed since it was applied: applied again in its turn".into()),
                };
                crate::cluster::phase::Condition { kind: format!("Addon/{}", s.name), status: status.into(), message }
            })
            .collect()
    }

    /// Every set of `names` (the definition's, in order) with where it stands.
    pub fn statuses(&self, names: &[Name]) -> Vec<AddonStatus> {
        names
            .iter()
            .map(|name| match self.state(name) {
                Some(s) => AddonStatus {
                    name: name.clone(),
                    state: match s.phase {
                        SetPhase::Applying => "applying",
                        SetPhase::Applied => "applied",
                        SetPhase::Failed => "failed",
                        SetPhase::Changed => "changed",
                    }
                    .into(),
                    objects: s.applied,
                    since: Some(s.since),
                    deadline: s.deadline,
                    detail: s.error.clone().or_else(|| s.observed.clone()),
                },
                None => AddonStatus {
                    name: name.clone(),
                    state: "pending".into(),
                    objects: 0,
                    since: None,
                    deadline: None,
                    detail: None,
                },
            })
            .collect()
    }

    /// The progress once a failed cluster is retried: every set not applied starts again (a
    /// fresh deadline).
    pub fn retried(&self) -> AddonProgress {
        AddonProgress { sets: self.sets.iter().filter(|s| s.phase == SetPhase::Applied).cloned().collect() }
    }

    /// Only the sets the definition still has; an applied one whose content changed since is
    /// marked so (status shows it is to be applied again, not applied).
    pub fn pruned(&self, wanted: &[Wanted]) -> AddonProgress {
        let sets = self
            .sets
            .iter()
            .filter_map(|s| {
                let w = wanted.iter().find(|w| w.name == s.name)?;
                let mut s = s.clone();
                if s.phase == SetPhase::Applied && s.hash != w.hash {
                    s.phase = SetPhase::Changed;
                }
                Some(s)
            })
            .collect();
        AddonProgress { sets }
    }
}

/// The set failed for `reason` at `now`.
fn failed(state: &mut SetState, reason: String, now: Timestamp) -> Outcome {
    state.phase = SetPhase::Failed;
    state.since = now;
    state.deadline = None;
    state.error = Some(reason.clone());
    Outcome::Failed(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix_millis(1_900_000_000_000 + secs * 1000)
    }

    fn wanted(name: &str, hash: &str) -> Wanted {
        Wanted { name: name.parse().expect("name"), hash: hash.into(), timeout: Duration::from_secs(600) }
    }

    #[test]
    fn sets_go_in_order_and_a_changed_one_goes_again() {
        let sets = [wanted("crds", "h1"), wanted("argocd", "h2")];
        let p = AddonProgress::default();
        assert_eq!(p.current(&sets), Some(&sets[0]));
        let (p, outcome) = p.after(&sets[0], &Pass::Done { applied: 3 }, at(1));
        assert_eq!(outcome, Outcome::Applied);
        assert_eq!(p.current(&sets), Some(&sets[1]));
        let (p, _) = p.after(&sets[1], &Pass::Waiting { applied: 51, seen: "Available is False".into() }, at(2));
        assert_eq!((p.sets[1].phase, p.sets[1].deadline), (SetPhase::Applying, Some(at(602))));
        let (p, _) = p.after(&sets[1], &Pass::Waiting { applied: 51, seen: "still".into() }, at(30));
        assert_eq!(p.sets[1].deadline, Some(at(602)), "the deadline holds across passes");
        let (p, outcome) = p.after(&sets[1], &Pass::Done { applied: 51 }, at(40));
        assert_eq!((outcome, p.current(&sets)), (Outcome::Applied, None));
        // The second set's files change: only it is applied again.
        let changed = [wanted("crds", "h1"), wanted("argocd", "h3")];
        assert_eq!(p.current(&changed), Some(&changed[1]));
        // Until it is, it shows as changed, not applied.
        let marked = p.pruned(&changed);
        let shown: Vec<String> = marked.statuses(&sets.map(|w| w.name)).into_iter().map(|s| s.state).collect();
        assert_eq!(shown, ["applied", "changed"]);
        assert_eq!(marked.current(&changed), Some(&changed[1]));
        let (marked, _) = marked.after(&changed[1], &Pass::Done { applied: 51 }, at(50));
        assert_eq!(marked.current(&changed), None);
    }

    #[test]
    fn a_refusal_fails_the_set_at_once_and_waiting_fails_it_at_its_deadline() {
        let set = wanted("web", "h");
        let refused = Pass::Refused {
            object: "Deployment default/web (web.yaml document 1)".into(),
            message: "spec.selector: Required value".into(),
        };
        let (p, outcome) = AddonProgress::default().after(&set, &refused, at(1));
        assert_eq!(
            outcome,
            Outcome::Failed("Deployment default/web (web.yaml document 1): spec.selector: Required value".into())
        );
        assert_eq!(p.sets[0].phase, SetPhase::Failed);
        let retried = p.retried();
        assert!(retried.sets.is_empty(), "a retried set starts again with a fresh deadline");
        let (applying, _) =
            AddonProgress::default().after(&set, &Pass::Waiting { applied: 0, seen: "x".into() }, at(0));
        assert!(applying.retried().sets.is_empty(), "a set still applying starts again too");
        let (done, _) = AddonProgress::default().after(&set, &Pass::Done { applied: 1 }, at(0));
        assert_eq!(done.retried(), done, "an applied set stays applied");
        assert!(done.pruned(&[wanted("other", "h")]).sets.is_empty(), "a set no longer defined is forgotten");
        let waiting = |s: &str| Pass::Waiting { applied: 0, seen: s.into() };
        let (p, _) = AddonProgress::default().after(&set, &waiting("the API serves no Application"), at(0));
        let (p, outcome) = p.after(&set, &waiting("the API serves no Application"), at(601));
        assert_eq!(outcome, Outcome::Failed("not applied within 10m; last seen: the API serves no Application".into()));
        assert_eq!(p.sets[0].phase, SetPhase::Failed);
    }
}
