//! A config reload (SIGHUP, `slipway reload`, `POST /api/v1/reload`): the file read and checked
//! again, then applied whole or not at all. The inventory objects go in as one store commit
//! (DHCP, DNS, the load balancer and boot follow it as they follow API changes); the services
//! whose settings changed are stopped and bound again from the new settings (the others keep
//! serving); the tokens, the event retention and the cluster definitions are swapped. A file
//! with any problem, or a change only a restart can make, changes nothing.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::AppError;
use super::sections::{Section, Wiring, copy_ipxe};
use super::services::Services;
use crate::api::keys::Keys;
use crate::api::reload::{Outcome, Refused, Reloaded};
use crate::config::Config;
use crate::inventory::Outcome as Change;
use crate::store::events::{EventKind, Source, Subject};

/// How long a retired service gets to stop (a DHCP server finishing a lease commit on a slow
/// disk). One that does not stop in time stops the daemon: a second copy beside it could hand
/// out an address twice.
const RETIRE_GRACE: Duration = Duration::from_secs(30);

/// Reads `current.path` again and applies it. `Err` only when the daemon cannot go on: a
/// retired service that would not stop, or a section whose new services did not bind and whose
/// old ones could not be bound back.
pub async fn reload(
    current: &mut Config,
    wiring: &mut Wiring,
    services: &mut Services,
    shutdown: &CancellationToken,
) -> Result<Outcome, AppError> {
    let file = current.path.display().to_string();
    let refuse = |wiring: &Wiring, problems: Vec<String>| {
        for problem in &problems {
            tracing::error!(%problem, "reload refused: the running config stays");
        }
        let details = EventKind::ConfigReloadRefused { file: file.clone(), problems: problems.clone() };
        wiring.events.append(Source::Daemon, Subject::default(), details);
        Ok(Err(Refused(problems)))
    };
    let new = match crate::config::load(&current.path) {
        Ok(new) => new,
        Err(errors) => return refuse(wiring, errors.0.iter().map(ToString::to_string).collect()),
    };
    let mut problems = restart_only(current, &new);
    problems.extend(super::preflight(&new));
    // The tokens as they will be in force: read once, here.
    let keys = crate::api::auth::load(&new.admin.token, &new.state_dir, new.path.parent())
        .map_err(|e| e.to_string())
        .and_then(|(token, _)| Keys::read(token, new.admin.tokens_file.as_deref()).map_err(|e| e.to_string()));
    if let Err(e) = &keys {
        problems.push(e.clone());
    }
    match wiring.store.snapshot().redeclare(&new.inventory) {
        Ok(next) => problems.extend(wiring.clusters.check_declared(&new.definitions, &next.inventory)),
        Err(e) => problems.push(e.to_string()),
    }
    problems.dedup();
    let keys = match keys {
        Ok(keys) if problems.is_empty() => keys,
        _ => return refuse(wiring, problems),
    };

    // Every check passed: the services of each changed section are retired (all of them
    // first, so a new one can take an address an old one held) and bound from the new file.
    let sections: Vec<Section> = Section::REBINDABLE.into_iter().filter(|s| s.changed(current, &new)).collect();
    for &section in &sections {
        if !services.retire(section.as_str(), RETIRE_GRACE).await {
            return Err(AppError::NotStopped(section.as_str()));
        }
    }
    if let Err(e) = rebind(&sections, &new, wiring, services).await {
        restore(&sections, current, wiring, services, shutdown).await?;
        return refuse(wiring, vec![format!("{e} (the services keep their old settings)")]);
    }
    let store = wiring.store.clone();
    let declared = new.inventory.clone();
    let committed = tokio::task::spawn_blocking(move || store.redeclare(&declared)).await;
    let outcomes = match committed {
        Ok(Ok((inventory, outcomes))) => {
            wiring.events.inventory_changed(Source::Daemon, &inventory, &outcomes);
            outcomes
        }
        Ok(Err(e)) => return undo(&sections, current, wiring, services, shutdown, e.to_string()).await,
        Err(e) => {
            return undo(&sections, current, wiring, services, shutdown, format!("the store task failed: {e}")).await;
        }
    };
    services.start(shutdown);

    if let Err(e) = copy_ipxe(&new) {
        tracing::warn!(error = %e, "reload: cannot copy the iPXE binaries");
    }
    let tokens_changed = wiring.keys.install(keys);
    if new.events != current.events {
        wiring.events.set_retention(new.events);
    }
    // Always: a definition the same as before may name add-on files that changed.
    let declared = crate::cluster::control::Declared { file: new.path.clone(), definitions: new.definitions.clone() };
    wiring.clusters.redeclare(declared);
    let definitions_changed = new.definitions != current.definitions;
    let changed = described(&outcomes, &sections, current, &new, definitions_changed, tokens_changed);
    tracing::info!(file = %file, changed = ?changed, "config reloaded");
    let details = EventKind::ConfigReloaded { file: file.clone(), changed: changed.clone() };
    wiring.events.append(Source::Daemon, Subject::default(), details);
    *current = new;
    Ok(Ok(Reloaded { file, changed }))
}

