//! Parameter checks from Proxmox VE's own API schema: the endpoints the stand-in serves, as
//! `scripts/pve-schema-subset` extracted them from pve-schema.json into
//! tests/fixtures/pve/schema.json. Types, enums, bounds, `name[n]` families, property strings
//! (`virtio=MAC,bridge=vmbr0,tag=107`: keys, aliases, default keys, required keys) and the
//! named formats slipway's parameters use. Errors are per parameter, as Proxmox words them.

use std::collections::BTreeMap;

use serde_json::Value;

pub struct Schema(Value);

impl Schema {
    pub fn load() -> Schema {
        let text = include_str!("../fixtures/pve/schema.json");
        Schema(serde_json::from_str(text).expect("tests/fixtures/pve/schema.json is JSON"))
    }

    /// Checks `params` of `endpoint` (`"POST /nodes/{node}/qemu"`), path parameters included;
    /// the error maps each bad parameter to Proxmox's message for it.
    pub fn check(&self, endpoint: &str, params: &BTreeMap<String, String>) -> Result<(), BTreeMap<String, String>> {
        let props = self.0[endpoint].as_object().unwrap_or_else(|| panic!("{endpoint} is not in the schema subset"));
        let mut errors = BTreeMap::new();
        for (name, value) in params {
            let def = props.get(name.as_str()).or_else(|| {
                let family = name.trim_end_matches(|c: char| c.is_ascii_digit());
                (family != name).then(|| props.get(&format!("{family}[n]"))).flatten()
            });
            match def {
                None => {
                    errors.insert(
                        name.clone(),
                        "property is not defined in schema and the schema does not allow additional properties".into(),
                    );
                }
                Some(def) => {
                    if let Err(e) = check_value(def, value) {
                        errors.insert(name.clone(), e);
                    }
                }
            }
        }
        for (name, def) in props {
            let optional = def["optional"].as_i64() == Some(1) || name.ends_with("[n]");
            if !optional && !params.contains_key(name) {
                errors.insert(name.clone(), "property is missing and it is not optional".into());
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// Checks an answer's `data` of `endpoint` against what Proxmox's schema says the endpoint
    /// returns: types, enums, and every property that is not optional.
    pub fn check_returns(&self, endpoint: &str, data: &Value) -> Result<(), String> {
        let def = &self.0[format!("RETURNS {endpoint}")];
        assert!(def.is_object(), "RETURNS {endpoint} is not in the schema subset");
        conforms(def, data, "data")
    }
}

/// `value` as `def` describes it; the error names where it is (`data[3].status`).
fn conforms(def: &Value, value: &Value, at: &str) -> Result<(), String> {
    let wrong = |want: &str| Err(format!("{at}: {want} expected, got {value}"));
    match def["type"].as_str() {
        Some("object") => {
            let Some(object) = value.as_object() else { return wrong("an object") };
            for (name, prop) in def["properties"].as_object().into_iter().flatten() {
                match object.get(name) {
                    Some(v) => conforms(prop, v, &format!("{at}.{name}"))?,
                    None if prop["optional"].as_i64() == Some(1) => {}
                    None => return Err(format!("{at}.{name}: missing, and it is not optional")),
                }
            }
        }
        Some("array") => {
            let Some(items) = value.as_array() else { return wrong("an array") };
            for (i, item) in items.iter().enumerate() {
                conforms(&def["items"], item, &format!("{at}[{i}]"))?;
            }
        }
        Some("string") => {
            let Some(text) = value.as_str() else { return wrong("a string") };
            if let Some(choices) = def["enum"].as_array()
                && !choices.iter().any(|c| c.as_str() == Some(text))
            {
                return Err(format!("{at}: '{text}' is not one of {}", Value::Array(choices.clone())));
            }
        }
        // Perl's JSON writes a number it holds as a string in quotes: `/cluster/nextid` answers
        // `"100"` although the schema says integer, so a decimal string is an integer too.
        Some("integer")
            if !(value.is_i64() || value.is_u64() || value.as_str().is_some_and(|t| t.parse::<i64>().is_ok())) =>
        {
            return wrong("an integer");
        }
        Some("number") if !(value.is_number() || value.as_str().is_some_and(|t| t.parse::<f64>().is_ok())) => {
            return wrong("a number");
        }
        // Proxmox's booleans are 0/1 on the wire.
        Some("boolean") if !(value.is_boolean() || value.as_u64().is_some_and(|n| n <= 1)) => {
            return wrong("a boolean (0/1)");
        }
        Some("null") if !value.is_null() => return wrong("null"),
        _ => {}
    }
    Ok(())
}

fn check_value(def: &Value, value: &str) -> Result<(), String> {
    match def["type"].as_str().unwrap_or("string") {
        "integer" => {
            let n: i64 = value.parse().map_err(|_| format!("type check ('integer') failed - got '{value}'"))?;
            if let Some(min) = def["minimum"].as_i64().filter(|m| n < *m) {
                return Err(format!("value must have a minimum value of {min}"));
            }
            if let Some(max) = def["maximum"].as_i64().filter(|m| n > *m) {
                return Err(format!("value may have a maximum value of {max}"));
            }
        }
        "number" => {
            value.parse::<f64>().map_err(|_| format!("type check ('number') failed - got '{value}'"))?;
        }
        "boolean" => {
            if !["0", "1", "true", "false", "yes", "no", "on", "off"].contains(&value.to_ascii_lowercase().as_str()) {
                return Err(format!("type check ('boolean') failed - got '{value}'"));
            }
        }
        _ => {
            if let Some(choices) = def["enum"].as_array()
                && !choices.iter().any(|c| c.as_str() == Some(value))
            {
                let list: Vec<&str> = choices.iter().filter_map(Value::as_str).collect();
                return Err(format!("value '{value}' does not have a value in the enumeration '{}'", list.join(", ")));
            }
            if let Some(max) = def["maxLength"].as_u64().filter(|m| value.len() as u64 > *m) {
                return Err(format!("value may only be {max} characters long"));
            }
            match &def["format"] {
                Value::Object(format) => property_string(format, value)?,
                Value::String(name) => named_format(name, value)?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// `key=value,key=value`, with a bare first value for the `default_key`.
fn property_string(format: &serde_json::Map<String, Value>, text: &str) -> Result<(), String> {
    let default_key = format.iter().find(|(_, d)| d["default_key"].as_i64() == Some(1)).map(|(k, _)| k.clone());
    let mut seen = BTreeMap::new();
    for (i, part) in text.split(',').enumerate() {
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k.to_owned(), v),
            None if i == 0 => (default_key.clone().ok_or(format!("value without a key: '{part}'"))?, part),
            None => return Err(format!("value without a key: '{part}'")),
        };
        let def = format.get(&key).ok_or(format!("invalid format - unknown key '{key}'"))?;
        if let Some(alias) = def["alias"].as_str() {
            // `virtio=MAC` is `model=virtio,macaddr=MAC`.
            if let Some(key_alias) = def["keyAlias"].as_str() {
                seen.insert(key_alias.to_owned(), key.clone());
            }
            let target = format.get(alias).ok_or(format!("invalid format - unknown key '{alias}'"))?;
            check_value(target, value).map_err(|e| format!("invalid format - {alias}: {e}"))?;
            seen.insert(alias.to_owned(), value.to_owned());
            continue;
        }
        check_value(def, value).map_err(|e| format!("invalid format - {key}: {e}"))?;
        if seen.insert(key.clone(), value.to_owned()).is_some() {
            return Err(format!("invalid format - duplicate key '{key}'"));
        }
    }
    for (key, def) in format {
        let required = def.get("optional").is_none() && def.get("alias").is_none();
        if required && !seen.contains_key(key) {
            return Err(format!("invalid format - property '{key}' is missing"));
        }
    }
    Ok(())
}

fn named_format(name: &str, value: &str) -> Result<(), String> {
    let ok = match name {
        "dns-name" => value
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')),
        "pve-tag-list" => value.split([';', ',', ' ']).filter(|t| !t.is_empty()).all(|t| {
            let mut chars = t.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || "_-+.".contains(c))
        }),
        "mac-addr" => {
            let parts: Vec<&str> = value.split(':').collect();
            parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
        }
        "pve-bridge-id" | "pve-storage-id" => {
            !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        }
        "pve-qm-boot" => value.split(',').all(|part| match part.split_once('=') {
            Some(("order", devices)) => devices.split(';').all(|d| {
                let family = d.trim_end_matches(|c: char| c.is_ascii_digit());
                family != d
                    && ["ide", "sata", "scsi", "virtio", "net", "efidisk", "hostpci", "usb", "mpath"].contains(&family)
            }),
            Some(("legacy", v)) => v.chars().all(|c| "acdn".contains(c)),
            _ => false,
        }),
        "pve-volume-id-or-qm-path" => {
            value.starts_with('/') || value.split_once(':').is_some_and(|(s, v)| !s.is_empty() && !v.is_empty())
        }
        _ => true,
    };
    if ok { Ok(()) } else { Err(format!("value does not match the regex pattern of format '{name}': '{value}'")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn the_schema_refuses_what_proxmox_refuses() {
        let schema = Schema::load();
        let create = "POST /nodes/{node}/qemu";
        let good = params(&[
            ("node", "pve1"),
            ("vmid", "105"),
            ("memory", "2048"),
            ("net0", "virtio=52:54:00:6B:00:10,bridge=vmbr0,tag=107"),
            ("scsi0", "local-lvm:32,discard=on,iothread=1"),
            ("boot", "order=scsi0;net0"),
            ("bios", "ovmf"),
            ("tags", "slipway;slipway.node.master-0"),
        ]);
        assert_eq!(schema.check(create, &good), Ok(()));
        for (key, value) in [
            ("memory", "8"),
            ("net0", "virtio=52:54:00:6B:00:10,bridge=vmbr0,tag=5000"),
            ("net0", "bridge=vmbr0"),
            ("net0", "virtio=52:54:00:6B:00:10,colour=red"),
            ("bios", "coreboot"),
            ("boot", "order=floppy0"),
            ("tags", "bad tag!"),
            ("frobnicate", "1"),
        ] {
            let mut bad = good.clone();
            bad.insert(key.into(), value.into());
            let errors = schema.check(create, &bad).expect_err(&format!("{key}={value} must be refused"));
            assert!(errors.contains_key(key), "{key}={value}: {errors:?}");
        }
    }
}
