//! Instance reuse: a `wasi:http/handler@0.3` service reuses its instances by
//! default, a 0.2 one only when the operator declares it safe; either way an
//! instance that traps, runs out of fuel or misses a deadline is never
//! reused, and each request keeps its own deadline, fuel and log lines.

use crate::common::service::*;
use crate::common::*;
use crate::serving::{request_notes, serve, service_spec};
use std::path::PathBuf;
use std::time::Duration;
use wasmpool::{LogStream, Runtime, ServiceSpec, WasmConfig, WasmRuntime, WasmSpec};

/// Counts its requests in a global and answers the count as one digit;
/// `/trap` traps, `/spin` spins forever, `/work` burns about 6 million
/// units of fuel first, `/leak` keeps 1 MiB more memory (trapping if the
/// grow is refused), `/init` burns about 240 million on an instance's first
/// request only (a slow start-up) — all after counting.
fn counting_handler() -> Vec<u8> {
    handler(
        "(local $i i32) (local $c i32)",
        r#"(global.set $count (i32.add (global.get $count) (i32.const 1)))
           (call $path (local.get $req) (i32.const 128))
           ;; the second byte of the path: t(rap), s(pin) or w(ork)
           (local.set $c (i32.load8_u (i32.add (i32.load (i32.const 132)) (i32.const 1))))
           (if (i32.eq (local.get $c) (i32.const 116)) (then unreachable))
           (if (i32.eq (local.get $c) (i32.const 115)) (then (loop $forever (br $forever))))
           (if (i32.eq (local.get $c) (i32.const 108))
               (then (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))))
           (if (i32.and (i32.eq (local.get $c) (i32.const 105))
                        (i32.eq (global.get $count) (i32.const 1)))
               (then
                   (local.set $i (i32.const 40000000))
                   (loop $init
                       (local.set $i (i32.sub (local.get $i) (i32.const 1)))
                       (br_if $init (local.get $i)))))
           (if (i32.eq (local.get $c) (i32.const 119))
               (then
                   (local.set $i (i32.const 1000000))
                   (loop $work
                       (local.set $i (i32.sub (local.get $i) (i32.const 1)))
                       (br_if $work (local.get $i)))))
           (i32.store8 (i32.const 1100) (i32.add (i32.const 48) (global.get $count)))
           (call $respond (local.get $out) (i32.const 200) (i32.const 1100) (i32.const 1))"#,
    )
}

fn instances(rt: &WasmRuntime, id: &wasmpool::ContainerId) -> u64 {
    rt.get_container_stats(id).unwrap().http.unwrap().instances
}

fn counts(address: std::net::SocketAddr, paths: &[&str]) -> Vec<String> {
    paths
        .iter()
        .map(|path| {
            let reply = get(address, path);
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            reply.text()
        })
        .collect()
}

#[test]
fn a_0_2_handler_gets_a_fresh_instance_per_request_unless_its_reuse_is_declared() {
    let (_dir, rt) = runtime_with(2, |_| {});
    let (id, address) = serve(&rt, "fresh", &service_spec(), &counting_handler());
    assert_eq!(counts(address, &["/a"; 4]), ["1"; 4]);
    assert_eq!(instances(&rt, &id), 4);

    let (_dir, rt) = runtime_with(2, |c| c.http_max_instance_reuse_count = Some(3));
    let (id, address) = serve(&rt, "reused", &service_spec(), &counting_handler());
    assert_eq!(
        counts(address, &["/a"; 7]),
        ["1", "2", "3", "1", "2", "3", "1"]
    );
    assert_eq!(instances(&rt, &id), 3);
    // The stop ends the idle instance too.
    rt.stop_container(&id, Duration::from_secs(5)).unwrap();
    assert!(matches!(
        wait_bounded(&rt.wait_handle(&id).unwrap()),
        wasmpool::Outcome::Stopped
    ));
}

