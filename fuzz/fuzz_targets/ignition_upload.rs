//! Any bytes as an uploaded Ignition config through the upload check and the certificate
//! dating, and when accepted merged with slipway's additions: never a panic, and an accepted
//! upload renders into a config the same check accepts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    slipway::boot::ignition::fuzz::upload(data);
});
