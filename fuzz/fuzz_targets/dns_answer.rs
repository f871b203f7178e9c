//! Any datagram through DNS request decoding, the zone decision and answer encoding, against a
//! lab with cluster, reverse, wildcard and static zones: never a panic, and every answer encodes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let allowed = data.first().is_some_and(|b| b & 1 == 1);
    slipway::dns::fuzz::answer_datagram(data, allowed);
});
