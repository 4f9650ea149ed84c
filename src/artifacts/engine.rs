//! The wasmtime engines: a pooling one sized from the worker pool, a
//! pooling one for instances that serve many requests (made when first
//! needed), and an on-demand one for artifacts that do not fit the pools' slots.

use crate::settings::WasmConfig;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourcesRequired,
};

/// An engine and its compatibility hash.
pub(crate) struct EngineSet {
    pub(crate) engine: Engine,
    /// The engine's compatibility hash, computed once: it names cache files.
    pub(crate) compat: u64,
    /// Native code found in the compiled cache, and compiled: both engines' together.
    pub(crate) loads: Arc<Loads>,
}

/// How often native code was loaded from the compiled cache (a hit) or
/// compiled (a miss).
#[derive(Default)]
pub(crate) struct Loads {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
}

impl EngineSet {
    fn new(config: &Config, loads: Arc<Loads>) -> wasmtime::Result<Self> {
        let engine = Engine::new(config)?;
        let compat = super::disk_cache::compatibility(&engine);
        Ok(EngineSet {
            engine,
            compat,
            loads,
        })
    }
}

/// Per-module limits of a pooling slot; an artifact over any of them runs on demand.
const MEMORIES_PER_MODULE: u32 = 2;
const TABLES_PER_MODULE: u32 = 4;
const TABLE_ELEMENTS: usize = 100_000;
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 8;
const TABLES_PER_COMPONENT: u32 = 16;
/// Core instances the pool holds per live store, on average.
const CORE_INSTANCES_PER_STORE: u32 = 12;

/// The engines of a runtime. Every store is fuel-metered; none uses epochs.
pub(crate) struct Engines {
    pub(crate) pooled: Option<EngineSet>,
    pub(crate) on_demand: EngineSet,
    /// For instances that serve many requests ([`Engines::reused`]), made
    /// when a service first needs it (and none without pooling).
    reused: OnceLock<Option<EngineSet>>,
    /// The slots its pool has, if it is made.
    reused_stores: Option<u32>,
    loads: Arc<Loads>,
}

impl Engines {
    pub(crate) fn new(config: &WasmConfig) -> wasmtime::Result<Self> {
        let loads = Arc::new(Loads::default());
        let on_demand = EngineSet::new(&base_config(), loads.clone())?;
        let pooled = if config.pooling {
            let mut pool = pooling(pooled_stores(config), config.workers as u32);
            pool.linear_memory_keep_resident(KEEP_RESIDENT)
                .pagemap_scan(dirty_page_scan());
            let mut engine_config = base_config();
            engine_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
            Some(EngineSet::new(&engine_config, loads.clone())?)
        } else {
            None
        };
        Ok(Engines {
            pooled,
            on_demand,
            reused: OnceLock::new(),
            reused_stores: config
                .pooling
                .then(|| (config.workers as u32 * REUSED_STORES_PER_WORKER).max(REUSED_STORES_MIN)),
            loads,
        })
    }

    /// The engine of instances that serve many requests (a `wasi:http/handler@0.3`
    /// service's): its pool resets a memory given back whole, in place, up to
    /// [`REUSED_KEEP_RESIDENT`], so that the next instance in the slot takes
    /// no page faults at all. `None` without pooling, or if it cannot be made.
    pub(crate) fn reused(&self) -> Option<&EngineSet> {
        self.reused
            .get_or_init(|| {
                let stores = self.reused_stores?;
                let mut pool = pooling(stores, stores);
                pool.linear_memory_keep_resident(REUSED_KEEP_RESIDENT)
                    .pagemap_scan(wasmtime::Enabled::No);
                let mut config = base_config();
                config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
                EngineSet::new(&config, self.loads.clone())
                    .map_err(|e| log::warn!("no pooled engine for reused instances: {e:#}"))
                    .ok()
            })
            .as_ref()
    }
}

