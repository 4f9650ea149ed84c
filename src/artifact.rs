//! Compiled artifacts: each distinct image is compiled once and pre-linked for fast instantiation.

use crate::detect::{detect_wasm_version_from_binary, WasiVersion};
use crate::disk_cache::DiskCache;
use crate::engine::{misfit, EngineSet, Engines};
use crate::host::HostState;
use parking_lot::Mutex;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};
use wasmtime::component::{Component, ComponentExportIndex};
use wasmtime::{Engine, ExternType, InstancePre, Module};

/// The bytes of one image and, once a worker needed it, its compiled form.
pub(crate) struct Artifact {
    pub(crate) bytes: Arc<[u8]>,
    compiled: OnceLock<Result<Compiled, String>>,
}

/// A compiled, pre-linked artifact, ready to instantiate.
pub(crate) enum Compiled {
    /// A WASIp1 core module and the export to call.
    Module {
        pre: InstancePre<HostState>,
        entry: Entry,
    },
    /// A WASIp2 command component and its `wasi:cli/run#run` export.
    Component {
        pre: wasmtime::component::InstancePre<HostState>,
        run: ComponentExportIndex,
    },
}

/// The entry point of a core module.
#[derive(Clone, Copy)]
pub(crate) enum Entry {
    /// `_start: [] -> []`, the WASI command convention.
    Start,
    /// `main: [] -> []`.
    Main,
    /// `main: [] -> [i32]`, whose result is the exit code.
    MainWithCode,
}

impl Entry {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Entry::Start => "_start",
            Entry::Main | Entry::MainWithCode => "main",
        }
    }
}

/// The linkers every artifact is pre-linked against.
pub(crate) struct Linkers {
    pub(crate) preview1: wasmtime::Linker<HostState>,
    pub(crate) preview2: wasmtime::component::Linker<HostState>,
}

impl Linkers {
    pub(crate) fn new(engine: &Engine) -> wasmtime::Result<Self> {
        let mut preview1 = wasmtime::Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut preview1, HostState::preview1)?;
        let mut preview2 = wasmtime::component::Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut preview2)?;
        Ok(Linkers { preview1, preview2 })
    }
}

