//! Any text as a config file through the checks `slipway check` and the daemon run: never a
//! panic; a refusal names its problems with lines inside the text; an accepted config's
//! inventory validates.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    slipway::config::fuzz::parse(data);
});
