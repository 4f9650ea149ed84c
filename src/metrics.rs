//! What operators scrape: a snapshot of a runtime's counters
//! ([`WasmRuntime::metrics`](crate::WasmRuntime::metrics)), rendered by
//! `prometheus-client` in the OpenMetrics text format that Prometheus reads.
//!
//! No label carries text a request controls (paths, hosts): labels are
//! container ids, status codes and fixed words, and a container's series end
//! when it is removed, so the number of series is bounded by the containers.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt;

/// The content type of [`Metrics::encode`]'s text, for a `/metrics` answer.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A runtime's metrics at one moment.
///
/// # Examples
/// ```
/// let cache = tempfile::tempdir().unwrap();
/// let runtime = wasmpool::WasmRuntime::new(wasmpool::WasmConfig {
///     cache_dir: cache.path().to_path_buf(),
///     ..Default::default()
/// })?;
/// let text = runtime.metrics().encode();
/// assert!(text.contains("# TYPE wasmpool_guest_starts counter"));
/// assert!(text.contains("wasmpool_guest_starts_total 0"));
/// # Ok::<(), wasmpool::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Containers started (`wasmpool_guest_starts_total`).
    pub guest_starts: u64,
    /// How started containers ended, by outcome: `exited`, `trapped`,
    /// `out_of_fuel`, `memory_limit`, `deadline`, `stopped`, `failed`,
    /// `panicked` (`wasmpool_guest_outcomes_total{outcome}`).
    pub guest_outcomes: Vec<(&'static str, u64)>,
    /// Containers by state: `pending`, `running`, `exited`, `failed` (`wasmpool_containers{state}`).
    pub containers: Vec<(&'static str, u64)>,
    /// Workers running a guest, and waiting for one (`wasmpool_workers{state}`: `busy`, `idle`).
    pub workers_busy: u64,
    /// Workers waiting for a guest.
    pub workers_idle: u64,
    /// Guests waiting for a worker (`wasmpool_run_queue_depth`).
    pub run_queue_depth: u64,
    /// Compiled code reused — from memory or the compiled cache on disk — and
    /// compiled (`wasmpool_compiled_cache_{hits,misses}_total`).
    pub compiled_cache_hits: u64,
    /// Artifacts compiled.
    pub compiled_cache_misses: u64,
    /// Each container's own series.
    pub per_container: Vec<ContainerMetrics>,
}

/// One container's series, labelled `container` with its id (`web-rep-1`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerMetrics {
    /// The container's id, as it displays (`web-rep-1`).
    pub container: String,
    /// CPU time of its guest, its request instances' too (`wasmpool_guest_cpu_seconds_total`).
    pub cpu_seconds: f64,
    /// Linear memory it holds now (`wasmpool_guest_memory_bytes`).
    pub memory_bytes: u64,
    /// Text of log lines dropped past its log bound (`wasmpool_log_bytes_dropped_total`).
    pub log_bytes_dropped: u64,
    /// wasi:keyvalue operations, by `op` (`wasmpool_keyvalue_operations_total{op}`);
    /// only the kinds it made.
    pub keyvalue_operations: Vec<(&'static str, u64)>,
    /// For a service.
    pub http: Option<HttpMetrics>,
}

/// A service's requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpMetrics {
    /// Answers by status code (`wasmpool_http_requests_total{code}`).
    pub requests: Vec<(u16, u64)>,
    /// Cumulative answers within each bound, in seconds, the last `+Inf`
    /// (`wasmpool_http_request_duration_seconds`).
    pub duration_buckets: Vec<(f64, u64)>,
    /// Answers counted in the histogram.
    pub duration_count: u64,
    /// Their durations added up, in seconds.
    pub duration_sum_seconds: f64,
    /// Requests whose handler runs now (`wasmpool_http_in_flight`).
    pub in_flight: u64,
    /// Instances made to handle requests (`wasmpool_http_instances_total`).
    pub instances: u64,
    /// Refused requests and connections, by `reason`: `in_flight`, `busy`,
    /// `body_too_large`, `connections`, `stopping` (`wasmpool_http_refused_total{reason}`).
    pub refused: Vec<(&'static str, u64)>,
}

impl Metrics {
    /// The snapshot in the text format Prometheus scrapes (OpenMetrics 1.0:
    /// counters end in `_total`, the text ends in `# EOF`); serve it as
    /// [`METRICS_CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Snapshot(self.clone())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String cannot fail");
        text
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

#[derive(Debug)]
struct Snapshot(Metrics);

type Labels = Vec<(&'static str, String)>;

/// One metric family of whole numbers: each series its labels and value.
fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        let mut one = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => one.encode_counter::<NoLabelSet, u64, u64>(&value, None)?,
            _ => one.encode_gauge(&value)?,
        }
    }
    Ok(())
}

