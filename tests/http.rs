//! Components that import wasi:http: they link and run; outgoing requests reach
//! a real loopback server only when the spec grants `network`, and otherwise
//! fail inside the guest with wasi:http's own error code.

use crate::common::*;
use std::io::{Read, Write};
use wasmpool::{Outcome, Runtime, ServiceSpec};

/// Enough of wasi:io and wasi:http 0.2.0 for a GET, as nested packages
/// (`error-code` is shared with the service tests: its layout matters).
fn http_wit() -> String {
    [
        HTTP_WIT_HEAD,
        crate::common::service::ERROR_CODE,
        HTTP_WIT_TAIL,
    ]
    .concat()
}

const HTTP_WIT_HEAD: &str = r#"
    package local:fetch;
    world fetch {
        import wasi:http/outgoing-handler@0.2.0;
        import wasi:http/types@0.2.0;
        import wasi:io/poll@0.2.0;
        import wasi:io/streams@0.2.0;
    }
    package wasi:io@0.2.0 {
        interface poll { resource pollable { block: func(); } }
        interface error { resource error; }
        interface streams {
            use error.{error};
            variant stream-error { last-operation-failed(error), closed }
            resource input-stream {
                blocking-read: func(len: u64) -> result<list<u8>, stream-error>;
            }
        }
    }
    package wasi:http@0.2.0 {
        interface types {
            use wasi:io/poll@0.2.0.{pollable};
            use wasi:io/streams@0.2.0.{input-stream};
            variant scheme { HTTP, HTTPS, other(string) }
"#;

const HTTP_WIT_TAIL: &str = r#"            resource fields { constructor(); }
            type headers = fields;
            resource outgoing-request {
                constructor(headers: headers);
                set-scheme: func(scheme: option<scheme>) -> result;
                set-authority: func(authority: option<string>) -> result;
                set-path-with-query: func(path-with-query: option<string>) -> result;
            }
            resource request-options;
            resource incoming-body { %stream: func() -> result<input-stream>; }
            resource incoming-response {
                status: func() -> u16;
                consume: func() -> result<incoming-body>;
            }
            resource future-incoming-response {
                subscribe: func() -> pollable;
                get: func() -> option<result<result<incoming-response, error-code>>>;
            }
        }
        interface outgoing-handler {
            use types.{outgoing-request, request-options, future-incoming-response, error-code};
            handle: func(request: outgoing-request, options: option<request-options>) -> result<future-incoming-response, error-code>;
        }
    }
"#;

/// The imports and helpers both guests share (and `CABI_REALLOC`).
const PRELUDE: &str = r#"
    (import "wasi:http/types@0.2.0" "[constructor]fields" (func $fields (result i32)))
    (import "wasi:http/types@0.2.0" "[constructor]outgoing-request" (func $request (param i32) (result i32)))
    (import "wasi:http/types@0.2.0" "[method]outgoing-request.set-scheme" (func $scheme (param i32 i32 i32 i32 i32) (result i32)))
    (import "wasi:http/types@0.2.0" "[method]outgoing-request.set-authority" (func $authority (param i32 i32 i32 i32) (result i32)))
    (import "wasi:http/types@0.2.0" "[method]outgoing-request.set-path-with-query" (func $path (param i32 i32 i32 i32) (result i32)))
    (import "wasi:http/outgoing-handler@0.2.0" "handle" (func $handle (param i32 i32 i32 i32)))
    (import "wasi:http/types@0.2.0" "[method]future-incoming-response.subscribe" (func $subscribe (param i32) (result i32)))
    (import "wasi:http/types@0.2.0" "[method]future-incoming-response.get" (func $get (param i32 i32)))
    (import "wasi:http/types@0.2.0" "[method]incoming-response.status" (func $status (param i32) (result i32)))
    (import "wasi:http/types@0.2.0" "[method]incoming-response.consume" (func $consume (param i32 i32)))
    (import "wasi:http/types@0.2.0" "[method]incoming-body.stream" (func $stream (param i32 i32)))
    (import "wasi:io/poll@0.2.0" "[method]pollable.block" (func $block (param i32)))
    (import "wasi:io/streams@0.2.0" "[method]input-stream.blocking-read" (func $read (param i32 i64 i32)))
    (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
    (memory (export "memory") 4)
    (data (i32.const 600) "ran\0a")
    (data (i32.const 900) "error-code ")
    ;; Prints "error-code NN" and exits 1 (the adapter turns any other status into 1).
    (func $fail_with (param $code i32)
        (i32.store8 (i32.const 911) (i32.add (i32.const 48) (i32.div_u (local.get $code) (i32.const 10))))
        (i32.store8 (i32.const 912) (i32.add (i32.const 48) (i32.rem_u (local.get $code) (i32.const 10))))
        (i32.store8 (i32.const 913) (i32.const 10))
        (call $print (i32.const 900) (i32.const 14))
        (call $exit (i32.const 1)))
    (func $print (param $ptr i32) (param $len i32)
        (i32.store (i32.const 0) (local.get $ptr))
        (i32.store (i32.const 4) (local.get $len))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16))))
"#;

