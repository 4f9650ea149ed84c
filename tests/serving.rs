//! Services: components exporting wasi:http/incoming-handler, served by
//! `start_container` behind a real listener on loopback, a fresh instance per
//! request, with every bound a client or a handler could push against.

use crate::common::service::*;
use crate::common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;
use wasmpool::{
    ContainerState, EndpointSpec, Error, LogStream, Outcome, Runtime, ServiceSpec, WasmConfig,
    WasmRuntime, WasmSpec,
};

pub(crate) fn service_spec() -> ServiceSpec {
    ServiceSpec {
        endpoints: vec![EndpointSpec::http(0)],
        ..Default::default()
    }
}

/// Starts `wasm` as a service on a free loopback port; its id and address.
pub(crate) fn serve(
    rt: &WasmRuntime,
    name: &str,
    spec: &ServiceSpec,
    wasm: &[u8],
) -> (wasmpool::ContainerId, SocketAddr) {
    let id = id(name);
    rt.create_container_from_bytes(&id, spec, wasm).unwrap();
    rt.start_container(&id).expect("the service starts");
    let address = rt.service_address(&id).unwrap();
    (id, address)
}

fn served_runtime(tweak: impl FnOnce(&mut WasmConfig)) -> (tempfile::TempDir, Arc<WasmRuntime>) {
    runtime_with(2, tweak)
}

#[test]
fn a_proxy_component_is_served_until_stopped_and_the_port_is_released() {
    let (_dir, rt) = served_runtime(|_| {});
    let (id, address) = serve(&rt, "hello", &service_spec(), &hello_handler());
    assert_eq!(rt.container_state(&id).unwrap(), ContainerState::Running);
    for _ in 0..3 {
        let reply = get(address, "/hello");
        assert_eq!((reply.status, reply.text().as_str()), (200, "hello\n"));
    }
    let http = rt
        .get_container_stats(&id)
        .unwrap()
        .http
        .expect("service stats");
    assert_eq!(http.served, 3);
    assert_eq!(http.by_class, [0, 3, 0, 0, 0]);
    assert!(http.latency_p50 > Duration::ZERO);
    rt.stop_container(&id, Duration::from_secs(5)).unwrap();
    assert!(
        matches!(rt.container_state(&id).unwrap(), ContainerState::Failed { reason } if reason == "stopped")
    );
    assert!(
        TcpStream::connect(address).is_err(),
        "still accepting after stop"
    );
    // The port is free again.
    std::net::TcpListener::bind(address).expect("the port was released");
}

#[test]
fn a_request_body_streams_through_the_handler_and_back() {
    let (_dir, rt) = served_runtime(|_| {});
    let (_id, address) = serve(&rt, "echo", &service_spec(), &echo_handler());
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let reply = send(address, "POST", "/echo", "", &body);
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("transfer-encoding")
            .is_some_and(|v| v == "chunked"),
        "{}",
        reply.head
    );
    assert_eq!(reply.body.len(), body.len());
    assert!(reply.body == body);
    assert!(reply.complete, "the echo ended with its last chunk");
    // A chunked request body streams in as well.
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(NO_HANG)).unwrap();
    write!(
        stream,
        "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    for part in ["first ", "second ", "third"] {
        write!(stream, "{:x}\r\n{part}\r\n", part.len()).unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let reply = read_reply(&mut stream);
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "first second third")
    );
}

#[test]
fn bodies_over_the_limit_get_413_without_or_after_reaching_the_handler() {
    let (_dir, rt) = served_runtime(|c| c.http_max_request_body = 10_000);
    let (id, address) = serve(&rt, "limited", &service_spec(), &echo_handler());
    // Declared too large: refused before any instance.
    let reply = send(address, "POST", "/echo", "", &vec![b'x'; 10_001]);
    assert_eq!(reply.status, 413);
    assert_eq!(rt.get_container_stats(&id).unwrap().http.unwrap().served, 0);
    // Chunked past the limit: the handler's read fails at the bound.
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(NO_HANG)).unwrap();
    write!(
        stream,
        "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    for _ in 0..5 {
        let _ = write!(stream, "1000\r\n{}\r\n", "y".repeat(0x1000));
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let reply = read_reply(&mut stream);
    // The echo had already answered 200 when its read failed: the body is cut short.
    assert!(
        reply.status == 413 || (reply.status == 200 && reply.body.len() <= 10_000),
        "{reply:?}"
    );
    // Exactly at the limit passes.
    let reply = send(address, "POST", "/echo", "", &vec![b'z'; 10_000]);
    assert_eq!((reply.status, reply.body.len()), (200, 10_000));
}