#[test]
fn a_reused_instance_that_traps_or_runs_out_of_fuel_is_never_reused_and_each_request_has_its_own_fuel(
) {
    let (_dir, rt) = runtime_with(2, |c| {
        c.http_max_instance_reuse_count = Some(9);
        c.max_fuel = Some(10_000_000);
    });
    let (id, address) = serve(&rt, "faulty", &service_spec(), &counting_handler());
    assert_eq!(counts(address, &["/a", "/b"]), ["1", "2"]);
    let trapped = get(address, "/trap");
    assert_eq!(trapped.status, 500, "{}", trapped.text());
    assert!(trapped.text().contains("unreachable"), "{}", trapped.text());
    // A fresh instance; each /work takes most of one request's budget, so
    // three in a row on one instance pass only if each got its own.
    assert_eq!(
        counts(address, &["/c", "/work", "/work", "/work"]),
        ["1", "2", "3", "4"]
    );
    let spun = get(address, "/spin");
    assert_eq!(spun.status, 500, "{}", spun.text());
    assert!(spun.text().contains("fuel"), "{}", spun.text());
    assert_eq!(counts(address, &["/d"]), ["1"]);
    assert_eq!(instances(&rt, &id), 3);
}

#[test]
fn a_reused_instance_that_leaks_ends_at_its_memory_limit_while_a_neighbour_is_served() {
    let (_dir, rt) = runtime_with(2, |c| c.http_max_instance_reuse_count = Some(100));
    let spec = ServiceSpec {
        wasm: Some(WasmSpec {
            max_memory: Some("4Mi".into()),
            ..Default::default()
        }),
        ..service_spec()
    };
    let (id, address) = serve(&rt, "leaking", &spec, &counting_handler());
    let (_neighbour, neighbour) = serve(&rt, "neighbour", &service_spec(), &counting_handler());
    let mut leaked = 0;
    let refused = loop {
        let reply = get(address, "/leak");
        if reply.status != 200 {
            break reply;
        }
        leaked += 1;
        assert!(leaked < 8, "4 MiB held {leaked} leaks of 1 MiB");
        // The neighbour is served between the leaks.
        assert_eq!(get(neighbour, "/a").status, 200);
    };
    // The memory limit is the instance's across its requests, not each one's.
    assert!(leaked >= 1, "not one leak of 1 MiB fit in 4 MiB");
    assert_eq!(refused.status, 500, "{}", refused.text());
    assert!(refused.text().contains("unreachable"), "{}", refused.text());
    // Never reused: the next request has a fresh instance, counting from 1.
    assert_eq!(counts(address, &["/a"]), ["1"]);
    assert_eq!(instances(&rt, &id), 2);
    assert_eq!(get(neighbour, "/a").status, 200);
}

#[test]
fn a_burst_to_a_slow_starting_service_starts_no_more_instances_at_once_than_workers() {
    // Each instance's first request is its slow start-up (some 50 ms).
    // Twelve at once on two workers: two instances start, the rest wait for
    // them (then a warm instance answers each at once); an instance each
    // would only share the two workers twelve ways and be ready late together.
    let (_dir, rt) = runtime_with(2, |c| c.http_max_instance_reuse_count = Some(100));
    let (id, address) = serve(&rt, "slow-start", &service_spec(), &counting_handler());
    let replies: Vec<_> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..12)
            .map(|_| scope.spawn(move || get(address, "/init")))
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    // Two start, two more while the first two are busy for an instant (and
    // a few more if a start-up outlasts its grace on a loaded machine).
    let made = instances(&rt, &id);
    assert!((2..=6).contains(&made), "{made} instances for 12 requests");
    // Reused since: the counts go on past 1.
    assert!(replies.iter().any(|r| r.text() != "1"));
}

#[test]
fn a_spinning_first_request_holds_back_a_neighbours_instance_only_for_a_grace() {
    // Two workers, two requests spinning on their instances' first request:
    // as many as may start at once. A neighbour's instance starts once they
    // have been starting for the grace (250 ms), not at their deadline.
    let (_dir, rt) = runtime_with(2, |c| c.http_max_instance_reuse_count = Some(9));
    let spec = ServiceSpec {
        wasm: Some(WasmSpec {
            request_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        }),
        ..service_spec()
    };
    let (id, address) = serve(&rt, "spinners", &spec, &counting_handler());
    let spinners: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || get(address, "/spin")))
        .collect();
    settle(|| rt.get_container_stats(&id).unwrap().http.unwrap().in_flight == 2);
    assert_eq!(counts(address, &["/b"]), ["1"]);
    // Answered while both spinners still run (their deadline is 30 s away).
    assert!(spinners.iter().all(|spinner| !spinner.is_finished()));
    let in_flight = || rt.get_container_stats(&id).unwrap().http.unwrap().in_flight;
    settle(|| in_flight() == 2);
    assert_eq!(in_flight(), 2, "the spinners are the requests left");
    assert_eq!(instances(&rt, &id), 3);
    rt.stop_container(&id, Duration::from_secs(5)).unwrap();
    for spinner in spinners {
        spinner.join().unwrap();
    }
}

