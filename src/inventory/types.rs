//! Identity newtypes shared by every subsystem: names, MAC addresses, timestamps.
//!
//! Each type parses from and prints to the one text form operators write, so the
//! config file, the admin API and the CLI all accept and show the same thing.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Implements `Display`, `FromStr`-backed serde and an OpenAPI string schema.
macro_rules! text_type {
    ($ty:ident, $example:expr, $description:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some($description))
                    .examples([serde_json::json!($example)])
                    .into()
            }
        }
        impl utoipa::ToSchema for $ty {}
    };
}

/// A DNS-label style name: 1-63 of `a-z`, `0-9`, `-`, not starting or ending with `-`.
/// Used for nodes, clusters, networks, profiles, pools and frontends.
///
/// Shared, not copied: names ride along in every lease and event, so a clone is a count.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(std::sync::Arc<str>);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Name {
    type Err = BadValue;
    fn from_str(s: &str) -> Result<Self, BadValue> {
        check_label(s).map(|()| Name(s.into()))
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

text_type!(Name, "worker-0", "DNS label: 1-63 of a-z, 0-9 and '-', not starting or ending with '-'");

/// A value that does not parse as its type; the message shows the value (shortened, escaped).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BadValue {
    #[error("must not be empty")]
    Empty,
    #[error("'{value}' is longer than {max} characters")]
    TooLong { value: String, max: usize },
    #[error("'{value}' contains '{bad}': use only a-z, 0-9 and '-'")]
    Character { value: String, bad: String },
    #[error("'{0}' must not start or end with '-'")]
    Hyphen(String),
    #[error("'{value}' is not a domain name: label {label}")]
    Domain { value: String, label: Box<BadValue> },
    #[error("'{0}' is not a MAC address (expected aa:bb:cc:dd:ee:ff)")]
    Mac(String),
    #[error("'{0}' is a multicast MAC address, not a NIC's")]
    MulticastMac(String),
    #[error("'{value}' is not an RFC 3339 time: {reason}")]
    Time { value: String, reason: humantime::TimestampError },
    #[error("'{value}' is not a duration (e.g. 30s, 12h, 7days): {reason}")]
    Duration { value: String, reason: humantime::DurationError },
}

fn check_label(s: &str) -> Result<(), BadValue> {
    if s.is_empty() {
        return Err(BadValue::Empty);
    }
    if s.len() > 63 {
        return Err(BadValue::TooLong { value: shown(s), max: 63 });
    }
    if let Some(bad) = s.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(BadValue::Character { value: shown(s), bad: bad.escape_default().to_string() });
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(BadValue::Hyphen(shown(s)));
    }
    Ok(())
}

/// A value as it may be shown in an error: at most 80 characters, control characters escaped.
pub fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_default).collect();
    if s.chars().count() > 80 {
        out.push_str("...");
    }
    out
}

/// A DNS name (domain or FQDN): dot-separated labels, at most 253 characters, no trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainName(String);

impl DomainName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DomainName {
    type Err = BadValue;
    fn from_str(s: &str) -> Result<Self, BadValue> {
        let lowered = s.trim_end_matches('.').to_ascii_lowercase();
        if lowered.len() > 253 {
            return Err(BadValue::TooLong { value: shown(s), max: 253 });
        }
        for label in lowered.split('.') {
            check_label(label).map_err(|e| BadValue::Domain { value: shown(s), label: Box::new(e) })?;
        }
        Ok(DomainName(lowered))
    }
}

text_type!(DomainName, "lab.example", "DNS domain name, e.g. lab.example");

/// An Ethernet MAC address, normalised to lower-case `aa:bb:cc:dd:ee:ff`.
/// Accepts `:` or `-` separators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    /// One `write_str` of 17 bytes: every DHCP event and lease line carries a MAC, and six
    /// formatted integers cost more than the rest of the line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [b':'; 17];
        for (i, byte) in self.0.iter().enumerate() {
            text[3 * i] = DIGITS[usize::from(byte >> 4)];
            text[3 * i + 1] = DIGITS[usize::from(byte & 0xf)];
        }
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for MacAddr {
    type Err = BadValue;
    fn from_str(s: &str) -> Result<Self, BadValue> {
        let bad = || BadValue::Mac(shown(s));
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (slot, part) in out.iter_mut().zip(&parts) {
            if part.len() != 2 {
                return Err(bad());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if out[0] & 1 == 1 {
            return Err(BadValue::MulticastMac(shown(s)));
        }
        Ok(MacAddr(out))
    }
}

text_type!(MacAddr, "52:54:00:12:34:56", "Ethernet MAC address");

/// A point in time, shown as RFC 3339 UTC with milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(SystemTime::now())
    }

    pub fn from_unix_millis(ms: u64) -> Self {
        Timestamp(UNIX_EPOCH + Duration::from_millis(ms))
    }

    pub fn unix_millis(self) -> u64 {
        self.0.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
    }
}

