//! Any bytes as a write request's body (a manifest or a cluster definition, JSON or YAML)
//! through the handlers' decoding, then applied or planned against the lab inventory: never a
//! panic, and what is accepted validates.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    slipway::api::fuzz::body(data);
});