/// A component that imports wasi:http and never calls it: prints "ran", exits 0.
fn http_importer() -> Vec<u8> {
    let core = format!(
        r#"(module {PRELUDE} {CABI_REALLOC}
            (func (export "_start")
                (call $print (i32.const 600) (i32.const 4))
                (call $exit (i32.const 0))))"#
    );
    component_with_wit(&http_wit(), "fetch", &core)
}

/// A component that GETs `http://{authority}/hello`, prints the body and
/// exits 0 on status 200; on a wasi:http error it prints "error-code NN" (the
/// error's case) and exits 1; other failures exit 1 too, printing nothing.
fn http_getter(authority: &str) -> Vec<u8> {
    let len = authority.len();
    let core = format!(
        r#"(module {PRELUDE} {CABI_REALLOC}
            (data (i32.const 700) "{authority}")
            (data (i32.const 800) "/hello")
            (func (export "_start") (local $req i32) (local $future i32) (local $response i32)
                (local $body i32) (local $input i32)
                (local.set $req (call $request (call $fields)))
                ;; some(HTTP), some("{authority}"), some("/hello")
                (drop (call $scheme (local.get $req) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0)))
                (drop (call $authority (local.get $req) (i32.const 1) (i32.const 700) (i32.const {len})))
                (drop (call $path (local.get $req) (i32.const 1) (i32.const 800) (i32.const 6)))
                ;; result<future-incoming-response, error-code> at 1024: tag, payload at +8
                (call $handle (local.get $req) (i32.const 0) (i32.const 0) (i32.const 1024))
                (if (i32.load8_u (i32.const 1024))
                    (then (call $fail_with (i32.load8_u (i32.const 1032)))))
                (local.set $future (i32.load (i32.const 1032)))
                (call $block (call $subscribe (local.get $future)))
                ;; option<result<result<incoming-response, error-code>>> at 2048:
                ;; option tag, outer result at +8, inner result at +16, payload at +24
                (call $get (local.get $future) (i32.const 2048))
                (if (i32.eqz (i32.load8_u (i32.const 2048))) (then (call $exit (i32.const 90))))
                (if (i32.load8_u (i32.const 2056)) (then (call $exit (i32.const 91))))
                (if (i32.load8_u (i32.const 2064))
                    (then (call $fail_with (i32.load8_u (i32.const 2072)))))
                (local.set $response (i32.load (i32.const 2072)))
                (if (i32.ne (call $status (local.get $response)) (i32.const 200))
                    (then (call $exit (i32.const 92))))
                (call $consume (local.get $response) (i32.const 3072))
                (if (i32.load8_u (i32.const 3072)) (then (call $exit (i32.const 93))))
                (local.set $body (i32.load (i32.const 3076)))
                (call $stream (local.get $body) (i32.const 3072))
                (if (i32.load8_u (i32.const 3072)) (then (call $exit (i32.const 94))))
                (local.set $input (i32.load (i32.const 3076)))
                ;; result<list<u8>, stream-error> at 3072: tag, then pointer and length
                (block $closed (loop $more
                    (call $read (local.get $input) (i64.const 4096) (i32.const 3072))
                    (br_if $closed (i32.load8_u (i32.const 3072)))
                    (call $print (i32.load (i32.const 3076)) (i32.load (i32.const 3080)))
                    (br $more)))
                (call $exit (i32.const 0))))"#
    );
    component_with_wit(&http_wit(), "fetch", &core)
}

/// A real HTTP/1.1 server on loopback that answers one request with `body`.
fn serve_once(body: &'static str) -> (String, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(NO_HANG)).unwrap();
        let mut request = Vec::new();
        let mut chunk = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&chunk[..n]);
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(response.as_bytes()).unwrap();
        String::from_utf8_lossy(&request).into_owned()
    });
    (authority, server)
}

#[test]
fn a_component_that_imports_wasi_http_and_never_calls_it_runs() {
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(
        &rt,
        "imports-http",
        &ServiceSpec::default(),
        &http_importer(),
    );
    assert_eq!(wait_bounded(&handle), Outcome::Exited(0));
    assert_eq!(stdout_lines(&rt, &id), ["ran"]);
}

#[test]
fn a_get_reaches_a_loopback_server_with_network_and_is_denied_without() {
    let (_dir, rt) = runtime(2);
    let (authority, server) = serve_once("hello over wasi:http\n");
    let granted = ServiceSpec {
        network: true,
        ..Default::default()
    };
    let (id, handle) = launch(&rt, "get", &granted, &http_getter(&authority));
    assert_eq!(
        wait_bounded(&handle),
        Outcome::Exited(0),
        "{:?}",
        rt.get_logs(&id)
    );
    assert_eq!(stdout_lines(&rt, &id), ["hello over wasi:http"]);
    let request = server.join().unwrap();
    assert!(request.starts_with("GET /hello HTTP/1.1\r\n"), "{request}");

    // Without network: wasi:http's own HTTP-request-denied (case 15), inside the guest.
    let (id, handle) = launch(
        &rt,
        "get-denied",
        &ServiceSpec::default(),
        &http_getter(&authority),
    );
    assert_eq!(wait_bounded(&handle), Outcome::Exited(1));
    assert_eq!(stdout_lines(&rt, &id), ["error-code 15"]);
}
