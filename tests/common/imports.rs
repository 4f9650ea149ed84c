//! WAT-built command components that use what services import beyond WASI —
//! `wasi:keyvalue@0.2.0-draft`, `wasi:config/store` (both versions),
//! `wasi:logging` — one [`Step`] a line of stdout, so a test reads back
//! what each call answered.

use super::component_with_wit;

/// One call the guest makes, and the line it prints of the answer.
#[derive(Clone, Debug)]
pub enum Step {
    /// `open(name)` → `open ok` or `error: …`; the bucket is used by the steps after it.
    Open(String),
    /// `get(key)` → the value, `none` or `error: …`.
    Get(String),
    /// `set(key, value)` → `ok` or `error: …`.
    Set(String, Vec<u8>),
    /// `set(key, n zero bytes)` from a region of the guest's memory.
    SetZeros(String, u32),
    Delete(String),
    /// `exists(key)` → `true` or `false`.
    Exists(String),
    /// `increment(key, delta)` → the new value or `error: …`.
    Increment(String, u64),
    /// `list-keys(none)` → the keys in one line, comma-separated, then `;more` if a cursor came.
    ListKeys,
    /// wasi:config/store@0.2.0-rc.1 `get(key)` → the value or `none`.
    Config(String),
    /// Spin's wasi:config/store@0.2.0-draft-2024-09-27 `get(key)`.
    SpinConfig(String),
    /// wasi:logging `log(level, context, message)`; prints nothing.
    Log(u8, String, String),
    /// Prints the text.
    Print(String),
    /// Spins forever (a guest to kill).
    Spin,
    /// Spin's `wasi:keyvalue@0.2.0-draft2`: `open(name)` for the `*2` steps after it.
    Open2(String),
    Get2(String),
    Set2(String, Vec<u8>),
    /// `increment(key, delta)` with a signed delta.
    Increment2(String, i64),
    /// `list-keys(none)`, the string cursor printed as `;more`.
    ListKeys2,
    /// `cas.new(key)`, then `set(key, interloper)` if given, then
    /// `swap(cas, value)`: `swapped`, or `cas-failed`, the fresh cas's
    /// `current()`, and a second `swap` with it (`swapped`).
    Cas(String, Option<Vec<u8>>, Vec<u8>),
}

pub use Step::*;

const WIT: &str = r#"
    package local:imports;
    world guest {
        import wasi:keyvalue/store@0.2.0-draft;
        import wasi:keyvalue/atomics@0.2.0-draft;
        import wasi:config/store@0.2.0-rc.1;
        import wasi:config/store@0.2.0-draft-2024-09-27;
        import wasi:logging/logging@0.1.0-draft;
        import wasi:keyvalue/store@0.2.0-draft2;
        import wasi:keyvalue/atomics@0.2.0-draft2;
    }
    package wasi:keyvalue@0.2.0-draft2 {
        interface store {
            variant error { no-such-store, access-denied, other(string) }
            record key-response { keys: list<string>, cursor: option<string> }
            open: func(identifier: string) -> result<bucket, error>;
            resource bucket {
                get: func(key: string) -> result<option<list<u8>>, error>;
                set: func(key: string, value: list<u8>) -> result<_, error>;
                list-keys: func(cursor: option<string>) -> result<key-response, error>;
            }
        }
        interface atomics {
            use store.{bucket, error};
            variant cas-error { store-error(error), cas-failed(cas) }
            resource cas {
                new: static func(bucket: borrow<bucket>, key: string) -> result<cas, error>;
                current: func() -> result<option<list<u8>>, error>;
            }
            increment: func(bucket: borrow<bucket>, key: string, delta: s64) -> result<s64, error>;
            swap: func(cas: cas, value: list<u8>) -> result<_, cas-error>;
        }
    }
    package wasi:keyvalue@0.2.0-draft {
        interface store {
            variant error { no-such-store, access-denied, other(string) }
            record key-response { keys: list<string>, cursor: option<u64> }
            open: func(identifier: string) -> result<bucket, error>;
            resource bucket {
                get: func(key: string) -> result<option<list<u8>>, error>;
                set: func(key: string, value: list<u8>) -> result<_, error>;
                delete: func(key: string) -> result<_, error>;
                exists: func(key: string) -> result<bool, error>;
                list-keys: func(cursor: option<u64>) -> result<key-response, error>;
            }
        }
        interface atomics {
            use store.{bucket, error};
            increment: func(bucket: borrow<bucket>, key: string, delta: u64) -> result<u64, error>;
        }
    }
    package wasi:config@0.2.0-rc.1 {
        interface store {
            variant error { upstream(string), io(string) }
            get: func(key: string) -> result<option<string>, error>;
        }
    }
    package wasi:config@0.2.0-draft-2024-09-27 {
        interface store {
            variant error { upstream(string), io(string) }
            get: func(key: string) -> result<option<string>, error>;
        }
    }
    package wasi:logging@0.1.0-draft {
        interface logging {
            enum level { trace, debug, info, warn, error, critical }
            log: func(level: level, context: string, message: string);
        }
    }
