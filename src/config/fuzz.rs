//! The properties the `config_parse` fuzz target checks, callable from the unit tests too: any
//! text as a config file. It reads no file beyond checking that named ones exist.

use std::path::Path;

/// Panics if a config breaks a promise: a refused one names at least one problem, each with
/// a message and a line inside the text; an accepted one's inventory validates.
pub fn parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match super::parse(text, Path::new("/etc/slipway/slipway.toml")) {
        Ok(config) => {
            let problems = crate::inventory::validate(&config.inventory);
            assert!(problems.is_empty(), "an accepted config's inventory has problems: {problems:?}");
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "a refused config names its problems");
            let lines = text.lines().count().max(1) + 1;
            for e in &errors.0 {
                assert!(!e.message.is_empty(), "a problem without a message: {e:?}");
                if let Some(line) = e.line {
                    assert!((1..=lines).contains(&line), "line {line} of {lines}: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn texts_good_and_bad_go_through_without_a_panic() {
        let path = std::path::Path::new("/etc/slipway/slipway.toml");
        assert!(crate::config::parse("", path).is_ok(), "the empty config is the built-in lab");
        for text in ["", "[dhcp]\ninterfaces = [\"eth1\"]\n", "[[networks]]\nname = 3\n", "a = [", "\u{0}"] {
            parse(text.as_bytes());
        }
    }
}
