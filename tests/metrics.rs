//! The metrics, parsed back by a Prometheus text parser after a known
//! workload: every count exact, a removed container's series gone.

use crate::common::imports::*;
use crate::common::service::{get, hello_handler, send};
use crate::common::*;
use crate::serving::{serve, service_spec};
use prometheus_parse::{Scrape, Value};
use std::time::Duration;
use wasmpool::{ContainerId, Outcome, Runtime, ServiceSpec, WasmConfig};

fn scrape(text: &str) -> Scrape {
    assert!(text.ends_with("# EOF\n"), "{text}");
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("the metrics parse")
}

/// The value of the sample `name` whose labels include `labels`; 0 if none.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert!(
        found.len() <= 1,
        "{name} {labels:?}: {} series",
        found.len()
    );
    match found.first().map(|s| &s.value) {
        None => 0.0,
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        Some(other) => panic!("{name} is {other:?}"),
    }
}

#[test]
fn a_known_workload_is_counted_exactly() {
    let (_dir, rt) = runtime_with(2, |config: &mut WasmConfig| {
        config.http_max_request_body = 1000;
    });
    for (n, code) in [0, 0, 3].into_iter().enumerate() {
        let (_, ended) = launch(
            &rt,
            &format!("exit-{n}"),
            &ServiceSpec::default(),
            &wasm(&exit_module(code)),
        );
        assert_eq!(wait_bounded(&ended), Outcome::Exited(code));
    }
    let trap = wasm(r#"(module (func (export "_start") unreachable))"#);
    let (_, ended) = launch(&rt, "trap", &ServiceSpec::default(), &trap);
    assert!(matches!(wait_bounded(&ended), Outcome::Trapped(_)));
    let (sleeper, ended) = launch(
        &rt,
        "sleeper",
        &ServiceSpec::default(),
        &wasm(&ready_sleep_module(60_000_000_000)),
    );
    until_ready(&rt, &sleeper);
    rt.stop_container(&sleeper, Duration::from_secs(5)).unwrap();
    assert_eq!(wait_bounded(&ended), Outcome::Stopped);
    // A created container never started is no start.
    rt.create_container_from_bytes(
        &ContainerId::new("idle", 1),
        &ServiceSpec::default(),
        wasm(&exit_module(0)),
    )
    .unwrap();
    let kv = ContainerId::new("kv", 1);
    rt.create_container_from_bytes(
        &kv,
        &ServiceSpec::default(),
        imports_program(&[
            Open("b".into()),
            Set("x".into(), b"1".to_vec()),
            Set("y".into(), b"2".to_vec()),
            Get("x".into()),
            Increment("n".into(), 1),
        ]),
    )
    .unwrap();
    assert_eq!(wait_bounded(&rt.start(&kv).unwrap()), Outcome::Exited(0));
    let (web, address) = serve(&rt, "web", &service_spec(), &hello_handler());
    for _ in 0..5 {
        assert_eq!(get(address, "/").status, 200);
    }
    assert_eq!(send(address, "POST", "/", "", &[0; 2000]).status, 413);

    // The client has each whole answer before the server gives back the
    // request's place (the refused body is still being drained): the gauge
    // settles at 0, within a bound.
    let web_name = web.to_string();
    settle_within(Duration::from_secs(30), || {
        let m = scrape(&rt.metrics().encode());
        value(&m, "wasmpool_http_in_flight", &[("container", &web_name)]) == 0.0
    });
    let text = rt.metrics().encode();
    let m = scrape(&text);
    // 3 exits, a trap, a stop, the keyvalue guest and the service started.
    assert_eq!(value(&m, "wasmpool_guest_starts_total", &[]), 7.0, "{text}");
    assert_eq!(
        value(
            &m,
            "wasmpool_guest_outcomes_total",
            &[("outcome", "exited")]
        ),
        4.0
    );
    assert_eq!(
        value(
            &m,
            "wasmpool_guest_outcomes_total",
            &[("outcome", "trapped")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "wasmpool_guest_outcomes_total",
            &[("outcome", "stopped")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "wasmpool_guest_outcomes_total",
            &[("outcome", "out_of_fuel")]
        ),
        0.0
    );
    assert_eq!(
        value(&m, "wasmpool_containers", &[("state", "pending")]),
        1.0
    );
    assert_eq!(
        value(&m, "wasmpool_containers", &[("state", "running")]),
        1.0
    );
    assert_eq!(
        value(&m, "wasmpool_containers", &[("state", "exited")]),
        4.0
    );
    assert_eq!(
        value(&m, "wasmpool_containers", &[("state", "failed")]),
        2.0
    );
    let workers = value(&m, "wasmpool_workers", &[("state", "busy")])
        + value(&m, "wasmpool_workers", &[("state", "idle")]);
    assert_eq!(workers, 2.0);
    let web_id = web.to_string();
    let web_label = ("container", web_id.as_str());
    assert_eq!(
        value(
            &m,
            "wasmpool_http_requests_total",
            &[web_label, ("code", "200")]
        ),
        5.0
    );
    assert_eq!(
        value(
            &m,
            "wasmpool_http_requests_total",
            &[web_label, ("code", "413")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "wasmpool_http_refused_total",
            &[web_label, ("reason", "body_too_large")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "wasmpool_http_refused_total",
            &[web_label, ("reason", "in_flight")]
        ),
        0.0
    );
    assert_eq!(value(&m, "wasmpool_http_in_flight", &[web_label]), 0.0);
    let histogram = m
        .samples
        .iter()
        .find(|s| {
            s.metric == "wasmpool_http_request_duration_seconds"
                && s.labels.get("container") == Some(&web_id)
        })
        .expect("the duration histogram");
    let Value::Histogram(buckets) = &histogram.value else {
        panic!("{:?}", histogram.value)
    };
    assert_eq!(buckets.last().unwrap().count, 6.0, "{buckets:?}");
    assert!(
        text.contains("wasmpool_http_request_duration_seconds_count{container=\"web-rep-1\"} 6"),
        "{text}"
    );
    let kv_id = kv.to_string();
    let kv_label = ("container", kv_id.as_str());
    assert_eq!(
        value(
            &m,
            "wasmpool_keyvalue_operations_total",
            &[kv_label, ("op", "set")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "wasmpool_keyvalue_operations_total",
            &[kv_label, ("op", "get")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "wasmpool_keyvalue_operations_total",
            &[kv_label, ("op", "increment")]
        ),
        1.0
    );
    assert!(value(&m, "wasmpool_guest_cpu_seconds_total", &[kv_label]) > 0.0);
    // Five distinct artifacts compiled; nothing reused yet.
    assert_eq!(
        value(&m, "wasmpool_compiled_cache_misses_total", &[]),
        6.0,
        "{text}"
    );
    // No label carries what a request sent.
    assert!(!text.contains("POST") && !text.contains("127.0.0.1"));

    // A removed container's series end.
    rt.remove_container(&kv).unwrap();
    let after = scrape(&rt.metrics().encode());
    assert!(after
        .samples
        .iter()
        .all(|s| s.labels.get("container") != Some(&kv_id)));
    // A second container of known bytes reuses their compiled code.
    let (_, ended) = launch(
        &rt,
        "exit-again",
        &ServiceSpec::default(),
        &wasm(&exit_module(0)),
    );
    wait_bounded(&ended);
    let again = scrape(&rt.metrics().encode());
    assert_eq!(
        value(&again, "wasmpool_compiled_cache_hits_total", &[]),
        value(&m, "wasmpool_compiled_cache_hits_total", &[]) + 1.0
    );
    assert_eq!(
        value(&again, "wasmpool_compiled_cache_misses_total", &[]),
        6.0
    );
}

#[test]
fn serve_answers_metrics_on_a_listener_of_its_own() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("hello.wasm");
    std::fs::write(&program, hello_handler()).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wasmpool"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg(&program)
        .env("WASMPOOL_CACHE_DIR", dir.path().join("cache"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut address = |prefix: &str| -> std::net::SocketAddr {
        loop {
            let line = lines
                .next()
                .expect("the server says where it listens")
                .unwrap();
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest
                    .trim_start_matches("http://")
                    .split('/')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
            }
        }
    };
    let metrics = address("Metrics on ");
    let service = address("Serving HTTP on ");
    std::thread::spawn(move || for _ in lines {});
    for _ in 0..3 {
        assert_eq!(get(service, "/").status, 200);
    }
    // Slow clients hold places, each for a bounded time, never the listener:
    // eight idle connections and a half-sent head, then a scrape beside them.
    use std::io::{Read, Write};
    let mut idle: Vec<_> = (0..8)
        .map(|_| std::net::TcpStream::connect(metrics).unwrap())
        .collect();
    idle[0].write_all(b"GET /metr").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(get(metrics, "/metrics").status, 200);
    // They were waited on side by side, not one after another: the first
    // still finishes its request and is answered.
    idle[0]
        .write_all(b"ics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    idle[0]
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let _ = idle[0].read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.80}");
    // Past the bound of places (16), a connection is closed on arrival.
    let flood: Vec<_> = (0..40)
        .map(|_| std::net::TcpStream::connect(metrics).unwrap())
        .collect();
    // Read side by side, each for less than the 5 s a held one is given: a
    // closed one reads end-of-stream, a held one times out.
    let closed = flood
        .into_iter()
        .map(|mut stream| {
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(3)));
                matches!(stream.read(&mut [0u8; 1]), Ok(0))
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|reader| reader.join().unwrap())
        .filter(|closed| *closed)
        .count();
    assert!(closed >= 40 - 16, "{closed} of 40 closed on arrival");
    drop(idle);
    // The places come back: once the held connections time out (5 s), a scrape is answered.
    let started = std::time::Instant::now();
    let reply = loop {
        let reply = std::panic::catch_unwind(|| get(metrics, "/metrics"));
        match reply {
            Ok(reply) => break reply,
            Err(_) if started.elapsed() < std::time::Duration::from_secs(60) => {
                std::thread::sleep(std::time::Duration::from_millis(500))
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some(wasmpool::METRICS_CONTENT_TYPE)
    );
    let m = scrape(&reply.text());
    assert_eq!(
        value(
            &m,
            "wasmpool_http_requests_total",
            &[("container", "hello.wasm-rep-1"), ("code", "200")]
        ),
        3.0
    );
    // The service's own port never answers metrics: its handler does.
    assert_ne!(metrics, service);
}
