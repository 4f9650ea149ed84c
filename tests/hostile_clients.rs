//! Hostile clients of a service, on loopback: each tries to hold what a
//! service has — its connection slots, its memory, its workers, its stop —
//! while a neighbour must keep being served.

use crate::common::service::*;
use crate::common::*;
use crate::serving::{serve, service_spec};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use wasmpool::{
    ContainerId, Error, Outcome, Runtime, ServiceSpec, WasmConfig, WasmRuntime, WasmSpec,
};

/// A neighbour's `GET /hello`, tried until it is answered `200` (bounded by
/// `NO_HANG`); how long that took.
fn neighbour_served(address: SocketAddr) -> Duration {
    let started = Instant::now();
    loop {
        let attempt = TcpStream::connect(address).and_then(|mut stream| {
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw)?;
            Ok(raw)
        });
        if let Ok(raw) = attempt {
            if raw.starts_with(b"HTTP/1.1 200") {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < NO_HANG,
            "the neighbour was never served"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn silent_preface_only_and_non_reading_clients_lose_their_slots_and_a_neighbour_is_served() {
    let (_dir, rt) = runtime_with(2, |c| {
        c.http_max_connections = 3;
        c.http_header_timeout = Duration::from_millis(300);
        c.http_write_timeout = Duration::from_millis(300);
    });
    let (_hello, hello_address) = serve(&rt, "hello", &service_spec(), &hello_handler());
    // Three sockets that never send a byte take every slot.
    let silent: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(hello_address).unwrap())
        .collect();
    let waited = neighbour_served(hello_address);
    assert!(waited < NO_HANG);
    // Two sockets that send only HTTP/2's preface, and one that never reads.
    let mut preface: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(hello_address).unwrap())
        .collect();
    for socket in &mut preface {
        socket
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .unwrap();
    }
    neighbour_served(hello_address);
    drop((silent, preface));

    let (big, big_address) = serve(&rt, "big", &service_spec(), &big_handler(8192));
    let mut readers_not = Vec::new();
    for _ in 0..3 {
        let mut socket = TcpStream::connect(big_address).unwrap();
        socket
            .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        readers_not.push(socket);
    }
    // Each asks for 32 MiB and reads none of it: its writes stall, and it is
    // closed; a client that reads gets the whole answer.
    let started = Instant::now();
    let reply = loop {
        if let Ok(mut stream) = TcpStream::connect(big_address) {
            stream.set_read_timeout(Some(NO_HANG)).unwrap();
            if stream
                .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .is_ok()
            {
                let reply = read_reply_lenient(&mut stream);
                if let Some(reply) = reply {
                    break reply;
                }
            }
        }
        assert!(
            started.elapsed() < NO_HANG,
            "never served beside the non-readers"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(reply.status, 200);
    assert!(reply.complete, "the reading client got all of it");
    assert_eq!(reply.body.len(), 8192 * 4096);
    drop(readers_not);
    let http = rt.get_container_stats(&big).unwrap().http.unwrap();
    assert!(http.served >= 1);
}

/// A whole response, or `None` when the connection closed before a head came.
fn read_reply_lenient(stream: &mut TcpStream) -> Option<Reply> {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    raw.windows(4)
        .any(|w| w == b"\r\n\r\n")
        .then(|| parse_reply(&raw))
}

#[test]
fn a_response_cut_off_by_its_deadline_never_looks_complete() {
    let (_dir, rt) = runtime_with(2, |_| {});
    let spec = ServiceSpec {
        wasm: Some(WasmSpec {
            request_timeout: Some(Duration::from_millis(300)),
            ..Default::default()
        }),
        ..service_spec()
    };
    let (_id, address) = serve(&rt, "cut", &spec, &cut_off_handler());
    // HTTP/1.1: the head and the first chunk came, then the connection ends
    // without the last chunk.
    let reply = get(address, "/");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello\n");
    assert!(!reply.complete, "a cut-off body ended cleanly: {reply:?}");
    // A whole body from a handler that finishes is complete.
    let (_hello, hello) = serve(&rt, "whole", &service_spec(), &hello_handler());
    let reply = get(hello, "/");
    assert!(reply.complete && reply.text() == "hello\n", "{reply:?}");
    // HTTP/2: the stream is reset rather than ended.
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ended = tokio.block_on(async {
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = client.ready().await.unwrap();
        let request = http::Request::get(format!("http://{address}/"))
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut data = Vec::new();
        loop {
            match body.data().await {
                Some(Ok(chunk)) => data.extend_from_slice(&chunk),
                Some(Err(e)) => break Err((data, e)),
                None => break Ok(data),
            }
        }
    });
    let (data, error) = ended.expect_err("an HTTP/2 body cut off must end in RST_STREAM");
    assert_eq!(data, b"hello\n");
    assert!(
        error.is_reset() || error.is_io() || error.is_go_away(),
        "{error}"
    );
}

#[test]
fn a_service_shares_one_memory_budget_across_its_requests_and_answers_503_past_it() {
    let (_dir, rt) = runtime_with(2, |c| c.http_service_memory = 64 << 20);
    // 48 MiB each: one fits the budget, a second does not while the first holds it.
    let (id, address) = serve(&rt, "hungry", &service_spec(), &grow_and_wait_handler(768));
    let mut holders = Vec::new();
    for _ in 0..4 {
        let mut socket = TcpStream::connect(address).unwrap();
        socket.set_read_timeout(Some(NO_HANG)).unwrap();
        socket
            .write_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 16\r\n\r\n",
            )
            .unwrap();
        holders.push(socket);
    }
    // Three are refused 503 while one holds its 48 MiB; that one waits for its body.
    let mut refused = 0;
    let mut waiting = Vec::new();
    for mut socket in holders {
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut raw = Vec::new();
        let _ = socket.read_to_end(&mut raw);
        if raw.starts_with(b"HTTP/1.1 503") {
            assert!(
                String::from_utf8_lossy(&raw).contains("memory budget"),
                "{}",
                String::from_utf8_lossy(&raw)
            );
            refused += 1;
        } else {
            assert!(raw.is_empty(), "{}", String::from_utf8_lossy(&raw));
            waiting.push(socket);
        }
    }
    assert_eq!((refused, waiting.len()), (3, 1));
    let stats = rt.get_container_stats(&id).unwrap();
    assert!(
        stats.memory_bytes >= 48 << 20 && stats.memory_bytes <= 64 << 20,
        "{}",
        stats.memory_bytes
    );
    assert_eq!(stats.memory_limit, 64 << 20);
    // The holder gets its body and is answered; its memory is back for the next.
    let mut holder = waiting.pop().unwrap();
    holder.set_read_timeout(Some(NO_HANG)).unwrap();
    holder.write_all(&[b'x'; 16]).unwrap();
    let reply = read_reply(&mut holder);
    assert_eq!((reply.status, reply.text().as_str()), (200, "hello\n"));
    let reply = send(address, "POST", "/", "", &[b'y'; 16]);
    assert_eq!(reply.status, 200, "{reply:?}");
    settle(|| rt.get_container_stats(&id).unwrap().memory_bytes == 0);
    assert_eq!(rt.get_container_stats(&id).unwrap().memory_bytes, 0);
}

/// A request whose handler (`grow_and_wait_handler`) waits for a body that
/// never comes; returned once its handler runs.
fn waiting_request(rt: &WasmRuntime, id: &ContainerId, address: SocketAddr) -> TcpStream {
    let mut waiting = TcpStream::connect(address).unwrap();
    waiting.set_read_timeout(Some(NO_HANG)).unwrap();
    waiting
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    while rt.get_container_stats(id).unwrap().http.unwrap().in_flight == 0 {
        assert!(started.elapsed() < NO_HANG);
        std::thread::yield_now();
    }
    waiting
}

#[test]
fn removing_a_service_whose_request_waits_stops_it_and_frees_its_admission() {
    let (_dir, rt) = runtime_with(2, |c| {
        c.queue_limit = 1;
        c.stop_timeout = Duration::from_secs(2);
    });
    let (id, address) = serve(&rt, "sleepy", &service_spec(), &grow_and_wait_handler(0));
    let mut waiting = waiting_request(&rt, &id, address);
    let handle = rt.wait_handle(&id).unwrap();
    let removing = Instant::now();
    rt.remove_container(&id).unwrap();
    assert_eq!(
        handle.wait_timeout(Duration::from_secs(4)),
        Some(Outcome::Stopped),
        "ended within twice stop_timeout"
    );
    assert!(removing.elapsed() < NO_HANG);
    // Its admission was given back: with a queue limit of one, another runs.
    let (_other, handle) = launch(
        &rt,
        "after",
        &ServiceSpec::default(),
        &wasm(&exit_module(3)),
    );
    assert_eq!(wait_bounded(&handle), Outcome::Exited(3));
    let mut rest = Vec::new();
    let _ = waiting.read_to_end(&mut rest);
}

#[test]
fn a_second_stop_with_less_grace_cuts_the_drain_short() {
    let (_dir, rt) = runtime_with(2, |_| {});
    let (id, address) = serve(&rt, "draining", &service_spec(), &grow_and_wait_handler(0));
    let mut waiting = waiting_request(&rt, &id, address);
    // A TERM with an hour's grace: the request may finish, and it waits.
    let first = {
        let rt = rt.clone();
        let id = id.clone();
        std::thread::spawn(move || rt.stop_container(&id, Duration::from_secs(3600)))
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        rt.wait_handle(&id).unwrap().try_wait().is_none(),
        "still draining"
    );
    // Then a KILL: no more grace.
    rt.stop_container(&id, Duration::ZERO).ok();
    assert_eq!(
        rt.wait_handle(&id).unwrap().wait_timeout(NO_HANG),
        Some(Outcome::Stopped)
    );
    assert!(first.join().unwrap().is_ok());
    let reply = read_reply(&mut waiting);
    assert_eq!(reply.status, 503);
}

#[test]
fn a_non_utf8_host_is_refused_before_any_instance_and_long_targets_are_logged_short() {
    let (_dir, rt) = runtime_with(2, |_| {});
    let (id, address) = serve(&rt, "strict", &service_spec(), &misbehaving_handler());
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(NO_HANG)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: caf\xe9\r\nConnection: close\r\n\r\n")
        .unwrap();
    let reply = read_reply(&mut stream);
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(rt.get_container_stats(&id).unwrap().http.unwrap().served, 0);
    // A 40 KiB target to a trapping path: its log line quotes a bounded part.
    let long = format!("/t{}", "x".repeat(40 * 1024));
    assert_eq!(get(address, &long).status, 500);
    let notes: Vec<_> = rt
        .get_logs(&id)
        .unwrap()
        .into_iter()
        .filter(|e| e.request.is_some())
        .map(|e| e.message)
        .collect();
    let note = notes
        .iter()
        .find(|m| m.contains("GET /txxx"))
        .unwrap_or_else(|| panic!("{notes:?}"));
    assert!(note.len() < 1024, "{} bytes: {note}", note.len());
    assert!(note.contains(&format!("({} bytes)", long.len())), "{note}");
}

#[test]
fn connection_timeouts_that_would_overflow_are_refused_by_name_and_unbounded_ones_serve() {
    for tweak in [
        (|c: &mut WasmConfig| c.http_header_timeout = Duration::MAX) as fn(&mut WasmConfig),
        |c| c.http_write_timeout = Duration::MAX,
        |c| c.http_header_timeout = Duration::ZERO,
        |c| c.http_write_timeout = Duration::ZERO,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = WasmConfig {
            cache_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        tweak(&mut config);
        match WasmRuntime::new(config) {
            Err(Error::InvalidSpec { field, .. }) => {
                assert!(
                    field.starts_with("http_") && field.ends_with("_timeout"),
                    "{field}"
                )
            }
            other => panic!("accepted: {:?}", other.map(|_| ())),
        }
    }
    // Unbounded request, queue and stop timeouts are settings: a service serves.
    let (_dir, rt) = runtime_with(2, |c| {
        c.http_request_timeout = Duration::MAX;
        c.http_queue_timeout = Duration::MAX;
        c.stop_timeout = Duration::MAX;
    });
    let (id, address) = serve(&rt, "patient", &service_spec(), &hello_handler());
    assert_eq!(get(address, "/").status, 200);
    rt.stop_container(&id, Duration::from_secs(5)).unwrap();
}

#[test]
fn handle_request_from_inside_an_async_runtime_answers_and_does_not_panic() {
    let (_dir, rt) = runtime_with(2, |_| {});
    let (id, _address) = serve(&rt, "embedded", &service_spec(), &hello_handler());
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = tokio.block_on(async {
        let request = http::Request::get("http://embedded/")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        rt.handle_request(&id, request).map(|r| r.status())
    });
    assert_eq!(status.unwrap(), 200);
}

#[test]
fn http2_streams_windows_and_resets_are_bounded_per_connection() {
    let (_dir, rt) = runtime_with(2, |c| {
        c.http_max_in_flight = 8;
        c.http_max_queued = 0;
    });
    let (id, address) = serve(&rt, "h2", &service_spec(), &grow_and_wait_handler(0));
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        let connection = tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let post = || {
            http::Request::post(format!("http://{address}/"))
                .body(())
                .unwrap()
        };
        // One whole request first: the server's SETTINGS are in by its answer.
        let (response, mut body) = client.send_request(post(), false).unwrap();
        body.send_data(bytes::Bytes::from_static(&[b'x'; 16]), true)
            .unwrap();
        assert_eq!(response.await.unwrap().status(), 200);
        // Streams at most its in-flight bound: eight handlers wait for their
        // bodies; with no queue past the gate, a ninth request reaching the
        // server would be refused 503 at once — but h2 holds the ninth to
        // twelfth back until a stream closes, because the server said eight.
        let mut open = Vec::new();
        for _ in 0..12 {
            client = client.ready().await.unwrap();
            open.push(client.send_request(post(), false).unwrap());
        }
        for (response, _) in open.iter_mut().skip(8) {
            let early = tokio::time::timeout(Duration::from_millis(300), response).await;
            assert!(
                early.is_err(),
                "a stream past the bound was served: {early:?}"
            );
        }
        for (_, stream) in &mut open {
            stream.send_reset(h2::Reason::CANCEL);
        }
        drop(open);
        // Rapid reset: streams opened and reset at once, many times over.
        let mut sent = 0;
        for _ in 0..5_000 {
            client = match client.clone().ready().await {
                Ok(client) => client,
                Err(_) => break,
            };
            let Ok((_response, mut stream)) = client.send_request(post(), false) else {
                break;
            };
            stream.send_reset(h2::Reason::CANCEL);
            sent += 1;
        }
        assert!(sent > 0);
        // However the server took them, the connection ends or stays usable,
        // and nothing is left running.
        drop(client);
        let _ = tokio::time::timeout(NO_HANG, connection).await;
    });
    let started = Instant::now();
    while rt.get_container_stats(&id).unwrap().http.unwrap().in_flight != 0 {
        assert!(
            started.elapsed() < NO_HANG,
            "reset streams left requests running"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A request head over the header bound, and a CONTINUATION flood.
    let reply = send(address, "POST", "/", "", &[b'z'; 16]);
    assert_eq!(reply.status, 200, "the service goes on: {reply:?}");
    let mut flood = TcpStream::connect(address).unwrap();
    flood.set_write_timeout(Some(NO_HANG)).unwrap();
    flood
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    // HEADERS on stream 1 without END_HEADERS, then CONTINUATION frames of a
    // never-ending literal header: the server must give up long before 64 MiB.
    let literal = [0x00u8, 0x7f, 0xff, 0xff, 0xff, 0x0f]; // a name of 2^28 bytes follows
    let headers = frame(0x1, 0x0, &literal);
    let mut written = 0usize;
    let continuation = frame(0x9, 0x0, &[b'a'; 16_000]);
    let mut ok = flood.write_all(&headers).is_ok();
    while ok && written < 64 << 20 {
        ok = flood.write_all(&continuation).is_ok();
        written += continuation.len();
    }
    assert!(!ok, "the server read 64 MiB of one header block");
    let reply = send(address, "POST", "/", "", &[b'z'; 16]);
    assert_eq!(reply.status, 200, "the service goes on: {reply:?}");
}

/// An HTTP/2 frame on stream 1.
fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        kind,
        flags,
        0,
        0,
        0,
        1,
    ];
    out.extend_from_slice(payload);
    out
}