#[test]
fn a_request_whose_client_left_while_it_waited_for_an_instance_starts_none() {
    use std::io::Write;
    // One worker: one instance starts at a time. Its first request spins
    // (to its deadline); three clients send a request and leave while it
    // does. Once the spinner is past its grace an instance may start for a
    // waiting request, but nobody waits for theirs any more: none starts.
    let (_dir, rt) = runtime_with(1, |c| c.http_max_instance_reuse_count = Some(100));
    let spec = ServiceSpec {
        wasm: Some(WasmSpec {
            request_timeout: Some(Duration::from_millis(1500)),
            ..Default::default()
        }),
        ..service_spec()
    };
    let (id, address) = serve(&rt, "left", &spec, &counting_handler());
    let spinner = std::thread::spawn(move || get(address, "/spin"));
    let in_flight = || rt.get_container_stats(&id).unwrap().http.unwrap().in_flight;
    settle(|| in_flight() == 1);
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            stream
                .write_all(b"GET /gone HTTP/1.1\r\nhost: x\r\n\r\n")
                .unwrap();
            stream
        })
        .collect();
    // All three wait in the pool (each holds an in-flight place), then leave.
    settle(|| in_flight() == 4);
    assert_eq!(in_flight(), 4, "the three requests were taken in");
    drop(clients);
    assert_eq!(spinner.join().unwrap().status, 504);
    // The spinner's instance went at its deadline; the next request gets
    // the second instance made, not the fifth.
    assert_eq!(counts(address, &["/next"]), ["1"]);
    assert_eq!(instances(&rt, &id), 2);
}

#[test]
fn a_request_past_its_deadline_gets_504_the_instance_goes_and_a_neighbour_is_served() {
    let (_dir, rt) = runtime_with(2, |c| c.http_max_instance_reuse_count = Some(9));
    let spec = ServiceSpec {
        wasm: Some(WasmSpec {
            request_timeout: Some(Duration::from_millis(800)),
            ..Default::default()
        }),
        ..service_spec()
    };
    let (id, address) = serve(&rt, "spinning", &spec, &counting_handler());
    assert_eq!(counts(address, &["/a"]), ["1"]);
    let spinner = std::thread::spawn(move || get(address, "/spin"));
    settle(|| rt.get_container_stats(&id).unwrap().http.unwrap().in_flight == 1);
    // A neighbour is served while it spins: by another instance.
    counts(address, &["/b", "/c"]);
    let spun = spinner.join().unwrap();
    assert_eq!(spun.status, 504, "{}", spun.text());
    counts(address, &["/d"]);
    let notes = request_notes(&rt, &id);
    assert!(
        notes
            .iter()
            .any(|m| m.contains("GET /spin") && m.contains("deadline")),
        "{notes:?}"
    );
    assert!(instances(&rt, &id) >= 2);
}

#[test]
fn a_reused_instance_logs_each_line_under_its_own_request() {
    let (_dir, rt) = runtime_with(2, |c| c.http_max_instance_reuse_count = Some(5));
    let (id, address) = serve(&rt, "logging", &service_spec(), &logging_handler());
    for path in ["/first", "/second", "/third"] {
        assert_eq!(get(address, path).status, 200);
    }
    assert_eq!(instances(&rt, &id), 1);
    let lines: Vec<_> = rt
        .get_logs(&id)
        .unwrap()
        .into_iter()
        .filter(|e| e.stream == LogStream::Stdout)
        .collect();
    let messages: Vec<_> = lines.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["/first", "/second", "/third"]);
    let requests: std::collections::HashSet<_> = lines.iter().map(|e| e.request).collect();
    assert_eq!(requests.len(), 3, "{lines:?}");
    assert!(requests.iter().all(Option::is_some));
}

