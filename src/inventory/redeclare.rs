//! A new config file's objects in place of the old one's (a config reload): pure, like
//! `Inventory::apply`. The objects made through the API stay; one whose name the file now
//! declares gives way to the file's (as when the daemon starts).

use std::collections::BTreeMap;

use super::change::{Action, ChangeError, Outcome};
use super::model::{HasOrigin, Inventory, Kind, Origin};
use super::types::Name;
use super::validate::validate_ranked;

/// The inventory after a reload, and what it changed.
#[derive(Clone, Debug)]
pub struct Redeclared {
    pub inventory: Inventory,
    /// Every object created, updated or deleted, kind by kind.
    pub outcomes: Vec<Outcome>,
    /// Objects made through the API that the file now declares: their stored copies go.
    pub adopted: Vec<(Kind, Name)>,
}

impl Inventory {
    /// `declared` (the config file's objects) with this inventory's API-made objects: validated
    /// as a whole, version + 1 when anything changed. `self` is never modified.
    pub fn redeclare(&self, declared: &Inventory) -> Result<Redeclared, ChangeError> {
        let mut next = declared.clone();
        next.version = self.version;
        let mut adopted = Vec::new();
        keep_api(&self.nodes, &mut next.nodes, Kind::Node, &mut adopted);
        keep_api(&self.clusters, &mut next.clusters, Kind::Cluster, &mut adopted);
        keep_api(&self.profiles, &mut next.profiles, Kind::Profile, &mut adopted);
        next.reindex();
        let mut outcomes = Vec::new();
        diff(&self.networks, &next.networks, Kind::Network, &mut outcomes);
        diff(&self.clusters, &next.clusters, Kind::Cluster, &mut outcomes);
        diff(&self.profiles, &next.profiles, Kind::Profile, &mut outcomes);
        diff(&self.nodes, &next.nodes, Kind::Node, &mut outcomes);
        diff(&self.pools, &next.pools, Kind::Pool, &mut outcomes);
        diff(&self.frontends, &next.frontends, Kind::Frontend, &mut outcomes);
        // In a clash, the object the file changes is the one named.
        let problems = validate_ranked(&next, &|kind, name| {
            usize::from(outcomes.iter().any(|o| o.kind == kind && o.name.as_str() == name))
        });
        if !problems.is_empty() {
            return Err(ChangeError::Invalid(problems));
        }
        if !outcomes.is_empty() {
            next.version = self.version + 1;
        }
        Ok(Redeclared { inventory: next, outcomes, adopted })
    }
}

/// Copies the API-made objects of `old` into `next`, unless `next` (the file) has that name.
fn keep_api<T: HasOrigin + Clone>(
    old: &BTreeMap<Name, T>,
    next: &mut BTreeMap<Name, T>,
    kind: Kind,
    adopted: &mut Vec<(Kind, Name)>,
) {
    for (name, object) in old.iter().filter(|(_, o)| o.origin() == Origin::Api) {
        if next.contains_key(name) {
            adopted.push((kind, name.clone()));
        } else {
            next.insert(name.clone(), object.clone());
        }
    }
}

fn diff<T: PartialEq>(old: &BTreeMap<Name, T>, new: &BTreeMap<Name, T>, kind: Kind, out: &mut Vec<Outcome>) {
    for (name, object) in new {
        let action = match old.get(name) {
            None => Action::Created,
            Some(before) if before != object => Action::Updated,
            Some(_) => continue,
        };
        out.push(Outcome { kind, name: name.clone(), action });
    }
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        out.push(Outcome { kind, name: name.clone(), action: Action::Deleted });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::lab::{Lab, node};

    /// What the file declares of `inv`.
    fn declared(inv: &Inventory) -> Inventory {
        let mut d = inv.clone();
        d.nodes.retain(|_, n| n.origin == Origin::Config);
        d.reindex();
        d
    }

    /// The lab as a config file declares it, with one node made through the API.
    fn lab_with_api_node(api: crate::inventory::Node) -> Inventory {
        let mut lab = Lab::okd().build();
        lab.clusters.values_mut().for_each(|c| c.origin = Origin::Config);
        lab.nodes.values_mut().for_each(|n| n.origin = Origin::Config);
        lab.profiles.values_mut().for_each(|p| p.origin = Origin::Config);
        lab.reindex();
        let op = crate::inventory::Op::Put(crate::inventory::Object::Node(api));
        lab.apply(&[op]).expect("the API's node").0
    }

    #[test]
    fn a_reload_adds_changes_and_removes_the_files_objects_and_keeps_the_apis() {
        let old = lab_with_api_node(node("builder", "52:54:00:00:02:00", "10.1.107.30", None, None));
        let mut file = declared(&old);
        file.nodes.remove("bootstrap");
        let mut extra = node("worker-0", "52:54:00:00:01:11", "10.1.107.21", Some("prod"), None);
        extra.origin = Origin::Config;
        file.nodes.insert(extra.name.clone(), extra);
        let done = old.redeclare(&file).expect("valid");
        let actions: Vec<(&str, Action)> = done.outcomes.iter().map(|o| (o.name.as_str(), o.action)).collect();
        assert_eq!(actions, [("worker-0", Action::Created), ("bootstrap", Action::Deleted)]);
        assert_eq!(done.inventory.nodes["builder"].origin, Origin::Api, "the API's node stays");
        assert!(done.inventory.node_by_ip("10.1.107.21".parse().expect("ip")).is_some(), "indexes rebuilt");
        assert_eq!(done.inventory.version, old.version + 1);
        assert!(done.adopted.is_empty());
        // The same file again changes nothing.
        let again = done.inventory.redeclare(&file).expect("valid");
        assert!(again.outcomes.is_empty());
        assert_eq!(again.inventory.version, done.inventory.version);
    }

    #[test]
    fn a_file_that_clashes_with_an_api_object_is_refused_naming_the_files_object() {
        let old = lab_with_api_node(node("builder", "52:54:00:00:02:00", "10.1.107.30", None, None));
        let mut file = declared(&old);
        let mut clash = node("worker-0", "52:54:00:00:01:11", "10.1.107.30", Some("prod"), None);
        clash.origin = Origin::Config;
        file.nodes.insert(clash.name.clone(), clash);
        let Err(ChangeError::Invalid(problems)) = old.redeclare(&file) else { panic!("a clash is refused") };
        assert!(problems.iter().any(|p| p.to_string().contains("worker-0")), "{problems:?}");
    }

    #[test]
    fn an_api_object_the_file_now_declares_gives_way() {
        let api = node("builder", "52:54:00:00:02:00", "10.1.107.30", None, None);
        let old = lab_with_api_node(api.clone());
        let mut file = declared(&old);
        let mut taken = api;
        taken.origin = Origin::Config;
        taken.ipv4 = "10.1.107.31".parse().expect("ip");
        file.nodes.insert(taken.name.clone(), taken);
        let done = old.redeclare(&file).expect("valid");
        assert_eq!(done.adopted, [(Kind::Node, "builder".parse().expect("name"))]);
        assert_eq!(done.inventory.nodes["builder"].origin, Origin::Config);
        assert_eq!(done.outcomes.len(), 1);
    }
}