impl fmt::Display for Timestamp {
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` in one `write_str` (every event and lease line holds one or
    /// two; formatting them piece by piece cost more than the rest of the line). Times before
    /// 1970 show as 1970, as `unix_millis` clamps them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.unix_millis();
        let (secs, millis) = (ms / 1000, ms % 1000);
        let (days, day_secs) = (secs / 86_400, secs % 86_400);
        let (year, month, day) = civil_date(days);
        if year > 9999 {
            return write!(f, "{}", humantime::format_rfc3339_millis(Timestamp::from_unix_millis(ms).0));
        }
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let mut digits = |at: usize, width: usize, mut value: u64| {
            for i in (at..at + width).rev() {
                text[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        digits(0, 4, year);
        digits(5, 2, month);
        digits(8, 2, day);
        digits(11, 2, day_secs / 3600);
        digits(14, 2, day_secs / 60 % 60);
        digits(17, 2, day_secs % 60);
        digits(20, 3, millis);
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

impl FromStr for Timestamp {
    type Err = BadValue;
    fn from_str(s: &str) -> Result<Self, BadValue> {
        humantime::parse_rfc3339_weak(s).map(Timestamp).map_err(|reason| BadValue::Time { value: shown(s), reason })
    }
}

text_type!(Timestamp, "2026-11-22T10:00:00.000Z", "RFC 3339 time, UTC");

/// Parses an operator-written duration such as `90s`, `12h` or `7days`.
pub fn parse_duration(s: &str) -> Result<Duration, BadValue> {
    humantime::parse_duration(s).map_err(|reason| BadValue::Duration { value: shown(s), reason })
}

/// Formats a duration the way `parse_duration` reads it.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_normalise_to_lower_case_colons() {
        let mac: MacAddr = "52-54-00-AB-cd-EF".parse().expect("valid");
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:ef");
    }

    #[test]
    fn malformed_mac_addresses_are_refused_with_the_value() {
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:ef:01",
            "52:54:00:ab:cd:eg",
            "525:4:00:ab:cd:ef",
            "01:00:5e:00:00:01",
        ] {
            let err = bad.parse::<MacAddr>().expect_err(bad);
            assert!(err.to_string().contains(&format!("'{bad}'")), "{err}");
        }
    }

    #[test]
    fn names_are_dns_labels() {
        assert!("worker-0".parse::<Name>().is_ok());
        for bad in ["", "-a", "a-", "Worker", "a_b", "a.b", &"x".repeat(64)] {
            assert!(bad.parse::<Name>().is_err(), "{bad}");
        }
    }

    #[test]
    fn domain_names_lower_case_and_drop_the_root_dot() {
        let d: DomainName = "Lab.Example.".parse().expect("valid");
        assert_eq!(d.as_str(), "lab.example");
        assert!("lab..example".parse::<DomainName>().is_err());
    }

    #[test]
    fn timestamps_round_trip_through_text() {
        let t = Timestamp::from_unix_millis(1_795_000_000_123);
        let back: Timestamp = t.to_string().parse().expect("parses");
        assert_eq!(back, t);
    }

    #[test]
    fn errors_show_control_characters_escaped() {
        let err = "a\u{0}b".parse::<Name>().expect_err("nul");
        assert!(err.to_string().contains("\\u{0}"), "{err}");
    }

    #[test]
    fn timestamps_show_as_rfc3339_with_milliseconds_like_humantime() {
        let mut ms: u64 = 0;
        // Day boundaries, leap days, century rules (2000, 2100), and a spread of instants.
        let mut samples = vec![0, 86_399_999, 951_782_400_000, 951_868_799_999, 4_107_542_400_000, 253_402_300_799_999];
        while ms < 4_200_000_000_000 {
            samples.push(ms);
            ms += 7_654_321_987;
        }
        for ms in samples {
            let t = Timestamp::from_unix_millis(ms);
            let expected = humantime::format_rfc3339_millis(t.0).to_string();
            assert_eq!(t.to_string(), expected, "{ms}");
        }
        assert_eq!(Timestamp::from_unix_millis(951_782_400_000).to_string(), "2000-02-29T00:00:00.000Z");
    }
}
