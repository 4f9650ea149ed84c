//! Telling a WASIp1 core module from a WASIp2 component by its first bytes.

/// Which WASI generation a binary targets, as told by its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WasiVersion {
    /// A core WebAssembly module (version 1): WASI Preview 1.
    Preview1,
    /// A component (version 13 and up): WASI Preview 2.
    Preview2,
    /// Not WebAssembly, or too short to tell.
    Unknown,
}

const WASM_MAGIC: [u8; 4] = *b"\0asm";

/// Tells a core module from a component by the header and the first section id.
///
/// The rules: the 4-byte magic `\0asm`, then a little-endian version whose low
/// byte is `1` for a core module (followed by a section id from `0x00` to `0x0c`)
/// or `0x0d` and up for a component (the layer field, bytes 6–7, must be
/// zero for a module); anything else, or fewer than 9 bytes, is `Unknown`.
///
/// # Examples
/// ```
/// use wasmpool::{detect_wasm_version_from_binary, WasiVersion};
/// let module = wat::parse_str("(module)").unwrap();
/// // An empty module is only a header: too short to tell.
/// assert_eq!(detect_wasm_version_from_binary(&module), WasiVersion::Unknown);
/// let module = wat::parse_str("(module (func))").unwrap();
/// assert_eq!(detect_wasm_version_from_binary(&module), WasiVersion::Preview1);
/// assert_eq!(detect_wasm_version_from_binary(b"\x7fELF\x02\x01\x01\x00\x00"), WasiVersion::Unknown);
/// ```
pub fn detect_wasm_version_from_binary(bytes: &[u8]) -> WasiVersion {
    if bytes.len() < 9 || bytes[..4] != WASM_MAGIC {
        return WasiVersion::Unknown;
    }
    let version = bytes[4];
    let section = bytes[8];
    match version {
        0x01 if bytes[5..8] == [0, 0, 0] && section <= 0x0c => WasiVersion::Preview1,
        0x0d..=0xff => WasiVersion::Preview2,
        _ => WasiVersion::Unknown,
    }
}

/// The `wasi:http` handler a component exports, read from its export section
/// without compiling it: `wasi:http/incoming-handler@0.2.x` (WASIp2) or
/// `wasi:http/handler@0.3.x` (WASIp3), exported by the component itself (not
/// by one nested inside it). `None` for a command, a core module, or bytes
/// that are not a component.
///
/// This is how a host that is handed images (the containerd shim) tells a
/// service, which it serves, from a command, which it runs.
///
/// # Examples
/// ```
/// let command = wat::parse_str("(component)").unwrap();
/// assert_eq!(wasmpool::http_handler_export(&command), None);
/// let service = wat::parse_str(
///     r#"(component (instance $h) (export "wasi:http/incoming-handler@0.2.6" (instance $h)))"#,
/// )
/// .unwrap();
/// assert_eq!(
///     wasmpool::http_handler_export(&service).as_deref(),
///     Some("wasi:http/incoming-handler@0.2.6")
/// );
/// ```
pub fn http_handler_export(bytes: &[u8]) -> Option<String> {
    use wasmparser::{Parser, Payload};
    if detect_wasm_version_from_binary(bytes) != WasiVersion::Preview2 {
        return None;
    }
    // Nested modules and components come inline, each closed by its own `End`.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.ok()? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) if depth == 0 => return None,
            Payload::End(_) => depth -= 1,
            Payload::ComponentExportSection(exports) if depth == 0 => {
                for export in exports {
                    let name = export.ok()?.name.full_name();
                    if name.starts_with("wasi:http/incoming-handler@")
                        || name.starts_with("wasi:http/handler@")
                    {
                        return Some(name.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    None
}
