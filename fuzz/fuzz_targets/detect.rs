//! `detect_wasm_version_from_binary` on arbitrary bytes: never panics, and its
//! answer agrees with the header rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmpool::{detect_wasm_version_from_binary, WasiVersion};

fuzz_target!(|data: &[u8]| {
    let version = detect_wasm_version_from_binary(data);
    let has_header = data.len() >= 9 && data.starts_with(b"\0asm");
    match version {
        WasiVersion::Preview1 => {
            assert!(has_header && data[4..8] == [1, 0, 0, 0] && data[8] <= 0x0c);
        }
        WasiVersion::Preview2 => assert!(has_header && data[4] >= 0x0d),
        WasiVersion::Unknown => {
            assert!(!has_header || data[4] < 0x0d);
        }
    }
});