fn label(name: &'static str, value: impl Into<String>) -> Labels {
    vec![(name, value.into())]
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let m = &self.0;
        let counter = MetricType::Counter;
        let gauge = MetricType::Gauge;
        let e = &mut encoder;
        family(
            e,
            "wasmpool_guest_starts",
            "Containers started.",
            counter,
            [(Vec::new(), m.guest_starts)],
        )?;
        family(
            e,
            "wasmpool_guest_outcomes",
            "How started containers ended.",
            counter,
            m.guest_outcomes
                .iter()
                .map(|(o, n)| (label("outcome", *o), *n)),
        )?;
        family(
            e,
            "wasmpool_containers",
            "Containers by state.",
            gauge,
            m.containers.iter().map(|(s, n)| (label("state", *s), *n)),
        )?;
        family(
            e,
            "wasmpool_workers",
            "Worker threads running a guest (busy) or waiting for one (idle).",
            gauge,
            [
                (label("state", "busy"), m.workers_busy),
                (label("state", "idle"), m.workers_idle),
            ],
        )?;
        family(
            e,
            "wasmpool_run_queue_depth",
            "Guests waiting for a worker.",
            gauge,
            [(Vec::new(), m.run_queue_depth)],
        )?;
        family(
            e,
            "wasmpool_compiled_cache_hits",
            "Compiled code reused, from memory or the compiled cache.",
            counter,
            [(Vec::new(), m.compiled_cache_hits)],
        )?;
        family(
            e,
            "wasmpool_compiled_cache_misses",
            "Artifacts compiled.",
            counter,
            [(Vec::new(), m.compiled_cache_misses)],
        )?;
        let each = &m.per_container;
        let id = |c: &ContainerMetrics| label("container", c.container.clone());
        {
            let mut metric = e.encode_descriptor(
                "wasmpool_guest_cpu_seconds",
                "CPU time of a container's guest and its request instances.",
                None,
                counter,
            )?;
            for c in each {
                metric
                    .encode_family(&id(c))?
                    .encode_counter::<NoLabelSet, f64, f64>(&c.cpu_seconds, None)?;
            }
        }
        family(
            e,
            "wasmpool_guest_memory_bytes",
            "Linear memory a container holds now.",
            gauge,
            each.iter().map(|c| (id(c), c.memory_bytes)),
        )?;
        family(
            e,
            "wasmpool_log_bytes_dropped",
            "Text of log lines dropped past a container's log bound.",
            counter,
            each.iter().map(|c| (id(c), c.log_bytes_dropped)),
        )?;
        family(
            e,
            "wasmpool_keyvalue_operations",
            "wasi:keyvalue operations a container made.",
            counter,
            each.iter().flat_map(|c| {
                c.keyvalue_operations.iter().map(move |(op, n)| {
                    let mut labels = id(c);
                    labels.push(("op", op.to_string()));
                    (labels, *n)
                })
            }),
        )?;
        let services = || each.iter().filter_map(|c| Some((c, c.http.as_ref()?)));
        family(
            e,
            "wasmpool_http_requests",
            "Answers a service sent, by status code.",
            counter,
            services().flat_map(|(c, http)| {
                http.requests.iter().map(move |(code, n)| {
                    let mut labels = id(c);
                    labels.push(("code", code.to_string()));
                    (labels, *n)
                })
            }),
        )?;
        {
            let mut metric = e.encode_descriptor(
                "wasmpool_http_request_duration_seconds",
                "Time from a request's arrival to its answer's head.",
                None,
                MetricType::Histogram,
            )?;
            for (c, http) in services() {
                // prometheus-client adds the buckets up itself: give it each one's own count.
                let mut below = 0;
                let own: Vec<(f64, u64)> = http
                    .duration_buckets
                    .iter()
                    .map(|(upper, cumulative)| {
                        let count = cumulative.saturating_sub(below);
                        below = *cumulative;
                        (*upper, count)
                    })
                    .collect();
                metric
                    .encode_family(&id(c))?
                    .encode_histogram::<NoLabelSet>(
                        http.duration_sum_seconds,
                        http.duration_count,
                        &own,
                        None,
                    )?;
            }
        }
        family(
            e,
            "wasmpool_http_in_flight",
            "Requests whose handler runs now.",
            gauge,
            services().map(|(c, http)| (id(c), http.in_flight)),
        )?;
        family(
            e,
            "wasmpool_http_instances",
            "Instances a service made to handle requests: one a request, unless reused.",
            counter,
            services().map(|(c, http)| (id(c), http.instances)),
        )?;
        family(
            e,
            "wasmpool_http_refused",
            "Requests and connections a service refused, by reason.",
            counter,
            services().flat_map(|(c, http)| {
                http.refused.iter().map(move |(reason, n)| {
                    let mut labels = id(c);
                    labels.push(("reason", reason.to_string()));
                    (labels, *n)
                })
            }),
        )?;
        Ok(())
    }
}
