//! Any datagram through DHCP decode and decide, against a lab inventory with reservations, a
//! pool and leases: never a panic, and every reply encodes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    slipway::dhcp::fuzz::decide_datagram(data);
});