/// A reused instance's memory, reset in place when its slot is given back:
/// the whole of it up to this size (copied back from the module's image, or
/// zeroed), with no `PAGEMAP_SCAN` (whose 32 regions a CPython heap
/// outgrows) and so no question of swapped pages; past it the rest is
/// `madvise`d away. An instance's ~700 copy-on-write faults, each flushing
/// the other cores' TLBs, become one copy of some MiB per instance (a
/// componentize-py p3 service: 6.2 → 0.1 faults a request, 1.43–1.72×
/// `wasmtime serve` against 0.86–1.02×; 16 and 64 MiB measured the same).
/// At most this much per slot stays resident while idle.
const REUSED_KEEP_RESIDENT: usize = 32 << 20;
/// Slots of the reused instances' pool, per worker and at least: beyond
/// them an instance runs with on-demand allocations.
const REUSED_STORES_PER_WORKER: u32 = 4;
const REUSED_STORES_MIN: u32 = 8;

/// The configuration every engine shares.
pub(crate) fn base_config() -> Config {
    let mut config = Config::new();
    config.consume_fuel(true);
    config
}

/// Most stores the pooling allocator reserves slots for: each pooled memory
/// reserves several GiB of address space, and one process may hold many runtimes.
const MAX_POOLED_STORES: usize = 256;

/// Dirty bytes of a linear memory reset in place (the pages stay resident)
/// when its slot is given back; past them the rest is `madvise`d away. With
/// `PAGEMAP_SCAN` (Linux 6.7+, where nothing is swapped: [`dirty_page_scan`])
/// only pages the guest wrote count, wherever they are: a handler that
/// touches a few pages is reset with no system call that flushes every
/// core's TLB, and takes no page faults next time. At most this much per
/// pooled memory stays resident while idle.
const KEEP_RESIDENT: usize = 256 * 1024;

/// Whether a pooled memory's reset looks for the guest's dirty pages with
/// `PAGEMAP_SCAN`: only where no page of ours can be swapped out (a host
/// without swap, or a cgroup with none). wasmtime 48's scan asks for
/// pages that are present; a dirty page swapped out while its guest ran is
/// neither reset nor `madvise`d away, and the next guest in the slot reads
/// it (reproduced here: a guest that filled 96 MiB under an 80 MiB cgroup
/// with swap left 200+ of its pages to the next one). Without the scan the
/// first [`KEEP_RESIDENT`] bytes are reset in place and the rest is given
/// back whatever its state, at the cost of page faults for guests that
/// write beyond (a ComponentizeJS handler: ~110 against ~21 a request).
fn dirty_page_scan() -> wasmtime::Enabled {
    let swap = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|meminfo| swap_total(&meminfo));
    match swap {
        Some(0) => wasmtime::Enabled::Auto,
        // A Kubernetes pod on a node with swap, say (its default `NoSwap`).
        Some(_) if cgroup_forbids_swap() => wasmtime::Enabled::Auto,
        Some(kib) => {
            log::info!(
                "the host has {kib} KiB of swap: pooled memories are reset without PAGEMAP_SCAN"
            );
            wasmtime::Enabled::No
        }
        None => wasmtime::Enabled::No,
    }
}

/// Whether this process's cgroup (v2), or one above it, has a
/// `memory.swap.max` of 0: then none of its pages is swapped out, whatever
/// the host has. cgroup v1's `memsw` limits are not looked at.
fn cgroup_forbids_swap() -> bool {
    let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else {
        return false;
    };
    let Some(path) = own.lines().find_map(|line| line.strip_prefix("0::")) else {
        return false;
    };
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .any(|mount| {
            swap_forbidden(Path::new(mount), path, |file| {
                std::fs::read_to_string(file).ok()
            })
        })
}

/// Whether the cgroup at `path` under the v2 hierarchy mounted at `mount`,
/// or one of its ancestors, has no swap (`read` gives a file's text).
fn swap_forbidden(mount: &Path, path: &str, read: impl Fn(&Path) -> Option<String>) -> bool {
    let mut dir = mount.join(path.trim_start_matches('/'));
    loop {
        if read(&dir.join("memory.swap.max")).is_some_and(|max| max.trim() == "0") {
            return true;
        }
        if dir == mount || !dir.pop() {
            return false;
        }
    }
}

