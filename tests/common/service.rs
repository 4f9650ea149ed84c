//! WAT-built `wasi:http/incoming-handler@0.2.0` components, and a plain
//! HTTP/1.1 client over a TcpStream for driving a real server on loopback.
//! Self-contained: `examples/serve_bench.rs` includes it too.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The slice of wasi:io, wasi:cli and wasi:http 0.2.0 a handler uses, as nested
/// packages. `error-code` and its payloads are copied exactly: their layout matters.
/// wasi:http 0.2.0's `error-code` and its payloads, exactly: their layout matters.
pub const ERROR_CODE: &str = r#"
            record DNS-error-payload { rcode: option<string>, info-code: option<u16> }
            record TLS-alert-received-payload { alert-id: option<u8>, alert-message: option<string> }
            record field-size-payload { field-name: option<string>, field-size: option<u32> }
            variant error-code {
                DNS-timeout,
                DNS-error(DNS-error-payload),
                destination-not-found,
                destination-unavailable,
                destination-IP-prohibited,
                destination-IP-unroutable,
                connection-refused,
                connection-terminated,
                connection-timeout,
                connection-read-timeout,
                connection-write-timeout,
                connection-limit-reached,
                TLS-protocol-error,
                TLS-certificate-error,
                TLS-alert-received(TLS-alert-received-payload),
                HTTP-request-denied,
                HTTP-request-length-required,
                HTTP-request-body-size(option<u64>),
                HTTP-request-method-invalid,
                HTTP-request-URI-invalid,
                HTTP-request-URI-too-long,
                HTTP-request-header-section-size(option<u32>),
                HTTP-request-header-size(option<field-size-payload>),
                HTTP-request-trailer-section-size(option<u32>),
                HTTP-request-trailer-size(field-size-payload),
                HTTP-response-incomplete,
                HTTP-response-header-section-size(option<u32>),
                HTTP-response-header-size(field-size-payload),
                HTTP-response-body-size(option<u64>),
                HTTP-response-trailer-section-size(option<u32>),
                HTTP-response-trailer-size(field-size-payload),
                HTTP-response-transfer-coding(option<string>),
                HTTP-response-content-coding(option<string>),
                HTTP-response-timeout,
                HTTP-upgrade-failed,
                HTTP-protocol-error,
                loop-detected,
                configuration-error,
                internal-error(option<string>),
            }
"#;

pub fn service_wit() -> String {
    [SERVICE_WIT_HEAD, ERROR_CODE, SERVICE_WIT_TAIL].concat()
}

const SERVICE_WIT_HEAD: &str = r#"
    package local:service;
    world service {
        import wasi:http/types@0.2.0;
        import wasi:io/streams@0.2.0;
        import wasi:cli/stdout@0.2.0;
        export wasi:http/incoming-handler@0.2.0;
    }
    package wasi:io@0.2.0 {
        interface error { resource error; }
        interface streams {
            use error.{error};
            variant stream-error { last-operation-failed(error), closed }
            resource input-stream {
                blocking-read: func(len: u64) -> result<list<u8>, stream-error>;
            }
            resource output-stream {
                blocking-write-and-flush: func(contents: list<u8>) -> result<_, stream-error>;
            }
        }
    }
    package wasi:cli@0.2.0 {
        interface stdout {
            use wasi:io/streams@0.2.0.{output-stream};
            get-stdout: func() -> output-stream;
        }
    }
    package wasi:http@0.2.0 {
        interface types {
            use wasi:io/streams@0.2.0.{input-stream, output-stream};
"#;

const SERVICE_WIT_TAIL: &str = r#"            resource fields { constructor(); }
            type headers = fields;
            type trailers = fields;
            resource incoming-request {
                path-with-query: func() -> option<string>;
                consume: func() -> result<incoming-body>;
            }
            resource incoming-body { %stream: func() -> result<input-stream>; }
            resource outgoing-response {
                constructor(headers: headers);
                set-status-code: func(status-code: u16) -> result;
                body: func() -> result<outgoing-body>;
            }
            resource outgoing-body {
                write: func() -> result<output-stream>;
                finish: static func(this: outgoing-body, trailers: option<trailers>) -> result<_, error-code>;
            }
            resource response-outparam {
                set: static func(param: response-outparam, response: result<outgoing-response, error-code>);
            }
        }
        interface incoming-handler {
            use types.{incoming-request, response-outparam};
            handle: func(request: incoming-request, response-out: response-outparam);
        }
    }
