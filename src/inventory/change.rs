//! Changes to the inventory: a batch of operations applied as one, or not at all.
//!
//! `Inventory::apply` is pure: it returns the next inventory (validated, version + 1) and what
//! happened to each object, or the reason nothing may change. The store persists the outcome.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::model::{Cluster, HasOrigin, Inventory, Kind, Node, Origin, Profile};
use super::types::Name;
use super::validate::{Problem, validate_ranked};

/// An object the API can create, replace or delete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Object {
    Node(Node),
    Cluster(Cluster),
    Profile(Profile),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Node(_) => Kind::Node,
            Object::Cluster(_) => Kind::Cluster,
            Object::Profile(_) => Kind::Profile,
        }
    }

    pub fn name(&self) -> &Name {
        match self {
            Object::Node(n) => &n.name,
            Object::Cluster(c) => &c.name,
            Object::Profile(p) => &p.name,
        }
    }
}

/// One operation of a change.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Add an object that must not exist yet.
    Create(Object),
    /// Add or replace an object.
    Put(Object),
    /// Remove an object that must exist.
    Delete(Kind, Name),
}

/// What a committed operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Created,
    Updated,
    Unchanged,
    Deleted,
}

/// The result of one operation, in the order the operations were given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Outcome {
    pub kind: Kind,
    pub name: Name,
    pub action: Action,
}

/// Why a change was refused. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("{kind} {name} does not exist")]
    NotFound { kind: Kind, name: Name },
    #[error("{kind} {name} already exists")]
    AlreadyExists { kind: Kind, name: Name },
    #[error("{kind} {name} is declared in the config file; change it there")]
    Declared { kind: Kind, name: Name },
    #[error("{kind} objects are read-only through the API")]
    ReadOnly { kind: Kind },
    #[error("invalid: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
}

fn write<T: HasOrigin + Clone + PartialEq>(
    map: &mut BTreeMap<Name, T>,
    kind: Kind,
    name: &Name,
    new: Option<T>,
    must_be_new: bool,
) -> Result<Action, ChangeError> {
    let err = |make: fn(Kind, Name) -> ChangeError| make(kind, name.clone());
    match (map.get(name), new) {
        (Some(old), _) if old.origin() == Origin::Config => Err(err(|kind, name| ChangeError::Declared { kind, name })),
        (Some(_), Some(_)) if must_be_new => Err(err(|kind, name| ChangeError::AlreadyExists { kind, name })),
        (Some(old), Some(mut new)) => {
            *new.origin_mut() = Origin::Api;
            if *old == new {
                return Ok(Action::Unchanged);
            }
            map.insert(name.clone(), new);
            Ok(Action::Updated)
        }
        (None, Some(mut new)) => {
            *new.origin_mut() = Origin::Api;
            map.insert(name.clone(), new);
            Ok(Action::Created)
        }
        (Some(_), None) => {
            map.remove(name);
            Ok(Action::Deleted)
        }
        (None, None) => Err(err(|kind, name| ChangeError::NotFound { kind, name })),
    }
}

impl Inventory {
    /// Applies `ops` in order as one change. Returns the next inventory and one outcome per
    /// operation, or the first refusal / every validation problem; `self` is never modified.
    pub fn apply(&self, ops: &[Op]) -> Result<(Inventory, Vec<Outcome>), ChangeError> {
        let mut next = self.clone();
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            let (kind, name, object, must_be_new) = match op {
                Op::Create(o) => (o.kind(), o.name().clone(), Some(o.clone()), true),
                Op::Put(o) => (o.kind(), o.name().clone(), Some(o.clone()), false),
                Op::Delete(kind, name) => (*kind, name.clone(), None, false),
            };
            let action = match (kind, object) {
                (Kind::Node, Some(Object::Node(n))) => write(&mut next.nodes, kind, &name, Some(n), must_be_new)?,
                (Kind::Cluster, Some(Object::Cluster(c))) => {
                    write(&mut next.clusters, kind, &name, Some(c), must_be_new)?
                }
                (Kind::Profile, Some(Object::Profile(p))) => {
                    write(&mut next.profiles, kind, &name, Some(p), must_be_new)?
                }
                (Kind::Node, None) => write::<Node>(&mut next.nodes, kind, &name, None, false)?,
                (Kind::Cluster, None) => write::<Cluster>(&mut next.clusters, kind, &name, None, false)?,
                (Kind::Profile, None) => write::<Profile>(&mut next.profiles, kind, &name, None, false)?,
                (kind, _) => return Err(ChangeError::ReadOnly { kind }),
            };
            outcomes.push(Outcome { kind, name, action });
        }
        next.reindex();
        // In a clash, the object this change brings is the one named, not the one it meets.
        let touched: Vec<(Kind, &Name)> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Create(o) | Op::Put(o) => Some((o.kind(), o.name())),
                Op::Delete(..) => None,
            })
            .collect();
        let problems = validate_ranked(&next, &|kind, name| {
            usize::from(touched.iter().any(|(k, n)| *k == kind && n.as_str() == name))
        });
        if !problems.is_empty() {
            return Err(ChangeError::Invalid(problems));
        }
        if outcomes.iter().any(|o| o.action != Action::Unchanged) {
            next.version = self.version + 1;
        } else {
            return Ok((self.clone(), outcomes));
        }
        Ok((next, outcomes))
    }
}
