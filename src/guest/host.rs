//! What a guest's store holds: its WASI context and the limiter that accounts its memory.

use super::stats::StatsCell;
use http_body_util::BodyExt;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, Result as HttpResult, WasiBody, WasiHttpCtx,
    WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use wasmtime::{AsContextMut, Caller, Extern, Linker};
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as wasi_p1, WasiSnapshotPreview1};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The data of one guest's `Store`.
pub(crate) struct HostState {
    pub(crate) wasi: Wasi,
    pub(crate) limiter: MemoryLimiter,
}

/// The WASI context, shaped for the kind of artifact the store runs.
pub(crate) enum Wasi {
    Preview1(WasiP1Ctx),
    Preview2 {
        ctx: WasiCtx,
        table: ResourceTable,
        http: WasiHttpCtx,
        hooks: HttpHooks,
        imports: Imports,
    },
}

/// What a component may import beyond WASI: its config values, its
/// service's buckets, its log. Shared handles only: a store that imports
/// none of these pays a few reference counts.
pub(crate) struct Imports {
    pub(crate) config: Arc<super::config::ConfigValues>,
    pub(crate) keyvalue: super::keyvalue::KeyValue,
    pub(crate) log: super::logging::GuestLog,
    /// wasi:tls: rustls with `network`, else a provider that refuses.
    pub(crate) tls: wasmtime_wasi_tls::WasiTlsCtx,
}

/// wasi:http's policy for one guest: outgoing requests only with `network`.
pub(crate) struct HttpHooks {
    pub(crate) network: bool,
}

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = HttpResult<()>> + Send>,
    ) -> Box<dyn Future<Output = HttpResult<(http::Response<WasiBody>, ResponseIo)>> + Send> {
        let allowed = self.network;
        drop(fut);
        Box::new(async move {
            if !allowed {
                // wasi:http's own answer, inside the guest: never a trap or a host error.
                return Err(HttpError::HttpRequestDenied);
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as ResponseIo,
            ))
        })
    }
}

type ResponseIo = Box<dyn Future<Output = HttpResult<()>> + Send>;

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        match &mut self.wasi {
            Wasi::Preview2 {
                table, http, hooks, ..
            } => WasiHttpCtxView {
                ctx: http,
                table,
                hooks,
            },
            Wasi::Preview1(_) => unreachable!("a module store was linked to wasi:http"),
        }
    }
}

impl HostState {
    /// The WASIp1 context; a store is only ever linked to the WASI of its artifact's kind.
    pub(crate) fn preview1(&mut self) -> &mut WasiP1Ctx {
        match &mut self.wasi {
            Wasi::Preview1(ctx) => ctx,
            Wasi::Preview2 { .. } => unreachable!("a component store was linked to WASIp1"),
        }
    }
}

impl HostState {
    /// The component's resource table.
    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        match &mut self.wasi {
            Wasi::Preview1(ctx) => ctx.ctx().table,
            Wasi::Preview2 { table, .. } => table,
        }
    }

    /// What the component imports beyond WASI.
    pub(crate) fn imports(&mut self) -> &mut Imports {
        match &mut self.wasi {
            Wasi::Preview2 { imports, .. } => imports,
            Wasi::Preview1(_) => unreachable!("a module store was linked to a component import"),
        }
    }

    /// The buckets the component may open: its service's.
    pub(crate) fn keyvalue(&mut self) -> &super::keyvalue::KeyValue {
        &self.imports().keyvalue
    }

    /// Whether `entries` more resources fit the store's resource table.
    fn table_has_room(&mut self, entries: usize) -> bool {
        let table = self.table();
        let probes: Vec<_> = (0..entries).map_while(|_| table.push(()).ok()).collect();
        let room = probes.len() == entries;
        for probe in probes {
            let _ = table.delete(probe);
        }
        room
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        match &mut self.wasi {
            Wasi::Preview2 { ctx, table, .. } => WasiCtxView { ctx, table },
            Wasi::Preview1(_) => unreachable!("a module store was linked to WASIp2"),
        }
    }
}

/// Most table elements a guest may have, whatever its memory limit.
const MAX_TABLE_ELEMENTS: usize = 10_000_000;
/// Host bytes one table element costs, counted against the memory limit.
const TABLE_ELEMENT_BYTES: u64 = 8;

