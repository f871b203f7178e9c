//! Any datagram as a TFTP packet: parsing and option negotiation never panic, the negotiated
//! block and window sizes stay within slipway's limits, and a request name is filtered safely.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    slipway::tftp::fuzz::packet(data);
});