"#;

/// Imports and helpers every handler shares. Memory: 0..1024 scratch for
/// results, 1024.. data, 65536.. the one buffer `cabi_realloc` hands out
/// (each list or string the host returns is consumed before the next).
pub const PRELUDE: &str = r#"
    (import "wasi:http/types@0.2.0" "[constructor]fields" (func $fields (result i32)))
    (import "wasi:http/types@0.2.0" "[constructor]outgoing-response" (func $new_response (param i32) (result i32)))
    (import "wasi:http/types@0.2.0" "[method]outgoing-response.set-status-code" (func $set_status (param i32 i32) (result i32)))
    (import "wasi:http/types@0.2.0" "[method]outgoing-response.body" (func $response_body (param i32 i32)))
    (import "wasi:http/types@0.2.0" "[method]outgoing-body.write" (func $body_write (param i32 i32)))
    (import "wasi:http/types@0.2.0" "[static]outgoing-body.finish" (func $finish (param i32 i32 i32 i32)))
    (import "wasi:http/types@0.2.0" "[static]response-outparam.set" (func $outparam_set (param i32 i32 i32 i32 i64 i32 i32 i32 i32)))
    (import "wasi:http/types@0.2.0" "[method]incoming-request.path-with-query" (func $path (param i32 i32)))
    (import "wasi:http/types@0.2.0" "[method]incoming-request.consume" (func $consume (param i32 i32)))
    (import "wasi:http/types@0.2.0" "[method]incoming-body.stream" (func $stream (param i32 i32)))
    (import "wasi:io/streams@0.2.0" "[method]input-stream.blocking-read" (func $read (param i32 i64 i32)))
    (import "wasi:io/streams@0.2.0" "[method]output-stream.blocking-write-and-flush" (func $write_flush (param i32 i32 i32 i32)))
    (import "wasi:io/streams@0.2.0" "[resource-drop]output-stream" (func $drop_output (param i32)))
    (import "wasi:cli/stdout@0.2.0" "get-stdout" (func $stdout (result i32)))
    (memory (export "memory") 3)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 65536))
    (global $count (mut i32) (i32.const 0))
    ;; Sets a response with `status` on `out`; returns its body's output stream
    ;; (the body handle is left at 12 for $end).
    (func $begin (param $out i32) (param $status i32) (result i32)
        (local $resp i32)
        (local.set $resp (call $new_response (call $fields)))
        (drop (call $set_status (local.get $resp) (local.get $status)))
        (call $response_body (local.get $resp) (i32.const 8))
        (call $outparam_set (local.get $out) (i32.const 0) (local.get $resp)
            (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
        (call $body_write (i32.load (i32.const 12)) (i32.const 16))
        (i32.load (i32.const 20)))
    ;; Writes `len` bytes at `ptr` (at most 4096) to `stream`.
    (func $send (param $stream i32) (param $ptr i32) (param $len i32)
        (call $write_flush (local.get $stream) (local.get $ptr) (local.get $len) (i32.const 32)))
    ;; Drops the stream and finishes the body begun by $begin.
    (func $end (param $stream i32)
        (call $drop_output (local.get $stream))
        (call $finish (i32.load (i32.const 12)) (i32.const 0) (i32.const 0) (i32.const 48)))
    ;; Answers `status` with the `len` bytes at `ptr`.
    (func $respond (param $out i32) (param $status i32) (param $ptr i32) (param $len i32)
        (local $stream i32)
        (local.set $stream (call $begin (local.get $out) (local.get $status)))
        (call $send (local.get $stream) (local.get $ptr) (local.get $len))
        (call $end (local.get $stream)))
    ;; Writes `len` bytes at `ptr` to the handler's stdout.
    (func $print (param $ptr i32) (param $len i32)
        (local $out i32)
        (local.set $out (call $stdout))
        (call $write_flush (local.get $out) (local.get $ptr) (local.get $len) (i32.const 64))
        (call $drop_output (local.get $out)))
    (data (i32.const 1024) "hello\0a")
"#;

/// A handler whose `handle` body is `body` (params `$req` and `$out`, locals as declared in `locals`).
pub fn handler(locals: &str, body: &str) -> Vec<u8> {
    let core = format!(
        r#"(module {PRELUDE}
            (func (export "wasi:http/incoming-handler@0.2.0#handle") (param $req i32) (param $out i32) {locals}
                {body}))"#
    );
    component_of(&service_wit(), "service", &core)
}

/// A component of the core module `core` (WAT) with the world `world` of
/// `wit`, without the preview1 adapter (the module imports none of WASIp1).
pub fn component_of(wit: &str, world: &str, core: &str) -> Vec<u8> {
    let module = with_wit(wit, world, core);
    wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("core module accepted")
        .validate(true)
        .encode()
        .expect("component encodes")
}

/// Answers `200 hello`.
pub fn hello_handler() -> Vec<u8> {
    handler(
        "",
        "(call $respond (local.get $out) (i32.const 200) (i32.const 1024) (i32.const 6))",
    )
}

/// Streams the request body back, chunk by chunk, as it reads it.
pub fn echo_handler() -> Vec<u8> {
    handler(
        "(local $input i32) (local $output i32)",
        r#"(call $consume (local.get $req) (i32.const 128))
           (call $stream (i32.load (i32.const 132)) (i32.const 128))
           (local.set $input (i32.load (i32.const 132)))
           (local.set $output (call $begin (local.get $out) (i32.const 200)))
           (block $closed (loop $more
               ;; result<list<u8>, stream-error> at 128: tag, then pointer and length
               (call $read (local.get $input) (i64.const 4096) (i32.const 128))
               (br_if $closed (i32.load8_u (i32.const 128)))
               (call $send (local.get $output) (i32.load (i32.const 132)) (i32.load (i32.const 136)))
               (br $more)))
           (call $end (local.get $output))"#,
    )
}

/// Counts its requests in a global and answers the count as one digit.
pub fn counter_handler() -> Vec<u8> {
    handler(
        "",
        r#"(global.set $count (i32.add (global.get $count) (i32.const 1)))
           (i32.store8 (i32.const 1100) (i32.add (i32.const 48) (global.get $count)))
           (call $respond (local.get $out) (i32.const 200) (i32.const 1100) (i32.const 1))"#,
    )
}

/// Prints its path to stdout (one line), then answers `200 hello`.
pub fn logging_handler() -> Vec<u8> {
    handler(
        "",
        r#"(call $path (local.get $req) (i32.const 128))
           (call $print (i32.load (i32.const 132)) (i32.load (i32.const 136)))
           (i32.store8 (i32.const 1200) (i32.const 10))
           (call $print (i32.const 1200) (i32.const 1))
           (call $respond (local.get $out) (i32.const 200) (i32.const 1024) (i32.const 6))"#,
    )
}

/// Traps on `/trap`, spins forever on `/spin`, returns without answering on
/// `/silent`, and answers `200 hello` on anything else.
pub fn misbehaving_handler() -> Vec<u8> {
    handler(
        "",
        r#"(call $path (local.get $req) (i32.const 128))
           ;; the second byte of the path: t(rap), s(pin) or (s)i(lent)
           (if (i32.eq (i32.load8_u (i32.add (i32.load (i32.const 132)) (i32.const 1))) (i32.const 116))
               (then unreachable))
           (if (i32.eq (i32.load8_u (i32.add (i32.load (i32.const 132)) (i32.const 2))) (i32.const 112))
               (then (loop $forever (br $forever))))
           (if (i32.eq (i32.load8_u (i32.add (i32.load (i32.const 132)) (i32.const 2))) (i32.const 105))
               (then (return)))
           (call $respond (local.get $out) (i32.const 200) (i32.const 1024) (i32.const 6))"#,
    )
}

/// Prints "ready", works for a while (`iterations` loop turns), then answers `200 hello`.
pub fn slow_handler(iterations: u32) -> Vec<u8> {
    handler(
        "(local $i i32)",
        &format!(
            r#"(i32.store (i32.const 1300) (i32.const 0x64616572))
               (i32.store16 (i32.const 1304) (i32.const 0x0a79))
               (call $print (i32.const 1300) (i32.const 6))
               (local.set $i (i32.const {iterations}))
               (loop $work
                   (local.set $i (i32.sub (local.get $i) (i32.const 1)))
                   (br_if $work (local.get $i)))
               (call $respond (local.get $out) (i32.const 200) (i32.const 1024) (i32.const 6))"#
        ),
    )
}

/// The core module `core` (WAT) with `world` of `wit` embedded, ready to encode.
pub fn with_wit(wit: &str, world: &str, core: &str) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_str("guest.wit", wit).expect("WIT parses");
    let world = resolve
        .select_world(&[package], Some(world))
        .expect("world");
    let mut module = wat::parse_str(core).expect("the guest's WAT parses");
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("metadata embeds");
    module
}