/// `SwapTotal` in KiB, from the text of `/proc/meminfo`.
fn swap_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("SwapTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// How many live stores get pooled slots: one per admitted guest, within
/// [`MAX_POOLED_STORES`]; a guest beyond runs with on-demand allocations.
fn pooled_stores(config: &WasmConfig) -> u32 {
    config
        .queue_limit
        .clamp(config.workers, MAX_POOLED_STORES.max(config.workers)) as u32
}

/// Slots for `stores` live stores: a store lives while its guest is live
/// (running or parked), and every worker can run a component at once.
fn pooling(stores: u32, workers: u32) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    // Real components (a JS or Python runtime, its libc, the adapter, the
    // bindings) hold around ten core instances each; slots are address space
    // until used.
    pool.total_component_instances(stores)
        .total_core_instances(
            (stores * CORE_INSTANCES_PER_STORE).max(workers * CORE_INSTANCES_PER_COMPONENT),
        )
        .total_memories((stores * 2).max(workers * MEMORIES_PER_COMPONENT))
        .total_tables((stores * 2).max(workers * TABLES_PER_COMPONENT))
        // A parked guest keeps its fiber stack: as many as core instances, so
        // a module's pooled instantiation fails (and falls back) before its call would.
        // and a reused WASIp3 instance holds one per request it handles at once.
        .total_stacks((stores * 4).max(workers * CORE_INSTANCES_PER_COMPONENT))
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memories_per_module(MEMORIES_PER_MODULE)
        .max_tables_per_module(TABLES_PER_MODULE)
        .table_elements(TABLE_ELEMENTS)
        .table_keep_resident(16 * 1024);
    pool
}

/// Why an artifact needing `needs` does not fit a pooling slot, if it does not.
pub(crate) fn misfit(needs: Option<ResourcesRequired>, component: bool) -> Option<String> {
    let Some(needs) = needs else {
        return Some("its resource needs cannot be computed ahead of time".into());
    };
    let (memories, tables) = if component {
        (MEMORIES_PER_COMPONENT, TABLES_PER_COMPONENT)
    } else {
        (MEMORIES_PER_MODULE, TABLES_PER_MODULE)
    };
    if needs.num_memories > memories {
        return Some(format!("{} memories > {memories}", needs.num_memories));
    }
    if needs.num_tables > tables {
        return Some(format!("{} tables > {tables}", needs.num_tables));
    }
    if let Some(elements) = needs.max_initial_table_size {
        if elements > TABLE_ELEMENTS as u64 {
            return Some(format!("a table of {elements} elements > {TABLE_ELEMENTS}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{swap_forbidden, swap_total};
    use std::path::Path;

    #[test]
    fn swap_is_read_from_meminfo() {
        let meminfo = "MemTotal:       24579412 kB\nSwapCached:            0 kB\nSwapTotal:       2097148 kB\nSwapFree:        2097148 kB\n";
        assert_eq!(swap_total(meminfo), Some(2_097_148));
        assert_eq!(swap_total("SwapTotal:             0 kB\n"), Some(0));
        // Unknown, not "none": the scan stays off.
        assert_eq!(swap_total("MemTotal: 1 kB\n"), None);
        assert_eq!(swap_total("SwapTotal: lots\n"), None);
    }

    #[test]
    fn a_cgroup_without_swap_is_seen_at_any_level_above() {
        let mount = Path::new("/sys/fs/cgroup");
        let files = |entries: &'static [(&'static str, &'static str)]| {
            move |file: &Path| {
                entries
                    .iter()
                    .find(|(path, _)| Path::new(path) == file)
                    .map(|(_, text)| text.to_string())
            }
        };
        let pod = "/kubepods.slice/pod1.slice/cri-abc.scope";
        let at_pod = files(&[(
            "/sys/fs/cgroup/kubepods.slice/pod1.slice/memory.swap.max",
            "0\n",
        )]);
        assert!(swap_forbidden(mount, pod, at_pod));
        let own = files(&[(
            "/sys/fs/cgroup/kubepods.slice/pod1.slice/cri-abc.scope/memory.swap.max",
            "0\n",
        )]);
        assert!(swap_forbidden(mount, pod, own));
        // A namespaced container sees its own cgroup at the mount point.
        let namespaced = files(&[("/sys/fs/cgroup/memory.swap.max", "0\n")]);
        assert!(swap_forbidden(mount, "/", namespaced));
        let allowed = files(&[
            (
                "/sys/fs/cgroup/kubepods.slice/pod1.slice/memory.swap.max",
                "max\n",
            ),
            (
                "/sys/fs/cgroup/kubepods.slice/memory.swap.max",
                "1073741824\n",
            ),
        ]);
        assert!(!swap_forbidden(mount, pod, allowed));
        assert!(!swap_forbidden(mount, pod, files(&[])));
    }
}