#[test]
fn many_concurrent_requests_are_all_answered() {
    let (_dir, rt) = served_runtime(|_| {});
    let (id, address) = serve(&rt, "busy", &service_spec(), &hello_handler());
    let clients: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                (0..20)
                    .map(|_| get(address, "/hello").status)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for client in clients {
        assert!(client.join().unwrap().iter().all(|&s| s == 200));
    }
    assert_eq!(
        rt.get_container_stats(&id).unwrap().http.unwrap().served,
        320
    );
}

#[test]
fn beyond_the_in_flight_limit_and_its_queue_requests_get_503_with_retry_after() {
    let (_dir, rt) = served_runtime(|c| {
        c.http_max_in_flight = 1;
        c.http_max_queued = 0;
    });
    let spec = ServiceSpec {
        wasm: Some(WasmSpec {
            request_timeout: Some(Duration::from_secs(2)),
            ..Default::default()
        }),
        ..service_spec()
    };
    let (id, address) = serve(&rt, "narrow", &spec, &misbehaving_handler());
    let spinner = std::thread::spawn(move || get(address, "/spin"));
    // The spinner holds the one place until its deadline.
    until_in_flight(&rt, &id, 1);
    let refused = get(address, "/hello");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    assert_eq!(spinner.join().unwrap().status, 504);
    assert_eq!(get(address, "/hello").status, 200);
    assert!(rt.get_container_stats(&id).unwrap().http.unwrap().refused >= 1);
}

#[test]
fn too_many_or_too_large_headers_get_431_and_a_neighbour_is_served() {
    let (_dir, rt) = served_runtime(|c| {
        c.http_max_headers = 20;
        c.http_max_header_bytes = 16 * 1024;
    });
    let (_id, address) = serve(&rt, "headers", &service_spec(), &hello_handler());
    let many: String = (0..50).map(|i| format!("X-Many-{i}: {i}\r\n")).collect();
    assert_eq!(send(address, "GET", "/hello", &many, b"").status, 431);
    let large = format!("X-Large: {}\r\n", "a".repeat(64 * 1024));
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(NO_HANG)).unwrap();
    let _ = write!(stream, "GET /hello HTTP/1.1\r\nHost: x\r\n{large}\r\n");
    let reply = read_reply(&mut stream);
    assert_eq!(reply.status, 431);
    assert_eq!(get(address, "/hello").status, 200);
}

#[test]
fn a_slow_or_idle_client_is_cut_off_by_the_header_timeout_while_a_neighbour_is_served() {
    let (_dir, rt) = served_runtime(|c| c.http_header_timeout = Duration::from_millis(300));
    let (id, address) = serve(&rt, "slowloris", &service_spec(), &hello_handler());
    // A head that never ends, one byte at a time.
    let mut slow = TcpStream::connect(address).unwrap();
    slow.set_read_timeout(Some(NO_HANG)).unwrap();
    slow.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // An idle keep-alive connection after one request.
    let mut idle = TcpStream::connect(address).unwrap();
    idle.set_read_timeout(Some(NO_HANG)).unwrap();
    idle.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 17];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200 OK\r\n");
    assert_eq!(
        get(address, "/hello").status,
        200,
        "a neighbour is served meanwhile"
    );
    for byte in b"X-Drip: 1" {
        if slow.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Both are closed by the server (whatever it says first, it ends the stream).
    for stream in [&mut slow, &mut idle] {
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    }
    // The server counts a connection until its task ended, a moment after
    // the socket closed: waited for, bounded, rather than read at once.
    until_connections(&rt, &id, 0);
}

#[test]
fn each_request_gets_a_fresh_instance() {
    let (_dir, rt) = served_runtime(|_| {});
    let (_id, address) = serve(&rt, "counter", &service_spec(), &counter_handler());
    for _ in 0..5 {
        assert_eq!(get(address, "/count").text(), "1");
    }
}

#[test]
fn failures_stay_in_their_request_and_are_logged_with_its_request_line() {
    let (_dir, rt) = served_runtime(|_| {});
    let spec = ServiceSpec {
        wasm: Some(WasmSpec {
            request_timeout: Some(Duration::from_millis(500)),
            ..Default::default()
        }),
        ..service_spec()
    };
    let (id, address) = serve(&rt, "faulty", &spec, &misbehaving_handler());
    let trapped = get(address, "/trap");
    assert_eq!(trapped.status, 500);
    assert!(trapped.text().contains("unreachable"), "{}", trapped.text());
    assert_eq!(get(address, "/hello").status, 200);
    let spun = get(address, "/spin");
    assert_eq!(spun.status, 504, "{}", spun.text());
    let silent = get(address, "/silent");
    assert_eq!(silent.status, 500);
    assert!(silent.text().contains("without setting a response"));
    assert_eq!(get(address, "/hello").status, 200);
    let notes = request_notes(&rt, &id);
    assert!(
        notes
            .iter()
            .any(|m| m.contains("GET /trap") && m.contains("unreachable")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|m| m.contains("GET /spin") && m.contains("deadline")),
        "{notes:?}"
    );
    // A request stays in flight until its instance ended, a moment after its answer.
    until_in_flight(&rt, &id, 0);
    let http = rt.get_container_stats(&id).unwrap().http.unwrap();
    assert_eq!(http.by_class[4], 3);
}