/// Answers `200` with `chunks` × 4 KiB of body, written as fast as the client takes it.
pub fn big_handler(chunks: u32) -> Vec<u8> {
    handler(
        "(local $stream i32) (local $i i32)",
        &format!(
            r#"(local.set $stream (call $begin (local.get $out) (i32.const 200)))
               (local.set $i (i32.const {chunks}))
               (loop $more
                   (call $send (local.get $stream) (i32.const 4096) (i32.const 4096))
                   (local.set $i (i32.sub (local.get $i) (i32.const 1)))
                   (br_if $more (local.get $i)))
               (call $end (local.get $stream))"#
        ),
    )
}

/// Answers `200`, writes `hello\n` of its body, then spins without finishing it.
pub fn cut_off_handler() -> Vec<u8> {
    handler(
        "(local $stream i32)",
        r#"(local.set $stream (call $begin (local.get $out) (i32.const 200)))
           (call $send (local.get $stream) (i32.const 1024) (i32.const 6))
           (loop $forever (br $forever))"#,
    )
}

/// Grows its memory by `pages` (traps if refused), then waits for 16 bytes of
/// the request body before it answers `200 hello`: a request that holds its
/// memory for as long as its client keeps it waiting.
pub fn grow_and_wait_handler(pages: u32) -> Vec<u8> {
    handler(
        "",
        &format!(
            r#"(if (i32.eq (memory.grow (i32.const {pages})) (i32.const -1)) (then unreachable))
               (call $consume (local.get $req) (i32.const 128))
               (call $stream (i32.load (i32.const 132)) (i32.const 128))
               (call $read (i32.load (i32.const 132)) (i64.const 16) (i32.const 128))
               (call $respond (local.get $out) (i32.const 200) (i32.const 1024) (i32.const 6))"#
        ),
    )
}

