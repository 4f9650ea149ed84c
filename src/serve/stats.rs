//! What a service counts: requests by outcome and status class, connections,
//! latency percentiles (a fixed log-scale histogram: no allocation per request),
//! and the resources its request instances used.

use crate::guest::host::MemoryBudget;
use crate::guest::stats::StatsCell;
use crate::settings::{ContainerStats, HttpStats};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Buckets per power of two of microseconds.
const SUB_BUCKETS: usize = 4;
/// Powers of two covered: 1 µs to 2^40 µs (12 days).
const OCTAVES: usize = 40;

/// Why a request (or connection) was refused: the `reason` label of
/// `wasmpool_http_refused_total`.
#[derive(Clone, Copy)]
pub(crate) enum Refusal {
    /// Too many requests in flight, and the wait for a place ran out.
    InFlight = 0,
    /// No instance could be made now: the service's request instances hold
    /// its memory budget, or its on-demand code is being compiled.
    Busy = 1,
    /// A body larger than `http_max_request_body`.
    BodyTooLarge = 2,
    /// `http_max_connections` connections were open.
    Connections = 3,
    /// The service was stopping.
    Stopping = 4,
}

/// The `reason` label values, by [`Refusal`].
pub(crate) const REFUSALS: [&str; 5] = [
    "in_flight",
    "busy",
    "body_too_large",
    "connections",
    "stopping",
];