/// What the runtime logged about single requests of a service (their failures).
pub(crate) fn request_notes(rt: &WasmRuntime, id: &wasmpool::ContainerId) -> Vec<String> {
    rt.get_logs(id)
        .unwrap()
        .into_iter()
        .filter(|e| e.stream == LogStream::Runtime && e.request.is_some())
        .map(|e| e.message)
        .collect()
}

/// Waits (bounded) until the service has exactly `count` requests in flight.
fn until_in_flight(rt: &WasmRuntime, id: &wasmpool::ContainerId, count: u64) {
    let started = std::time::Instant::now();
    while rt.get_container_stats(id).unwrap().http.unwrap().in_flight != count {
        assert!(started.elapsed() < NO_HANG, "never {count} in flight");
        std::thread::yield_now();
    }
}

#[test]
fn handler_output_lines_name_their_request() {
    let (_dir, rt) = served_runtime(|_| {});
    let (id, address) = serve(&rt, "logging", &service_spec(), &logging_handler());
    get(address, "/first");
    get(address, "/second");
    let lines: Vec<_> = rt
        .get_logs(&id)
        .unwrap()
        .into_iter()
        .filter(|e| e.stream == LogStream::Stdout)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].message, "/first");
    assert_eq!(lines[1].message, "/second");
    assert!(lines[0].request.is_some() && lines[0].request != lines[1].request);
}

#[test]
fn a_graceful_stop_finishes_requests_in_flight_and_refuses_new_connections() {
    let (_dir, rt) = served_runtime(|_| {});
    let (id, address) = serve(&rt, "draining", &service_spec(), &slow_handler(300_000_000));
    let in_flight = std::thread::spawn(move || get(address, "/work"));
    until_ready(&rt, &id);
    rt.stop_container(&id, NO_HANG)
        .expect("drains within the timeout");
    let finished = in_flight.join().unwrap();
    assert_eq!(
        (finished.status, finished.text().as_str()),
        (200, "hello\n")
    );
    assert!(TcpStream::connect(address).is_err());
    assert_eq!(
        rt.wait_handle(&id).unwrap().try_wait(),
        Some(Outcome::Stopped)
    );
}

#[test]
fn a_stop_past_its_timeout_stops_the_requests_still_running() {
    let (_dir, rt) = served_runtime(|_| {});
    let (id, address) = serve(&rt, "stuck", &service_spec(), &misbehaving_handler());
    let spinning = std::thread::spawn(move || get(address, "/spin"));
    until_in_flight(&rt, &id, 1);
    rt.stop_container(&id, Duration::from_millis(300)).unwrap();
    assert_eq!(spinning.join().unwrap().status, 503);
}

#[test]
fn an_address_in_use_is_a_clear_error() {
    let (_dir, rt) = served_runtime(|_| {});
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let spec = ServiceSpec {
        endpoints: vec![EndpointSpec::http(port)],
        ..Default::default()
    };
    let id = id("in-use");
    rt.create_container_from_bytes(&id, &spec, hello_handler())
        .unwrap();
    let error = rt.start_container(&id).unwrap_err();
    assert!(
        matches!(&error, Error::Listen { address, .. } if address.port() == port),
        "{error}"
    );
    assert!(error.to_string().contains("in use"), "{error}");
}

