//! The HA envelope against arbitrary bytes: nothing panics, nothing without
//! the key is accepted, and any body (the input itself) sealed on any
//! channel opens once, as it was, then never again. The opened body then
//! goes through the sync stream's decoder (stations, markers, handover
//! messages): errors, never panics, and what decodes re-encodes to a body
//! that decodes the same.
#![no_main]

use ferry::ha::{
    key::Key,
    stream,
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
    if let Ok(msg) = stream::decode(data) {
        let again = stream::marker(&msg);
        match msg {
            // Records of no station are dropped on encoding: compare the
            // stations themselves.
            stream::Msg::Stations(recs) => {
                let flat = |r: Vec<(String, Vec<stream::Station>)>| -> Vec<(String, stream::Station)> {
                    r.into_iter()
                        .flat_map(|(ap, l)| l.into_iter().map(move |s| (ap.clone(), s)))
                        .collect()
                };
                let back = match stream::decode(&again) {
                    Ok(stream::Msg::Stations(r)) => r,
                    _ => Vec::new(),
                };
                assert_eq!(flat(back), flat(recs), "re-encoding changed the stations");
            }
            m => assert_eq!(stream::decode(&again).ok(), Some(m), "re-encoding changed it"),
        }
    }
});