/// A response as a client sees it.
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
    /// Whether the body ended as its framing says a whole one ends: the last
    /// chunk of a chunked body, all of a `Content-Length`. A cut-off one is not.
    pub complete: bool,
}

impl std::fmt::Debug for Reply {
    /// The head, and the body's length and first bytes (a body may be megabytes).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let start = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]);
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("head", &self.head)
            .field("body_len", &self.body.len())
            .field("body_start", &start)
            .field("complete", &self.complete)
            .finish()
    }
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the
/// whole response; `extra` is more header lines, each ending in `\r\n`.
pub fn send(address: SocketAddr, method: &str, path: &str, extra: &str, body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(address).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    read_reply(&mut stream)
}

/// `GET path`.
pub fn get(address: SocketAddr, path: &str) -> Reply {
    send(address, "GET", path, "", b"")
}

/// Reads one response to its end (the server closes the connection after it,
/// or resets it: what came before counts).
pub fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    parse_reply(&raw)
}

/// Parses a response with `httparse`: its head, then its body by its framing.
pub fn parse_reply(raw: &[u8]) -> Reply {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let split = match response.parse(raw) {
        Ok(httparse::Status::Complete(split)) => split,
        other => panic!(
            "no whole response head ({other:?}) in {:?}",
            String::from_utf8_lossy(raw)
        ),
    };
    let status = response.code.expect("a status code");
    let value = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
    };
    let rest = &raw[split..];
    let (body, complete) = if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(rest)
    } else if let Some(length) = value("content-length").and_then(|v| v.trim().parse().ok()) {
        let length: usize = length;
        (
            rest[..rest.len().min(length)].to_vec(),
            rest.len() >= length,
        )
    } else {
        (rest.to_vec(), true)
    };
    let head = String::from_utf8_lossy(&raw[..split.saturating_sub(4)]).into_owned();
    Reply {
        status,
        head,
        body,
        complete,
    }
}

