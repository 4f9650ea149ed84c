//! What a guest's store holds: its WASI context and the limiter that accounts its memory.

use crate::stats::StatsCell;
use std::fmt;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
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
    Preview2 { ctx: WasiCtx, table: ResourceTable },
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

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        match &mut self.wasi {
            Wasi::Preview2 { ctx, table } => WasiCtxView { ctx, table },
            Wasi::Preview1(_) => unreachable!("a module store was linked to WASIp2"),
        }
    }
}

/// Most table elements a guest may have (8 bytes each on the host).
const MAX_TABLE_ELEMENTS: usize = 10_000_000;

/// Enforces the memory limit and records every growth in the container's stats.
pub(crate) struct MemoryLimiter {
    pub(crate) limit: Option<u64>,
    pub(crate) trap_on_refusal: bool,
    pub(crate) stats: Arc<StatsCell>,
}

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
        if let Some(limit) = self.limit {
            if desired as u64 > limit {
                if self.trap_on_refusal {
                    return Err(wasmtime::Error::new(MemoryLimitExceeded {
                        limit,
                        desired: desired as u64,
                    }));
                }
                return Ok(false);
            }
        }
        self.stats.grew(current, desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
