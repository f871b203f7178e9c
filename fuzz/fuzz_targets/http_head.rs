//! Any bytes as an HTTP request head through the boot service's direct-path parser, and as a
//! `Range` header on a file of any length: never a panic, no image path outside the images
//! directory, no byte range outside the file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    slipway::http::fuzz::input(data);
});
