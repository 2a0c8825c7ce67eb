//! The HA envelope against arbitrary bytes: nothing panics, nothing without
//! the key is accepted, and any body (the input itself) sealed on any
//! channel opens once, as it was, then never again.
#![no_main]

use ferry::ha::{
    key::Key,
    wire::{HEADER_LEN, Kind, Opener, Sealer, message_len},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(key) = Key::new(&[0x42; 32]) else {
        return;
    };
    let channel = data.first().copied().unwrap_or(0);
    let mut o = Opener::new(key.clone());
    if let Ok(m) = o.open(data, channel) {
        panic!("bytes made without the key were accepted: {m:?}");
    }
    let mut s = Sealer::new(key, 7);
    let Ok(m) = s.seal(Kind::Stream, channel, data) else {
        return;
    };
    let h: [u8; HEADER_LEN] = m[..HEADER_LEN].try_into().unwrap_or([0; HEADER_LEN]);
    assert_eq!(message_len(&h), Ok(m.len()));
    match o.open(&m, channel) {
        Ok(opened) => assert_eq!(opened.body, data),
        Err(e) => panic!("a sealed message was refused: {e}"),
    }
    assert!(o.open(&m, channel).is_err(), "opened twice");
});