/// Upper bounds (seconds) of `wasmpool_http_request_duration_seconds`'s buckets: Prometheus's defaults.
pub(crate) const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Status codes counted one by one: 100 to 599 (others count as 599's neighbours, clamped).
const CODES: usize = 500;

/// What the metrics read of a service: answers by status code, the
/// duration histogram, refusals by reason.
pub(crate) struct HttpFigures {
    pub(crate) by_code: Vec<(u16, u64)>,
    /// Cumulative counts at each of [`DURATION_BUCKETS`], then all.
    pub(crate) buckets: Vec<(f64, u64)>,
    pub(crate) count: u64,
    pub(crate) sum_seconds: f64,
    pub(crate) in_flight: u64,
    pub(crate) instances: u64,
    pub(crate) refused: [u64; 5],
}

/// A service's counters.
pub(crate) struct ServiceStats {
    started: Instant,
    served: AtomicU64,
    refused: AtomicU64,
    refused_by: [AtomicU64; 5],
    by_code: [AtomicU64; CODES],
    /// Answers at most each of [`DURATION_BUCKETS`] (not cumulative), then beyond.
    durations: [AtomicU64; 12],
    duration_usec: AtomicU64,
    by_class: [AtomicU64; 5],
    connections: AtomicU64,
    latency: [AtomicU64; OCTAVES * SUB_BUCKETS],
    /// CPU, fuel and peak memory of request instances that ended.
    cpu_usec: AtomicU64,
    fuel: AtomicU64,
    /// Request instances running now, by request number: their live figures.
    live: Mutex<HashMap<u64, Arc<StatsCell>>>,
    /// The memory all its request instances share: what they hold together.
    memory: Arc<MemoryBudget>,
    /// Requests being handled now.
    in_flight: AtomicU64,
    /// Instances made to handle requests.
    instances: AtomicU64,
}

impl ServiceStats {
    pub(crate) fn new(memory: Arc<MemoryBudget>) -> Self {
        ServiceStats {
            started: Instant::now(),
            served: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            refused_by: Default::default(),
            by_code: std::array::from_fn(|_| AtomicU64::new(0)),
            durations: Default::default(),
            duration_usec: AtomicU64::new(0),
            by_class: Default::default(),
            connections: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            cpu_usec: AtomicU64::new(0),
            fuel: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
            memory,
            in_flight: AtomicU64::new(0),
            instances: AtomicU64::new(0),
        }
    }

    /// An answer went out with `status`, `latency` after the request arrived.
    pub(crate) fn answered(&self, status: u16, latency: Duration, by_handler: bool) {
        if by_handler {
            self.served.fetch_add(1, Ordering::Relaxed);
        }
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        self.latency[bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
        let code = usize::from(status.clamp(100, 599) - 100);
        self.by_code[code].fetch_add(1, Ordering::Relaxed);
        let seconds = latency.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|upper| seconds <= *upper)
            .unwrap_or(DURATION_BUCKETS.len());
        self.durations[bucket].fetch_add(1, Ordering::Relaxed);
        let usec = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.duration_usec.fetch_add(usec, Ordering::Relaxed);
    }

    /// A request or connection was refused, for `reason`.
    pub(crate) fn refused(&self, reason: Refusal) {
        if let Refusal::InFlight = reason {
            // `HttpStats::refused` counts these, as it always has.
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        self.refused_by[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// What the metrics show of the service.
    pub(crate) fn figures(&self) -> HttpFigures {
        let by_code = (0..CODES)
            .filter_map(|i| {
                let n = self.by_code[i].load(Ordering::Relaxed);
                (n > 0).then(|| (100 + i as u16, n))
            })
            .collect();
        let mut total = 0;
        let mut buckets = Vec::with_capacity(DURATION_BUCKETS.len() + 1);
        for (i, upper) in DURATION_BUCKETS.iter().enumerate() {
            total += self.durations[i].load(Ordering::Relaxed);
            buckets.push((*upper, total));
        }
        total += self.durations[DURATION_BUCKETS.len()].load(Ordering::Relaxed);
        buckets.push((f64::INFINITY, total));
        HttpFigures {
            by_code,
            buckets,
            count: total,
            sum_seconds: self.duration_usec.load(Ordering::Relaxed) as f64 / 1e6,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            instances: self.instances.load(Ordering::Relaxed),
            refused: std::array::from_fn(|i| self.refused_by[i].load(Ordering::Relaxed)),
        }
    }

    /// A connection opened; it counts as open until the guard drops.
    pub(crate) fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// A request instance began: its figures count while it runs.
    /// A request is being handled (it holds an in-flight place).
    pub(crate) fn entered(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request was handled.
    pub(crate) fn left(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// An instance was made to handle requests.
    pub(crate) fn instance_made(&self) {
        self.instances.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn request_began(&self, request: u64, cell: &Arc<StatsCell>) {
        self.live.lock().insert(request, cell.clone());
    }

    /// A request instance ended: its figures join the totals.
    pub(crate) fn request_ended(&self, request: u64) {
        let Some(cell) = self.live.lock().remove(&request) else {
            return;
        };
        let figures = cell.snapshot(0);
        self.cpu_usec
            .fetch_add(figures.cpu_usage_usec, Ordering::Relaxed);
        self.fuel
            .fetch_add(figures.fuel_consumed, Ordering::Relaxed);
    }

    /// The container's stats: sums over its request instances (memory: what
    /// they hold together now, and the most they held at once), and its requests.
    pub(crate) fn snapshot(
        &self,
        log_lines_dropped: u64,
        ended: Option<Instant>,
    ) -> ContainerStats {
        let mut cpu = self.cpu_usec.load(Ordering::Relaxed);
        let mut fuel = self.fuel.load(Ordering::Relaxed);
        let live: Vec<_> = self.live.lock().values().cloned().collect();
        for cell in &live {
            let figures = cell.snapshot(0);
            cpu += figures.cpu_usage_usec;
            fuel += figures.fuel_consumed;
        }
        let latency = |q| self.percentile(q);
        ContainerStats {
            cpu_usage_usec: cpu,
            memory_bytes: self.memory.used(),
            memory_peak_bytes: self.memory.peak(),
            memory_limit: self.memory.limit,
            fuel_consumed: fuel,
            wall_time: ended.unwrap_or_else(Instant::now) - self.started,
            log_lines_dropped,
            http: Some(HttpStats {
                served: self.served.load(Ordering::Relaxed),
                in_flight: self.in_flight.load(Ordering::Relaxed),
                instances: self.instances.load(Ordering::Relaxed),
                refused: self.refused.load(Ordering::Relaxed),
                by_class: std::array::from_fn(|i| self.by_class[i].load(Ordering::Relaxed)),
                connections: self.connections(),
                latency_p50: latency(0.50),
                latency_p90: latency(0.90),
                latency_p99: latency(0.99),
            }),
        }
    }

    /// The upper bound of the bucket holding the `q` quantile of latencies.
    fn percentile(&self, q: f64) -> Duration {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_upper(bucket);
            }
        }
        bucket_upper(counts.len() - 1)
    }
}

/// Counts a connection as open while it lives.
pub(crate) struct ConnectionGuard(Arc<ServiceStats>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The bucket of `latency`: 4 per power of two of microseconds.
fn bucket_of(latency: Duration) -> usize {
    let micros = latency.as_micros().max(1) as f64;
    let index = (micros.log2() * SUB_BUCKETS as f64).floor() as usize;
    index.min(OCTAVES * SUB_BUCKETS - 1)
}

fn bucket_upper(bucket: usize) -> Duration {
    let micros = 2f64.powf((bucket + 1) as f64 / SUB_BUCKETS as f64);
    Duration::from_nanos((micros * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_buckets_of_the_answers() {
        let stats = ServiceStats::new(Arc::new(MemoryBudget::new(u64::MAX)));
        for _ in 0..98 {
            stats.answered(200, Duration::from_micros(100), true);
        }
        stats.answered(500, Duration::from_millis(50), true);
        stats.answered(503, Duration::from_millis(50), false);
        let p50 = stats.percentile(0.5);
        assert!(
            p50 >= Duration::from_micros(100) && p50 < Duration::from_micros(120),
            "{p50:?}"
        );
        let p99 = stats.percentile(0.99);
        assert!(
            p99 >= Duration::from_millis(50) && p99 < Duration::from_millis(60),
            "{p99:?}"
        );
        let http = stats.snapshot(0, None).http.unwrap();
        assert_eq!(http.served, 99);
        assert_eq!(http.by_class, [0, 98, 0, 0, 2]);
    }
}