#[test]
fn an_idle_instance_goes_after_its_idle_time() {
    let (_dir, rt) = runtime_with(2, |c| {
        c.http_max_instance_reuse_count = Some(9);
        c.http_idle_instance_timeout = Duration::from_millis(200);
    });
    let (id, address) = serve(&rt, "idle", &service_spec(), &counting_handler());
    assert_eq!(counts(address, &["/a", "/b"]), ["1", "2"]);
    // Gone with its memory: what the service's instances hold comes back to 0.
    settle_within(NO_HANG, || {
        rt.get_container_stats(&id).unwrap().memory_bytes == 0
    });
    assert_eq!(rt.get_container_stats(&id).unwrap().memory_bytes, 0);
    assert_eq!(counts(address, &["/c"]), ["1"]);
    assert_eq!(instances(&rt, &id), 2);
}

#[test]
fn reuse_limits_are_checked() {
    for tweak in [
        (|c: &mut WasmConfig| c.http_max_instance_reuse_count = Some(0)) as fn(&mut WasmConfig),
        |c| c.http_max_instance_concurrent_reuse_count = Some(0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = WasmConfig {
            cache_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        tweak(&mut config);
        let error = WasmRuntime::new(config).err().expect("refused");
        assert!(error.to_string().contains("reuse_count"), "{error}");
    }
}

/// The WASI test suite's WASIp3 service (`wasi:http/handler@0.3.0`): `GET /`
/// answers `hey`.
fn p3_service() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance/wasip3/http-service.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_p3_service_reuses_its_instances_in_turn_and_at_once_within_its_limits() {
    let (_dir, rt) = runtime_with(2, |_| {});
    let (id, address) = serve(&rt, "p3", &service_spec(), &p3_service());
    for _ in 0..20 {
        let reply = get(address, "/");
        assert_eq!((reply.status, reply.text().as_str()), (200, "hey\n"));
    }
    assert_eq!(instances(&rt, &id), 1);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                (0..10)
                    .map(|_| get(address, "/").status)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), [200; 10]);
    }
    // 80 requests at up to 8 at once: far fewer instances than requests.
    let made = instances(&rt, &id);
    assert!(made < 20, "{made} instances for 100 requests");

    let (_dir, rt) = runtime_with(2, |c| c.http_max_instance_reuse_count = Some(1));
    let (id, address) = serve(&rt, "p3-fresh", &service_spec(), &p3_service());
    for _ in 0..5 {
        assert_eq!(get(address, "/").status, 200);
    }
    assert_eq!(instances(&rt, &id), 5);
}

/// Counts its requests in memory, in three places, and answers the three
/// counts as digits: a byte of its data segment (`h` at 1024, the module's
/// image), a zeroed word at 1 MiB and one at 40 MiB (its memory grown past
/// both on an instance's first request).
fn memory_counting_handler() -> Vec<u8> {
    handler(
        "",
        r#"(if (i32.lt_u (memory.size) (i32.const 700))
               (then (if (i32.eq (memory.grow (i32.const 700)) (i32.const -1)) (then unreachable))))
           (i32.store8 (i32.const 1024) (i32.add (i32.load8_u (i32.const 1024)) (i32.const 1)))
           (i32.store (i32.const 1048576) (i32.add (i32.load (i32.const 1048576)) (i32.const 1)))
           (i32.store (i32.const 41943040) (i32.add (i32.load (i32.const 41943040)) (i32.const 1)))
           (i32.store8 (i32.const 1100) (i32.add (i32.const 48)
               (i32.sub (i32.load8_u (i32.const 1024)) (i32.const 104))))
           (i32.store8 (i32.const 1101) (i32.add (i32.const 48) (i32.load (i32.const 1048576))))
           (i32.store8 (i32.const 1102) (i32.add (i32.const 48) (i32.load (i32.const 41943040))))
           (call $respond (local.get $out) (i32.const 200) (i32.const 1100) (i32.const 3))"#,
    )
}

/// A reused instance's memory is reset whole when it goes — its image, the
/// pages it zeroed within what its slot keeps resident, and those past —
/// so the next instance, in the same pooled slot, starts from the module's
/// own contents.
#[test]
fn the_next_instance_starts_from_the_modules_memory_not_the_last_ones() {
    let (_dir, rt) = runtime_with(1, |c| c.http_max_instance_reuse_count = Some(3));
    let (id, address) = serve(&rt, "memory", &service_spec(), &memory_counting_handler());
    assert_eq!(
        counts(address, &["/"; 8]),
        ["111", "222", "333", "111", "222", "333", "111", "222"]
    );
    assert_eq!(instances(&rt, &id), 3);
}