#[test]
fn a_service_run_as_a_command_and_a_command_served_say_what_to_do_and_keep_the_compiled_code() {
    let (dir, rt) = served_runtime(|_| {});
    let (id, handle) = launch(
        &rt,
        "not-a-command",
        &ServiceSpec::default(),
        &hello_handler(),
    );
    let outcome = wait_bounded(&handle);
    assert!(
        matches!(&outcome, Outcome::Failed(m) if m.contains("wasi:http service") && m.contains("serve")),
        "{outcome:?}"
    );
    let compiled = std::fs::read_dir(dir.path().join("compiled"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("cwasm".as_ref()))
        .count();
    assert_eq!(compiled, 1, "the refusal kept the compiled artifact");
    rt.remove_container(&id).unwrap();
    let command = component(r#"(module (memory (export "memory") 1) (func (export "_start")))"#);
    let id = id_of("not-a-service");
    rt.create_container_from_bytes(&id, &service_spec(), command)
        .unwrap();
    let error = rt.start_container(&id).unwrap_err();
    assert!(
        error.to_string().contains("not a wasi:http service"),
        "{error}"
    );
}

fn id_of(name: &str) -> wasmpool::ContainerId {
    id(name)
}

#[test]
fn a_host_with_its_own_listener_hands_requests_to_handle_request() {
    let (_dir, rt) = served_runtime(|_| {});
    let (id, _address) = serve(&rt, "embedded", &service_spec(), &echo_handler());
    let body = http_body_util::Full::new(bytes::Bytes::from_static(b"through the host"));
    let request = http::Request::post("http://embedded/echo")
        .body(body)
        .unwrap();
    let mut response = rt.handle_request(&id, request).unwrap();
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    response.body_mut().read_to_string(&mut text).unwrap();
    assert_eq!(text, "through the host");
}

#[test]
fn connections_past_the_bound_are_closed_and_a_neighbour_is_served_once_one_ends() {
    let (_dir, rt) = served_runtime(|c| c.http_max_connections = 3);
    let (id, address) = serve(&rt, "crowded", &service_spec(), &hello_handler());
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    until_connections(&rt, &id, 3);
    // The fourth is accepted and closed at once: it reads end of stream.
    let mut fourth = TcpStream::connect(address).unwrap();
    fourth.set_read_timeout(Some(NO_HANG)).unwrap();
    let _ = fourth.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    let _ = fourth.read_to_end(&mut answer);
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    drop(held);
    until_connections(&rt, &id, 0);
    assert_eq!(get(address, "/hello").status, 200);
}

fn until_connections(rt: &WasmRuntime, id: &wasmpool::ContainerId, count: u64) {
    let started = std::time::Instant::now();
    while rt
        .get_container_stats(id)
        .unwrap()
        .http
        .unwrap()
        .connections
        != count
    {
        assert!(started.elapsed() < NO_HANG, "never {count} connections");
        std::thread::yield_now();
    }
}

#[test]
fn a_response_body_past_its_bound_is_cut_off() {
    let (_dir, rt) = served_runtime(|c| c.http_max_response_body = 64 * 1024);
    let (_id, address) = serve(&rt, "talkative", &service_spec(), &echo_handler());
    let small = send(address, "POST", "/echo", "", &vec![b'a'; 1000]);
    assert_eq!((small.status, small.body.len()), (200, 1000));
    assert!(small.complete);
    // The echo sends back 200 KiB: the client gets at most the bound, and no clean end.
    let big = send(address, "POST", "/echo", "", &vec![b'b'; 200 * 1024]);
    assert_eq!(big.status, 200);
    assert!(!big.complete, "a body cut off at its bound ended cleanly");
    assert!(
        big.body.len() <= 64 * 1024 + 4096,
        "{} bytes came through",
        big.body.len()
    );
    assert_eq!(get(address, "/hello").status, 200, "the service goes on");
}

#[test]
fn each_request_has_its_own_fuel_budget() {
    let (_dir, rt) = served_runtime(|_| {});
    let spec = ServiceSpec {
        wasm: Some(WasmSpec {
            max_fuel: Some(5_000_000),
            ..Default::default()
        }),
        ..service_spec()
    };
    let (id, address) = serve(&rt, "metered", &spec, &misbehaving_handler());
    let spun = get(address, "/spin");
    assert_eq!(spun.status, 500);
    assert!(spun.text().contains("out of fuel"), "{}", spun.text());
    // The next request starts with a full budget of its own.
    for _ in 0..3 {
        assert_eq!(get(address, "/hello").status, 200);
    }
    until_in_flight(&rt, &id, 0);
    assert!(rt.get_container_stats(&id).unwrap().fuel_consumed >= 5_000_000);
}

#[test]
fn http2_with_prior_knowledge_is_served_to_a_real_client() {
    let (_dir, rt) = served_runtime(|_| {});
    let (id, address) = serve(&rt, "h2", &service_spec(), &hello_handler());
    // curl (Debian's, with nghttp2) speaks HTTP/2 over cleartext from the first
    // byte. (One request per connection: curl 7.88 fails to reuse a
    // prior-knowledge connection; nghttp multiplexes three streams fine.)
    let url = format!("http://{address}/hello");
    for _ in 0..2 {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "20",
                "--http2-prior-knowledge",
                "-w",
                "\n%{http_version}",
                &url,
            ])
            .output()
            .expect("curl runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello\n\n2",
            "{out:?}"
        );
    }
    assert_eq!(rt.get_container_stats(&id).unwrap().http.unwrap().served, 2);
}