/// Enforces the memory limit as one budget for the whole store — every linear
/// memory and every table together — and records growth in the container's stats.
pub(crate) struct MemoryLimiter {
    limit: Option<u64>,
    trap_on_refusal: bool,
    stats: Arc<StatsCell>,
    /// Bytes of every linear memory of the store.
    memory_bytes: u64,
    /// Host bytes of every table of the store.
    table_bytes: u64,
    /// A budget the store shares with others (a service's request instances):
    /// what the store holds is taken from it, and given back when it is dropped.
    shared: Option<Arc<MemoryBudget>>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: Option<u64>, trap_on_refusal: bool, stats: Arc<StatsCell>) -> Self {
        MemoryLimiter {
            limit,
            trap_on_refusal,
            stats,
            memory_bytes: 0,
            table_bytes: 0,
            shared: None,
        }
    }

    /// The limiter, also taking what the store holds from `budget`.
    pub(crate) fn sharing(mut self, budget: Option<Arc<MemoryBudget>>) -> Self {
        self.shared = budget;
        self
    }

    /// Takes `added` bytes from the shared budget, if there is one; a refusal
    /// traps with [`MemoryBudgetFull`] (the budget is busy, not the guest wrong).
    fn take_shared(&self, added: u64) -> wasmtime::Result<()> {
        match &self.shared {
            Some(budget) if !budget.take(added) => Err(wasmtime::Error::new(MemoryBudgetFull {
                limit: budget.limit,
            })),
            _ => Ok(()),
        }
    }

    /// Whether the store may hold `total` bytes; an error when the refusal should trap.
    fn admits(&self, total: u64, desired: u64) -> wasmtime::Result<bool> {
        match self.limit {
            Some(limit) if total > limit => {
                if self.trap_on_refusal {
                    return Err(wasmtime::Error::new(MemoryLimitExceeded { limit, desired }));
                }
                Ok(false)
            }
            _ => Ok(true),
        }
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        if let Some(budget) = &self.shared {
            budget.give_back(self.memory_bytes.saturating_add(self.table_bytes));
        }
    }
}

/// Memory several stores share: a service's request instances together hold at
/// most `limit` bytes of linear memories and tables.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    pub(crate) limit: u64,
    used: std::sync::atomic::AtomicU64,
    peak: std::sync::atomic::AtomicU64,
}

impl MemoryBudget {
    pub(crate) fn new(limit: u64) -> Self {
        MemoryBudget {
            limit,
            used: std::sync::atomic::AtomicU64::new(0),
            peak: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The most bytes they held at once.
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes the stores sharing it hold now.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn take(&self, bytes: u64) -> bool {
        use std::sync::atomic::Ordering::AcqRel;
        match self
            .used
            .fetch_update(AcqRel, std::sync::atomic::Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            }) {
            Ok(before) => {
                self.peak
                    .fetch_max(before + bytes, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    fn give_back(&self, bytes: u64) {
        self.used
            .fetch_sub(bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The error a store traps with when the budget it shares has no room: a
/// request answered `503` (try again), not a fault of its handler.
#[derive(Debug)]
pub(crate) struct MemoryBudgetFull {
    pub(crate) limit: u64,
}

impl fmt::Display for MemoryBudgetFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the service's memory budget of {} bytes is in use by its other requests",
            self.limit
        )
    }
}

impl std::error::Error for MemoryBudgetFull {}

/// The error a refused `memory.grow` traps with when the spec asks for a trap.
#[derive(Debug)]
pub(crate) struct MemoryLimitExceeded {
    pub(crate) limit: u64,
    pub(crate) desired: u64,
}

impl fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory limit of {} bytes exceeded: growth to {} bytes refused",
            self.limit, self.desired
        )
    }
}

impl std::error::Error for MemoryLimitExceeded {}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let added = (desired as u64).saturating_sub(current as u64);
        let memory = self.memory_bytes.saturating_add(added);
        if !self.admits(memory.saturating_add(self.table_bytes), memory)? {
            return Ok(false);
        }
        self.take_shared(added)?;
        self.memory_bytes = memory;
        self.stats.grew(current, desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        let added = (desired.saturating_sub(current) as u64) * TABLE_ELEMENT_BYTES;
        let tables = self.table_bytes.saturating_add(added);
        if !self.admits(self.memory_bytes.saturating_add(tables), self.memory_bytes)? {
            return Ok(false);
        }
        self.take_shared(added)?;
        self.table_bytes = tables;
        Ok(true)
    }
}

/// WASIp1's errno for "too many open files".
const ERRNO_MFILE: i32 = 33;
/// Table entries a WASIp1 call may need for a moment beyond the descriptor it opens.
const TRANSIENT_ENTRIES: usize = 8;

type PathOpenParams = (i32, i32, i32, i32, i32, i64, i64, i32, i32);

/// Makes `path_open` answer `EMFILE` once the guest holds as many resources as
/// its cap allows, instead of trapping inside wasmtime-wasi: WASIp1's own
/// `path_open` runs only when the resource table has room.
pub(crate) fn add_descriptor_cap(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap_async(
        "wasi_snapshot_preview1",
        "path_open",
        |mut caller: Caller<'_, HostState>,
         (fd, dirflags, path, path_len, oflags, base, inheriting, fdflags, opened): PathOpenParams| {
            Box::new(async move {
                if !caller.data_mut().table_has_room(TRANSIENT_ENTRIES + 1) {
                    return Ok(ERRNO_MFILE);
                }
                // What wasmtime-wasi's own glue does before it calls `path_open`.
                let fuel = caller.as_context_mut().hostcall_fuel();
                let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
                    return Err(wasmtime::Error::msg("missing required memory export"));
                };
                let (bytes, state) = memory.data_and_store_mut(&mut caller);
                let ctx = state.preview1();
                ctx.set_hostcall_fuel(fuel);
                let mut memory = wiggle::GuestMemory::Unshared(bytes);
                wasi_p1::path_open(
                    ctx,
                    &mut memory,
                    fd,
                    dirflags,
                    path,
                    path_len,
                    oflags,
                    base,
                    inheriting,
                    fdflags,
                    opened,
                )
                .await
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