"#;

/// Memory: 0..64 iovec and scratch, 64..96 digits, 128..160 each call's
/// result, 1024.. the steps' strings, 1 MiB.. zeros for `SetZeros`,
/// 4 MiB.. what `cabi_realloc` hands out (the adapter's state too).
const PRELUDE: &str = r#"
    (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
    (import "wasi:keyvalue/store@0.2.0-draft" "open" (func $open (param i32 i32 i32)))
    (import "wasi:keyvalue/store@0.2.0-draft" "[method]bucket.get" (func $get (param i32 i32 i32 i32)))
    (import "wasi:keyvalue/store@0.2.0-draft" "[method]bucket.set" (func $set (param i32 i32 i32 i32 i32 i32)))
    (import "wasi:keyvalue/store@0.2.0-draft" "[method]bucket.delete" (func $delete (param i32 i32 i32 i32)))
    (import "wasi:keyvalue/store@0.2.0-draft" "[method]bucket.exists" (func $exists (param i32 i32 i32 i32)))
    (import "wasi:keyvalue/store@0.2.0-draft" "[method]bucket.list-keys" (func $list (param i32 i32 i64 i32)))
    (import "wasi:keyvalue/store@0.2.0-draft" "[resource-drop]bucket" (func $drop_bucket (param i32)))
    (import "wasi:keyvalue/atomics@0.2.0-draft" "increment" (func $increment (param i32 i32 i32 i64 i32)))
    (import "wasi:config/store@0.2.0-rc.1" "get" (func $config (param i32 i32 i32)))
    (import "wasi:config/store@0.2.0-draft-2024-09-27" "get" (func $spin_config (param i32 i32 i32)))
    (import "wasi:logging/logging@0.1.0-draft" "log" (func $log (param i32 i32 i32 i32 i32)))
    (import "wasi:keyvalue/store@0.2.0-draft2" "open" (func $open2 (param i32 i32 i32)))
    (import "wasi:keyvalue/store@0.2.0-draft2" "[method]bucket.get" (func $get2 (param i32 i32 i32 i32)))
    (import "wasi:keyvalue/store@0.2.0-draft2" "[method]bucket.set" (func $set2 (param i32 i32 i32 i32 i32 i32)))
    (import "wasi:keyvalue/store@0.2.0-draft2" "[method]bucket.list-keys" (func $list2 (param i32 i32 i32 i32 i32)))
    (import "wasi:keyvalue/atomics@0.2.0-draft2" "increment" (func $increment2 (param i32 i32 i32 i64 i32)))
    (import "wasi:keyvalue/atomics@0.2.0-draft2" "[static]cas.new" (func $cas_new (param i32 i32 i32 i32)))
    (import "wasi:keyvalue/atomics@0.2.0-draft2" "[method]cas.current" (func $cas_current (param i32 i32)))
    (import "wasi:keyvalue/atomics@0.2.0-draft2" "swap" (func $swap (param i32 i32 i32 i32)))
    (memory (export "memory") 128)
    (global $heap (mut i32) (i32.const 4194304))
    (global $bucket (mut i32) (i32.const -1))
    (global $bucket2 (mut i32) (i32.const -1))
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
        (local $at i32)
        (local.set $at (i32.and (i32.add (global.get $heap) (i32.const 15)) (i32.const -16)))
        (global.set $heap (i32.add (local.get $at) (local.get 3)))
        (local.get $at))
    (func $print (param $ptr i32) (param $len i32)
        (i32.store (i32.const 0) (local.get $ptr))
        (i32.store (i32.const 4) (local.get $len))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
    (func $nl (call $print (i32.const 1000) (i32.const 1)))
    (func $line (param $ptr i32) (param $len i32) (call $print (local.get $ptr) (local.get $len)) (call $nl))
    (func $number (param $n i64) (local $at i32)
        (local.set $at (i32.const 96))
        (loop $digits
            (local.set $at (i32.sub (local.get $at) (i32.const 1)))
            (i64.store8 (local.get $at) (i64.add (i64.const 48) (i64.rem_u (local.get $n) (i64.const 10))))
            (local.set $n (i64.div_u (local.get $n) (i64.const 10)))
            (br_if $digits (i64.ne (local.get $n) (i64.const 0))))
        (call $line (local.get $at) (i32.sub (i32.const 96) (local.get $at))))
    ;; The error variant at `at`: `error: ` and other's text, or its case number.
    (func $error (param $at i32)
        (call $print (i32.const 1001) (i32.const 7))
        (if (i32.eq (i32.load8_u (local.get $at)) (i32.const 2))
            (then (call $line (i32.load offset=4 (local.get $at)) (i32.load offset=8 (local.get $at))))
            (else (call $number (i64.extend_i32_u (i32.load8_u (local.get $at)))))))
    ;; result<_, error> at 128.
    (func $done
        (if (i32.load8_u (i32.const 128))
            (then (call $error (i32.const 132)))
            (else (call $line (i32.const 1008) (i32.const 2)))))
    ;; result<option<list<u8>>, error> (or option<string>) at 128.
    (func $value
        (if (i32.load8_u (i32.const 128))
            (then (call $error (i32.const 132)))
            (else (if (i32.load8_u (i32.const 132))
                (then (call $line (i32.load (i32.const 136)) (i32.load (i32.const 140))))
                (else (call $line (i32.const 1010) (i32.const 4)))))))
    ;; result<key-response, error> at 128, its payload at `at` (136 for
    ;; draft's 8-aligned record, 132 for draft2's): the keys list at at/at+4,
    ;; the cursor's option tag at at+8, the error at at.
    (func $keys (param $at i32) (local $i i32) (local $key i32)
        (if (i32.load8_u (i32.const 128)) (then (call $error (local.get $at)) (return)))
        (block $end (loop $each
            (br_if $end (i32.ge_u (local.get $i) (i32.load offset=4 (local.get $at))))
            (if (local.get $i) (then (call $print (i32.const 1014) (i32.const 1))))
            (local.set $key (i32.add (i32.load (local.get $at)) (i32.mul (local.get $i) (i32.const 8))))
            (call $print (i32.load (local.get $key)) (i32.load offset=4 (local.get $key)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $each)))
        (if (i32.load8_u offset=8 (local.get $at)) (then (call $print (i32.const 1015) (i32.const 5))))
        (call $nl))
    (data (i32.const 1000) "\0aerror: ok")
    (data (i32.const 1010) "none,;more")
    (data (i32.const 1020) "open oktruefalse")
    (data (i32.const 1040) "swappedcas-failed")
    ;; swap's result<_, cas-error> at 128: `swapped`; or `cas-failed`, the
    ;; fresh cas's value, and a second swap of the `len` bytes at `ptr`.
    (func $swapped (param $ptr i32) (param $len i32) (local $fresh i32)
        (if (i32.eqz (i32.load8_u (i32.const 128)))
            (then (call $line (i32.const 1040) (i32.const 7)) (return)))
        (if (i32.eqz (i32.load8_u (i32.const 132)))
            (then (call $error (i32.const 136)) (return)))
        (local.set $fresh (i32.load (i32.const 136)))
        (call $line (i32.const 1047) (i32.const 10))
        (call $cas_current (local.get $fresh) (i32.const 128))
        (call $value)
        (call $swap (local.get $fresh) (local.get $ptr) (local.get $len) (i32.const 128))
        (if (i32.eqz (i32.load8_u (i32.const 128)))
            (then (call $line (i32.const 1040) (i32.const 7)))
            (else (call $line (i32.const 1047) (i32.const 10)))))
"#;

/// A command component that makes `steps` in order, printing a line of each.
pub fn imports_program(steps: &[Step]) -> Vec<u8> {
    let mut data = String::new();
    let mut next = 2048u32;
    let mut text = |bytes: &[u8]| -> (u32, u32) {
        let at = next;
        let escaped: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
        data.push_str(&format!("(data (i32.const {at}) \"{escaped}\")\n"));
        next += bytes.len() as u32 + 1;
        (at, bytes.len() as u32)
    };
    let mut body = String::new();
    for step in steps {
        let code = match step {
            Open(name) => {
                let (p, l) = text(name.as_bytes());
                format!(
                    "(call $open (i32.const {p}) (i32.const {l}) (i32.const 128))
                     (if (i32.load8_u (i32.const 128))
                        (then (call $error (i32.const 132)))
                        (else (global.set $bucket (i32.load (i32.const 132)))
                              (call $line (i32.const 1020) (i32.const 7))))"
                )
            }
            Get(key) => {
                let (p, l) = text(key.as_bytes());
                format!("(call $get (global.get $bucket) (i32.const {p}) (i32.const {l}) (i32.const 128)) (call $value)")
            }
            Set(key, value) => {
                let (p, l) = text(key.as_bytes());
                let (vp, vl) = text(value);
                format!("(call $set (global.get $bucket) (i32.const {p}) (i32.const {l}) (i32.const {vp}) (i32.const {vl}) (i32.const 128)) (call $done)")
            }
            SetZeros(key, n) => {
                let (p, l) = text(key.as_bytes());
                format!("(call $set (global.get $bucket) (i32.const {p}) (i32.const {l}) (i32.const 1048576) (i32.const {n}) (i32.const 128)) (call $done)")
            }
            Delete(key) => {
                let (p, l) = text(key.as_bytes());
                format!("(call $delete (global.get $bucket) (i32.const {p}) (i32.const {l}) (i32.const 128)) (call $done)")
            }
            Exists(key) => {
                let (p, l) = text(key.as_bytes());
                format!(
                    "(call $exists (global.get $bucket) (i32.const {p}) (i32.const {l}) (i32.const 128))
                     (if (i32.load8_u (i32.const 128))
                        (then (call $error (i32.const 132)))
                        (else (if (i32.load8_u (i32.const 132))
                            (then (call $line (i32.const 1027) (i32.const 4)))
                            (else (call $line (i32.const 1031) (i32.const 5))))))"
                )
            }
            Increment(key, delta) => {
                let (p, l) = text(key.as_bytes());
                format!(
                    "(call $increment (global.get $bucket) (i32.const {p}) (i32.const {l}) (i64.const {delta}) (i32.const 128))
                     (if (i32.load8_u (i32.const 128))
                        (then (call $error (i32.const 136)))
                        (else (call $number (i64.load (i32.const 136)))))"
                )
            }
            ListKeys => "(call $list (global.get $bucket) (i32.const 0) (i64.const 0) (i32.const 128)) (call $keys (i32.const 136))".into(),
            Config(key) => {
                let (p, l) = text(key.as_bytes());
                format!("(call $config (i32.const {p}) (i32.const {l}) (i32.const 128)) (call $value)")
            }
            SpinConfig(key) => {
                let (p, l) = text(key.as_bytes());
                format!("(call $spin_config (i32.const {p}) (i32.const {l}) (i32.const 128)) (call $value)")
            }
            Log(level, context, message) => {
                let (cp, cl) = text(context.as_bytes());
                let (mp, ml) = text(message.as_bytes());
                format!("(call $log (i32.const {level}) (i32.const {cp}) (i32.const {cl}) (i32.const {mp}) (i32.const {ml}))")
            }
            Print(line) => {
                let (p, l) = text(line.as_bytes());
                format!("(call $line (i32.const {p}) (i32.const {l}))")
            }
            Spin => "(loop $forever (br $forever))".into(),
            Open2(name) => {
                let (p, l) = text(name.as_bytes());
                format!(
                    "(call $open2 (i32.const {p}) (i32.const {l}) (i32.const 128))
                     (if (i32.load8_u (i32.const 128))
                        (then (call $error (i32.const 132)))
                        (else (global.set $bucket2 (i32.load (i32.const 132)))
                              (call $line (i32.const 1020) (i32.const 7))))"
                )
            }
            Get2(key) => {
                let (p, l) = text(key.as_bytes());
                format!("(call $get2 (global.get $bucket2) (i32.const {p}) (i32.const {l}) (i32.const 128)) (call $value)")
            }
            Set2(key, value) => {
                let (p, l) = text(key.as_bytes());
                let (vp, vl) = text(value);
                format!("(call $set2 (global.get $bucket2) (i32.const {p}) (i32.const {l}) (i32.const {vp}) (i32.const {vl}) (i32.const 128)) (call $done)")
            }
            Increment2(key, delta) => {
                let (p, l) = text(key.as_bytes());
                format!(
                    "(call $increment2 (global.get $bucket2) (i32.const {p}) (i32.const {l}) (i64.const {delta}) (i32.const 128))
                     (if (i32.load8_u (i32.const 128))
                        (then (call $error (i32.const 136)))
                        (else (call $number (i64.load (i32.const 136)))))"
                )
            }
            ListKeys2 => "(call $list2 (global.get $bucket2) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 128)) (call $keys (i32.const 132))".into(),
            Cas(key, interloper, value) => {
                let (p, l) = text(key.as_bytes());
                let (vp, vl) = text(value);
                let interloper = match interloper {
                    Some(other) => {
                        let (ip, il) = text(other);
                        format!("(call $set2 (global.get $bucket2) (i32.const {p}) (i32.const {l}) (i32.const {ip}) (i32.const {il}) (i32.const 128)) (call $done)")
                    }
                    None => String::new(),
                };
                format!(
                    "(call $cas_new (global.get $bucket2) (i32.const {p}) (i32.const {l}) (i32.const 128))
                     (if (i32.load8_u (i32.const 128))
                        (then (call $error (i32.const 132)))
                        (else
                            (local.set $cas (i32.load (i32.const 132)))
                            {interloper}
                            (call $swap (local.get $cas) (i32.const {vp}) (i32.const {vl}) (i32.const 128))
                            (call $swapped (i32.const {vp}) (i32.const {vl}))))"
                )
            }
        };
        body.push_str(&code);
        body.push('\n');
    }
    let core = format!(
        "(module {PRELUDE}\n{data}\n(func (export \"_start\") (local $cas i32)\n{body}\n(if (i32.ge_s (global.get $bucket) (i32.const 0)) (then (call $drop_bucket (global.get $bucket))))))"
    );
    component_with_wit(WIT, "guest", &core)
}
