//! Leadership through etcd: one key held under a lease. The instance whose put created the key
//! leads; the key's create revision is its term, and every write only a leader may make is a
//! transaction that compares it (`fenced`): once another instance leads (the old lease expired,
//! the key was made again) an old leader's write fails in etcd, whatever its clock says.
//!
//! `Leadership::run` keeps trying to lead and, while it does, keeps the lease alive. It tells
//! the holder of its receiver the term as it changes, and gives leadership up on its own side
//! before the lease can expire: a keepalive that has not succeeded for `ttl - margin` ends the
//! term here first, so the instance stops acting as leader before etcd lets another begin.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::wire::{B64, Compare, Int, PutRequest, RangeRequest, RequestOp, ResponseOp, TxnRequest};
use super::{Etcd, EtcdError};

/// A term of leadership: the fencing token of every leader-only write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    /// The leader key's create revision.
    pub revision: i64,
    /// The lease the key is held under.
    pub lease: i64,
}

/// Who leads now, as etcd says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    pub name: String,
    pub term: i64,
}

#[derive(Clone, Debug)]
pub struct Leadership {
    etcd: Etcd,
    key: Vec<u8>,
    name: String,
    ttl: Duration,
    /// A key (and value) this instance keeps under its lease while it runs, leading or not:
    /// how the others see it is there.
    presence: Option<(Vec<u8>, Vec<u8>)>,
    /// Notified when the leader key goes (its holder resigned or its lease expired): try at
    /// once rather than at the next beat.
    vacated: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// While this says `false`, the instance keeps its lease (and presence) but does not try
    /// to lead (its copy of the state is not whole yet).
    ready: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Leadership {
    /// `name` leads through `key` under leases of `ttl` (the bound on failover).
    pub fn new(etcd: Etcd, key: &[u8], name: &str, ttl: Duration) -> Leadership {
        Leadership { etcd, key: key.to_vec(), name: name.to_owned(), ttl, presence: None, vacated: None, ready: None }
    }

    /// Tries to lead as soon as `vacated` is notified (the caller watches the leader key).
    pub fn waking_on(mut self, vacated: std::sync::Arc<tokio::sync::Notify>) -> Leadership {
        self.vacated = Some(vacated);
        self
    }

    /// Tries to lead only while `ready` holds.
    pub fn when_ready(mut self, ready: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Leadership {
        self.ready = Some(ready);
        self
    }

    /// Keeps `key` = `value` under this instance's lease while `run` runs (it goes when the
    /// lease does: on resignation, or `ttl` after the instance died).
    pub fn with_presence(mut self, key: Vec<u8>, value: Vec<u8>) -> Leadership {
        self.presence = Some((key, value));
        self
    }

    /// Who holds the key, if anyone.
    pub async fn leader(&self) -> Result<Option<Leader>, EtcdError> {
        Ok(self
            .etcd
            .get(&self.key)
            .await?
            .map(|kv| Leader { name: String::from_utf8_lossy(&kv.value.0).into_owned(), term: kv.create_revision.0 }))
    }

    /// Takes the key under `lease` if nobody holds it: the term when this instance now leads.
    pub async fn try_lead(&self, lease: i64) -> Result<Option<Term>, EtcdError> {
        let key = B64(self.key.clone());
        let request = TxnRequest {
            compare: vec![Compare::created_at(&self.key, 0)],
            success: vec![RequestOp::RequestPut(PutRequest {
                key: key.clone(),
                value: B64(self.name.as_bytes().to_vec()),
                lease: Some(Int(lease)),
            })],
            failure: vec![RequestOp::RequestRange(RangeRequest { key, ..Default::default() })],
        };
        let answer = self.etcd.txn(&request).await?;
        if answer.succeeded {
            return Ok(Some(Term { revision: answer.header.revision.0, lease }));
        }
        // Held: by this instance under this lease (a retried call that did succeed) or another.
        let held = answer.responses.into_iter().find_map(|r| match r {
            ResponseOp::ResponseRange(range) => range.kvs.into_iter().next(),
            _ => None,
        });
        Ok(held
            .filter(|kv| kv.lease.0 == lease && kv.value.0 == self.name.as_bytes())
            .map(|kv| Term { revision: kv.create_revision.0, lease }))
    }

    /// `ops` as a transaction that runs only while `term` leads; when it does not, the failure
    /// branch reads the leader key (an empty read: nobody leads).
    pub fn fenced(&self, term: &Term, ops: Vec<RequestOp>) -> TxnRequest {
        let mut request = TxnRequest { compare: vec![], success: ops, failure: vec![] };
        fence(&self.key, term, &mut request);
        request
    }

    /// Tries to lead until `shutdown`, keeping the lease alive while it does; `terms` says the
    /// term in force here (`None`: not leading). On shutdown a leader resigns (revokes its
    /// lease), so another takes over at once rather than after the TTL.
    pub async fn run(self, terms: watch::Sender<Option<Term>>, shutdown: CancellationToken) {
        let beat = self.ttl / 3;
        // Leadership ends here this long before etcd could end it.
        let margin = self.ttl / 4;
        let mut lease: Option<(i64, Instant)> = None;
        // The lease the presence key was last put under.
        let mut present: Option<i64> = None;
        loop {
            let term = terms.borrow().clone();
            let step = async {
                match (&term, lease) {
                    (Some(t), _) => self.etcd.keepalive(t.lease).await.map(|ttl| ttl.map(|_| t.lease)),
                    (None, Some((id, _))) => self.etcd.keepalive(id).await.map(|ttl| ttl.map(|_| id)),
                    (None, None) => self.etcd.grant(self.ttl).await.map(|(id, _)| Some(id)),
                }
            };
            let started = Instant::now();
            let outcome = tokio::select! {
                () = shutdown.cancelled() => break,
                outcome = tokio::time::timeout(beat, step) => outcome,
            };
            match outcome {
                Ok(Ok(Some(id))) => {
                    lease = Some((id, started));
                    if let Some((key, value)) = &self.presence
                        && present != Some(id)
                    {
                        match self.etcd.put(key, value, Some(id)).await {
                            Ok(_) => present = Some(id),
                            Err(e) => tracing::warn!(error = %e, "etcd: cannot announce this instance"),
                        }
                    }
                    let ready = self.ready.as_ref().is_none_or(|r| r.load(std::sync::atomic::Ordering::SeqCst));
                    if term.is_none() && ready {
                        match self.try_lead(id).await {
                            Ok(Some(t)) => {
                                tracing::info!(name = %self.name, term = t.revision, "leading");
                                terms.send_replace(Some(t));
                            }
                            Ok(None) => {}
                            Err(e) => tracing::warn!(error = %e, "cannot try to lead"),
                        }
                    }
                }
                Ok(Ok(None)) => {
                    // The lease is gone: whatever this instance held went with it.
                    lease = None;
                    step_down(&terms, "the lease expired");
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "etcd: keepalive failed"),
                Err(_) => tracing::warn!("etcd: keepalive timed out"),
            }
            if let Some((_, renewed)) = lease
                && renewed.elapsed() + margin >= self.ttl
            {
                // No renewal for too long: the lease may be about to expire in etcd.
                lease = None;
                step_down(&terms, "etcd unreachable for most of the lease");
            }
            let vacated = async {
                match &self.vacated {
                    Some(notify) if terms.borrow().is_none() => notify.notified().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(beat.saturating_sub(started.elapsed())) => {}
                () = vacated => {}
            }
        }
        if let Some((id, _)) = lease {
            let term = terms.send_replace(None);
            if let Err(e) = self.etcd.revoke(id).await {
                tracing::warn!(error = %e, "cannot resign: the next leader waits for the lease to expire");
            } else if term.is_some() {
                tracing::info!(name = %self.name, "resigned");
            }
        }
    }
}

/// Makes `request` hold only while `term` leads through leader key `key`: a compare of the
/// key's create revision, and a read of the key on the failure branch (the last response then
/// says who holds it; none: nobody).
pub fn fence(key: &[u8], term: &Term, request: &mut TxnRequest) {
    request.compare.push(Compare::created_at(key, term.revision));
    request.failure.push(RequestOp::RequestRange(RangeRequest { key: B64(key.to_vec()), ..Default::default() }));
}

fn step_down(terms: &watch::Sender<Option<Term>>, why: &str) {
    if terms.send_replace(None).is_some() {
        tracing::warn!(why, "no longer leading");
    }
}
