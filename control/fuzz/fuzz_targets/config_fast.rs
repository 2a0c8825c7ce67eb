//! Holds the config entry fast path to the `toml` crate: for any entry body,
//! read as a `[[tunnel]]` and as a `[[station]]`, the fast path either
//! declines or yields exactly the fields, values and spans TOML yields.
//! A difference is a crash with the two readings in the message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Config files are UTF-8 (the loader refuses anything else first).
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(diff) = ferry::config::fast::agrees_with_toml(body) {
        panic!("fast path and TOML differ on {body:?}: {diff}");
    }
});