/// A chunked body's data, and whether its last chunk came.
fn dechunk(mut data: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let (start, size) = match httparse::parse_chunk_size(data) {
            Ok(httparse::Status::Complete(found)) => found,
            _ => return (out, false),
        };
        let size = size as usize;
        if size == 0 {
            // The last chunk; trailers (none here) and the final CRLF follow.
            return (out, data[start..].ends_with(b"\r\n"));
        }
        let Some(chunk) = data.get(start..start + size) else {
            out.extend_from_slice(&data[start..]);
            return (out, false);
        };
        out.extend_from_slice(chunk);
        match data.get(start + size..start + size + 2) {
            Some(b"\r\n") => data = &data[start + size + 2..],
            _ => return (out, false),
        }
    }
}

const KEYVALUE_PACKAGE: &str = r#"
    package wasi:keyvalue@0.2.0-draft {
        interface store {
            variant error { no-such-store, access-denied, other(string) }
            open: func(identifier: string) -> result<bucket, error>;
            resource bucket {
                get: func(key: string) -> result<option<list<u8>>, error>;
            }
        }
        interface atomics {
            use store.{bucket, error};
            increment: func(bucket: borrow<bucket>, key: string, delta: u64) -> result<u64, error>;
        }
    }
"#;

/// A `wasi:http` handler that opens the bucket `counter`, does one `get` of
/// `hits` (with `read`) and one `increment` of it per request, and answers
/// `200 hello` — `500` if any call fails.
pub fn keyvalue_counter(read: bool) -> Vec<u8> {
    let wit = service_wit().replace(
        "export wasi:http/incoming-handler@0.2.0;",
        "export wasi:http/incoming-handler@0.2.0;
         import wasi:keyvalue/store@0.2.0-draft;
         import wasi:keyvalue/atomics@0.2.0-draft;",
    ) + KEYVALUE_PACKAGE;
    let get = if read {
        r#"(call $kv_get (local.get $b) (i32.const 1108) (i32.const 4) (i32.const 512))
           (local.set $failed (i32.load8_u (i32.const 512)))"#
    } else {
        ""
    };
    let core = format!(
        r#"(module
            (import "wasi:keyvalue/store@0.2.0-draft" "open" (func $kv_open (param i32 i32 i32)))
            (import "wasi:keyvalue/store@0.2.0-draft" "[method]bucket.get" (func $kv_get (param i32 i32 i32 i32)))
            (import "wasi:keyvalue/store@0.2.0-draft" "[resource-drop]bucket" (func $kv_drop (param i32)))
            (import "wasi:keyvalue/atomics@0.2.0-draft" "increment" (func $kv_inc (param i32 i32 i32 i64 i32)))
            {PRELUDE}
            (data (i32.const 1100) "counter")
            (data (i32.const 1108) "hits")
            (func (export "wasi:http/incoming-handler@0.2.0#handle") (param $req i32) (param $out i32)
                (local $b i32) (local $failed i32)
                (call $kv_open (i32.const 1100) (i32.const 7) (i32.const 512))
                (if (i32.load8_u (i32.const 512))
                    (then (call $respond (local.get $out) (i32.const 500) (i32.const 1024) (i32.const 6)) (return)))
                (local.set $b (i32.load (i32.const 516)))
                {get}
                (call $kv_inc (local.get $b) (i32.const 1108) (i32.const 4) (i64.const 1) (i32.const 512))
                (local.set $failed (i32.or (local.get $failed) (i32.load8_u (i32.const 512))))
                (call $kv_drop (local.get $b))
                (call $respond (local.get $out)
                    (select (i32.const 500) (i32.const 200) (local.get $failed))
                    (i32.const 1024) (i32.const 6))))"#
    );
    component_of(&wit, "service", &core)
}

/// Starts a server (`program args`, its compiled cache in `cache`) on the
/// port it picks, and reads the address it prints (`… http://ADDRESS/`);
/// its stderr is drained from then on, so it never blocks on a full pipe.
pub fn start_server(
    program: &str,
    args: &[&str],
    cache: &std::path::Path,
) -> Result<(std::process::Child, SocketAddr), Box<dyn std::error::Error>> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .env("WASMPOOL_CACHE_DIR", cache)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = std::io::BufReader::new(child.stderr.take().ok_or("no stderr")?);
    let mut line = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line)? == 0 {
            return Err(format!("{program} exited before listening").into());
        }
        if let Some(at) = line.find("http://") {
            let address = line[at + 7..].trim().trim_end_matches('/').parse()?;
            std::thread::spawn(move || for _ in stderr.lines() {});
            return Ok((child, address));
        }
    }
}
