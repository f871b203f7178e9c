//! Any TFTP request name through the name filter: never a panic, and a name that passes is a
//! relative path of plain components that stays inside the root when joined to it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(name) = std::str::from_utf8(data) {
        slipway::tftp::fuzz::check_name(name);
    }
});