/// The new inventory could not be stored: the services bound from the new file (not started)
/// are dropped, the old ones bound again and started, and the reload refused.
async fn undo(
    sections: &[Section],
    current: &Config,
    wiring: &mut Wiring,
    services: &mut Services,
    shutdown: &CancellationToken,
    why: String,
) -> Result<Outcome, AppError> {
    services.unbind();
    restore(sections, current, wiring, services, shutdown).await?;
    let problem = format!("cannot store the new inventory: {why} (the services keep their old settings)");
    tracing::error!(%problem, "reload refused: the running config stays");
    let details =
        EventKind::ConfigReloadRefused { file: current.path.display().to_string(), problems: vec![problem.clone()] };
    wiring.events.append(Source::Daemon, Subject::default(), details);
    Ok(Err(Refused(vec![problem])))
}

/// Binds every section of `sections` from `config`; on an error the ones bound are dropped.
async fn rebind(
    sections: &[Section],
    config: &Config,
    wiring: &mut Wiring,
    services: &mut Services,
) -> Result<(), AppError> {
    for &section in sections {
        if let Err(e) = wiring.bind(section, config, services).await {
            services.unbind();
            return Err(e);
        }
    }
    Ok(())
}

/// Binds `sections` again from the config in force and starts them (after a refused reload
/// retired them). A section that cannot come back stops the daemon: systemd restarts it.
async fn restore(
    sections: &[Section],
    config: &Config,
    wiring: &mut Wiring,
    services: &mut Services,
    shutdown: &CancellationToken,
) -> Result<(), AppError> {
    let restored = rebind(sections, config, wiring, services).await;
    services.start(shutdown);
    if let Err(e) = &restored {
        tracing::error!(error = %e, "reload: the old settings do not bind again either; stopping");
    }
    restored
}

/// What only a restart changes, each as a problem naming the field and both values.
fn restart_only(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |field: &str, differ: bool, was: String, now: String| {
        if differ {
            out.push(format!(
                "{}: {field} = {now}: changing it (from {was}) needs a restart (systemctl restart slipway)",
                new.path.display()
            ));
        }
    };
    let shown = |p: &std::path::Path| p.display().to_string();
    check("state_dir", old.state_dir != new.state_dir, shown(&old.state_dir), shown(&new.state_dir));
    let (a, b) = (&old.admin, &new.admin);
    check("admin.listen", a.listen != b.listen, a.listen.to_string(), b.listen.to_string());
    let tls = |t: &Option<crate::config::TlsFiles>| t.as_ref().map_or("none".into(), |t| format!("{t:?}"));
    check("admin.tls", a.tls != b.tls, tls(&a.tls), tls(&b.tls));
    check("admin.limits", a.limits != b.limits, format!("{:?}", a.limits), format!("{:?}", b.limits));
    let store =
        |c: &Config| c.shared.as_ref().map_or("local".into(), |s| format!("etcd {:?} {}", s.etcd.endpoints, s.prefix));
    check("store", old.shared != new.shared, store(old), store(new));
    let names = |c: &Config| c.hypervisors.iter().map(|h| h.name.to_string()).collect::<Vec<_>>().join(", ");
    check("hypervisors", old.hypervisors != new.hypervisors, names(old), names(new));
    // The lifecycle engine reads add-on sets from the images directory it started with.
    let (was, now) = (super::images_dir(old), super::images_dir(new));
    // (Under a moved state_dir it moves too: that one is named already.)
    check("http.images", was != now && old.state_dir == new.state_dir, shown(&was), shown(&now));
    out
}

/// One line per change: the inventory's objects, the sections rebound, the rest.
fn described(
    outcomes: &[Change],
    sections: &[Section],
    old: &Config,
    new: &Config,
    definitions_changed: bool,
    tokens_changed: bool,
) -> Vec<String> {
    let mut out: Vec<String> = outcomes
        .iter()
        .map(|o| format!("{} {} {}", o.kind, o.name, format!("{:?}", o.action).to_lowercase()))
        .collect();
    out.extend(sections.iter().map(|s| format!("{} rebound", s.as_str())));
    if definitions_changed {
        out.push("cluster definitions".into());
    }
    if new.events != old.events {
        out.push("event retention".into());
    }
    if tokens_changed {
        out.push("admin tokens".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::restart_only;
    use crate::config::parse;

    #[test]
    fn a_change_only_a_restart_makes_is_named_with_both_values() {
        let path = std::path::Path::new("/etc/slipway/slipway.toml");
        let old = parse("state_dir = \"/var/lib/slipway\"\n", path).expect("valid");
        let new = parse("state_dir = \"/srv/slipway\"\n[admin]\nlisten = \"127.0.0.1:9444\"\n", path).expect("valid");
        let problems = restart_only(&old, &new);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("state_dir = /srv/slipway") && problems[0].contains("from /var/lib/slipway"));
        assert!(problems[1].contains("admin.listen = 127.0.0.1:9444") && problems[1].contains("needs a restart"));
        assert!(restart_only(&old, &old).is_empty());
    }
}