impl Artifact {
    /// The compiled form, compiling on first use; the error says why it cannot run.
    pub(crate) fn compiled(
        &self,
        engines: &Engines,
        disk: Option<&DiskCache>,
    ) -> Result<&Compiled, String> {
        self.compiled
            .get_or_init(|| compile(engines, disk, &self.bytes))
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl Compiled {
    /// The engine the artifact was compiled for; its stores must use it.
    pub(crate) fn engine(&self) -> &Engine {
        match self {
            Compiled::Module { pre, .. } => pre.module().engine(),
            Compiled::Component { pre, .. } => pre.engine(),
        }
    }
}

/// Compiles (or loads from `disk`) and pre-links `bytes` on the pooled engine,
/// or on the on-demand engine when the artifact does not fit a pooling slot.
pub(crate) fn compile(
    engines: &Engines,
    disk: Option<&DiskCache>,
    bytes: &[u8],
) -> Result<Compiled, String> {
    let retry = bytes_are_wasm(bytes);
    if is_component(bytes) {
        let (set, component) = on_fitting_engine(
            engines,
            retry,
            |set| load_component(set, disk, bytes),
            |component| misfit(component.resources_required(), true),
        )?;
        let run = find_run_export(&set.engine, &component)?;
        let pre = set
            .linkers
            .preview2
            .instantiate_pre(&component)
            .map_err(|e| format!("cannot link component: {e:#}"))?;
        return Ok(Compiled::Component { pre, run });
    }
    let (set, module) = on_fitting_engine(
        engines,
        retry,
        |set| load_module(set, disk, bytes),
        |module| misfit(Some(module.resources_required()), false),
    )?;
    let entry = find_entry(&module)?;
    let pre = set
        .linkers
        .preview1
        .instantiate_pre(&module)
        .map_err(|e| format!("cannot link module: {e:#}"))?;
    Ok(Compiled::Module { pre, entry })
}

/// Loads an artifact with the pooled engine, or with the on-demand one when it
/// does not fit a pooling slot: `misfit` says why, or the pooled engine refused
/// it already at compile time (then `retry` says whether a second try is worth it).
fn on_fitting_engine<A>(
    engines: &Engines,
    retry: bool,
    load: impl Fn(&EngineSet) -> Result<A, String>,
    misfit: impl Fn(&A) -> Option<String>,
) -> Result<(&EngineSet, A), String> {
    if let Some(pooled) = &engines.pooled {
        let why = match load(pooled) {
            Ok(artifact) => match misfit(&artifact) {
                None => return Ok((pooled, artifact)),
                Some(why) => why,
            },
            Err(why) if retry => why,
            Err(why) => return Err(why),
        };
        log::info!("artifact does not fit a pooling slot ({why}): allocating it on demand");
    }
    let set = &engines.on_demand;
    load(set).map(|artifact| (set, artifact))
}

/// Whether the bytes could be WebAssembly at all, so a failed compile is worth a second try.
fn bytes_are_wasm(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm") || looks_like_text(bytes)
}

fn load_component(
    set: &EngineSet,
    disk: Option<&DiskCache>,
    bytes: &[u8],
) -> Result<Component, String> {
    let path = disk.map(|d| d.path(set.compat, bytes));
    if let Some(component) = disk
        .zip(path.as_deref())
        .and_then(|(d, p)| d.component(&set.engine, p))
    {
        return Ok(component);
    }
    let component = Component::new(&set.engine, bytes)
        .map_err(|e| format!("invalid WASIp2 component: {e:#}"))?;
    if let Some((disk, path)) = disk.zip(path.as_deref()) {
        disk.store(path, component.serialize());
    }
    Ok(component)
}

fn load_module(set: &EngineSet, disk: Option<&DiskCache>, bytes: &[u8]) -> Result<Module, String> {
    let path = disk.map(|d| d.path(set.compat, bytes));
    if let Some(module) = disk
        .zip(path.as_deref())
        .and_then(|(d, p)| d.module(&set.engine, p))
    {
        return Ok(module);
    }
    let module = if bytes.starts_with(b"\0asm") {
        Module::from_binary(&set.engine, bytes)
    } else if looks_like_text(bytes) {
        Module::new(&set.engine, bytes)
    } else {
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(format!(
            "invalid WebAssembly module: not a WebAssembly binary (expected the magic bytes 00 61 73 6d, found '{}')",
            head.join(" ")
        ));
    }
    .map_err(|e| format!("invalid WebAssembly module: {e:#}"))?;
    if let Some((disk, path)) = disk.zip(path.as_deref()) {
        disk.store(path, module.serialize());
    }
    Ok(module)
}

/// WAT text starts, after white space, with `(` or a `;;` comment.
fn looks_like_text(bytes: &[u8]) -> bool {
    let text = bytes.trim_ascii_start();
    text.starts_with(b"(") || text.starts_with(b";;")
}

pub(crate) fn is_component(bytes: &[u8]) -> bool {
    detect_wasm_version_from_binary(bytes) == WasiVersion::Preview2
        || (bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0])
}

fn find_entry(module: &Module) -> Result<Entry, String> {
    let func = |name| match module.get_export(name) {
        Some(ExternType::Func(ty)) => Some((ty.params().len(), ty.results().collect::<Vec<_>>())),
        _ => None,
    };
    if let Some((params, results)) = func("_start") {
        if params == 0 && results.is_empty() {
            return Ok(Entry::Start);
        }
        return Err("entry point `_start` not found with type [] -> []".into());
    }
    if let Some((0, results)) = func("main") {
        match results.as_slice() {
            [] => return Ok(Entry::Main),
            [wasmtime::ValType::I32] => return Ok(Entry::MainWithCode),
            _ => {}
        }
    }
    Err(
        "entry point not found: the module exports neither `_start` nor `main` of type [] -> []"
            .into(),
    )
}

fn find_run_export(engine: &Engine, component: &Component) -> Result<ComponentExportIndex, String> {
    let name = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name)
        .find(|name| name.starts_with("wasi:cli/run@0.2."))
        .map(str::to_owned)
        .ok_or("entry point not found: the component exports no `wasi:cli/run@0.2.x` (not a command component)")?;
    let instance = component
        .get_export_index(None, &name)
        .ok_or_else(|| format!("entry point not found: `{name}`"))?;
    component
        .get_export_index(Some(&instance), "run")
        .ok_or_else(|| format!("entry point not found: `{name}` has no `run`"))
}

/// Every artifact this runtime knows, by content: equal bytes share one compilation.
pub(crate) struct ArtifactCache {
    entries: Mutex<HashMap<u64, Vec<Arc<Artifact>>>>,
    /// How many artifacts no container uses are kept.
    keep_unused: usize,
}

impl ArtifactCache {
    pub(crate) fn new(keep_unused: usize) -> Self {
        ArtifactCache {
            entries: Mutex::new(HashMap::new()),
            keep_unused,
        }
    }

    /// The artifact with exactly these bytes, added if new.
    pub(crate) fn intern(&self, bytes: &[u8]) -> Arc<Artifact> {
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        let key = hasher.finish();
        let mut entries = self.entries.lock();
        let bucket = entries.entry(key).or_default();
        if let Some(found) = bucket.iter().find(|a| *a.bytes == *bytes) {
            return found.clone();
        }
        let artifact = Arc::new(Artifact {
            bytes: bytes.into(),
            compiled: OnceLock::new(),
        });
        bucket.push(artifact.clone());
        self.evict_unused(&mut entries);
        artifact
    }

    /// Drops artifacts only the cache holds, once there are more than `keep_unused`.
    fn evict_unused(&self, entries: &mut HashMap<u64, Vec<Arc<Artifact>>>) {
        let unused = entries
            .values()
            .flatten()
            .filter(|a| Arc::strong_count(a) == 1)
            .count();
        let mut excess = unused.saturating_sub(self.keep_unused);
        if excess == 0 {
            return;
        }
        for bucket in entries.values_mut() {
            bucket.retain(|a| {
                let evict = excess > 0 && Arc::strong_count(a) == 1;
                excess -= usize::from(evict);
                !evict
            });
        }
        entries.retain(|_, bucket| !bucket.is_empty());
    }
}
