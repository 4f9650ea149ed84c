//! Compiled artifacts: each distinct image is compiled once and pre-linked for fast instantiation.

use crate::detect::{detect_wasm_version_from_binary, WasiVersion};
use crate::disk_cache::DiskCache;
use crate::engine::{misfit, EngineSet, Engines};
use crate::host::HostState;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use wasmtime::component::{Component, ComponentExportIndex};
use wasmtime::{Engine, ExternType, InstancePre, Module, Precompiled};
use wasmtime_wasi::I32Exit;

/// The SHA-256 of an image's bytes: its identity here and in the compiled cache.
pub(crate) type Digest = [u8; 32];

/// The SHA-256 of `bytes`.
pub(crate) fn digest_of(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// One image (by content) and, once a worker needed it, its compiled form.
pub(crate) struct Artifact {
    digest: Digest,
    source: Source,
    /// Compiled for the pooled engine when it fits a slot, else on demand.
    compiled: OnceLock<Result<Compiled, String>>,
    /// Compiled for the on-demand engine, for a run that finds every pooled slot taken.
    on_demand: OnceLock<Result<Compiled, String>>,
}

/// A compiled artifact, what its entry point is, and its linking, ready to instantiate.
pub(crate) struct Compiled {
    code: Code,
    /// The module's entry conventions, or the component's `wasi:cli/run#run`.
    pub(crate) entry: Entry,
    /// Linked against WASI; an import nobody provides is an error.
    linked: Result<Pre, String>,
    /// Linked with every unknown import defined as a function that traps.
    lenient: OnceLock<Result<Pre, String>>,
}

enum Code {
    Module(Module),
    Component(Component),
}

/// Where an artifact's bytes are: in memory, or in an image file whose content
/// digest is known (read only if the compiled cache lacks its native code).
enum Source {
    Bytes(Arc<[u8]>),
    File {
        path: std::path::PathBuf,
        read: Mutex<Option<Arc<[u8]>>>,
    },
}

/// An artifact's native code, ready to deserialize into any engine of one
/// compatibility hash: a file of the compiled cache, or fresh from the compiler.
enum Native {
    File(std::path::PathBuf, Precompiled),
    Bytes(Vec<u8>, Precompiled),
}

impl Native {
    fn kind(&self) -> Precompiled {
        match self {
            Native::File(_, kind) | Native::Bytes(_, kind) => *kind,
        }
    }

    fn module(&self, set: &EngineSet, disk: Option<&DiskCache>) -> Result<Module, String> {
        match (self, disk) {
            (Native::File(path, _), Some(disk)) => disk.module(&set.engine, path),
            (Native::Bytes(bytes, _), _) => deserialize_module(&set.engine, bytes),
            (Native::File(..), None) => Err("no compiled cache".into()),
        }
    }

    fn component(&self, set: &EngineSet, disk: Option<&DiskCache>) -> Result<Component, String> {
        match (self, disk) {
            (Native::File(path, _), Some(disk)) => disk.component(&set.engine, path),
            (Native::Bytes(bytes, _), _) => deserialize_component(&set.engine, bytes),
            (Native::File(..), None) => Err("no compiled cache".into()),
        }
    }
}

#[allow(unsafe_code)]
fn deserialize_module(engine: &Engine, bytes: &[u8]) -> Result<Module, String> {
    // SAFETY: `bytes` come straight from `precompile_module` of an engine with
    // this engine's compatibility hash, in this process.
    unsafe { Module::deserialize(engine, bytes) }.map_err(|e| format!("{e:#}"))
}

#[allow(unsafe_code)]
fn deserialize_component(engine: &Engine, bytes: &[u8]) -> Result<Component, String> {
    // SAFETY: as for `deserialize_module`, from `precompile_component`.
    unsafe { Component::deserialize(engine, bytes) }.map_err(|e| format!("{e:#}"))
}

/// A pre-linked artifact.
pub(crate) enum Pre {
    Module(InstancePre<HostState>),
    Component(wasmtime::component::InstancePre<HostState>),
}

/// What to call in an instance.
pub(crate) enum Entry {
    /// A core module: `_initialize` first when exported, then the default export.
    Module {
        initialize: bool,
        default: Result<ModuleEntry, String>,
    },
    /// A command component's `wasi:cli/run#run`.
    Component { run: ComponentExportIndex },
}

/// An exported function of a core module to call as the entry point.
#[derive(Debug, Clone)]
pub(crate) struct ModuleEntry {
    pub(crate) name: String,
    /// `[] -> [i32]`: the result is the exit code; otherwise `[] -> []`.
    pub(crate) returns_code: bool,
}

impl ModuleEntry {
    /// The export `name` if it is a function callable without arguments.
    pub(crate) fn find(module: &Module, name: &str) -> Result<Self, String> {
        let Some(ExternType::Func(ty)) = module.get_export(name) else {
            return Err(format!(
                "entry point not found: the module exports no function '{name}'"
            ));
        };
        let results: Vec<_> = ty.results().collect();
        let returns_code = match (ty.params().len(), results.as_slice()) {
            (0, []) => false,
            (0, [wasmtime::ValType::I32]) => true,
            _ => {
                return Err(format!(
                    "cannot call '{name}' as the entry point: its type is {ty}, expected [] -> [] or [] -> [i32]"
                ))
            }
        };
        Ok(ModuleEntry {
            name: name.to_string(),
            returns_code,
        })
    }

    /// `wasmtime run`'s default export (`""`, else `_start`), else `main`.
    fn default_of(module: &Module) -> Result<Self, String> {
        for name in ["", "_start", "main"] {
            if module.get_export(name).is_some() {
                return Self::find(module, name);
            }
        }
        let reactor = if module.get_export("_initialize").is_some() {
            " (it exports `_initialize`: a reactor; name the export to call with invoke)"
        } else {
            ""
        };
        Err(format!(
            "entry point not found: the module exports none of `\"\"`, `_start` or `main`{reactor}"
        ))
    }
}

/// The linkers every artifact is pre-linked against.
#[derive(Clone)]
pub(crate) struct Linkers {
    pub(crate) preview1: wasmtime::Linker<HostState>,
    pub(crate) preview2: wasmtime::component::Linker<HostState>,
}

impl Linkers {
    pub(crate) fn new(engine: &Engine) -> wasmtime::Result<Self> {
        let mut preview1 = wasmtime::Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut preview1, HostState::preview1)?;
        // wasmtime-wasi traps on statuses of 126 and up; a C program's
        // `exit(200)` is legitimate, so every status reaches the host as it is.
        preview1.allow_shadowing(true);
        preview1.func_wrap(
            "wasi_snapshot_preview1",
            "proc_exit",
            |status: i32| -> wasmtime::Result<()> { Err(wasmtime::Error::new(I32Exit(status))) },
        )?;
        preview1.allow_shadowing(false);
        crate::host::add_descriptor_cap(&mut preview1)?;
        let mut preview2 = wasmtime::component::Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut preview2)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut preview2)?;
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
            .get_or_init(|| compile(engines, disk, self))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The image's bytes, read from its file on first need (and checked
    /// against the digest it was known by).
    fn bytes(&self) -> Result<Arc<[u8]>, String> {
        match &self.source {
            Source::Bytes(bytes) => Ok(bytes.clone()),
            Source::File { path, read } => {
                let mut read = read.lock();
                if let Some(bytes) = &*read {
                    return Ok(bytes.clone());
                }
                let bytes: Arc<[u8]> = std::fs::read(path)
                    .map_err(|e| format!("cannot read image '{}': {e}", path.display()))?
                    .into();
                if digest_of(&bytes) != self.digest {
                    return Err(format!(
                        "image '{}' changed while it was being used; create the container again",
                        path.display()
                    ));
                }
                *read = Some(bytes.clone());
                Ok(bytes)
            }
        }
    }

    /// Whether the artifact was compiled (or found uncompilable) already.
    pub(crate) fn is_compiled(&self) -> bool {
        self.compiled.get().is_some()
    }

    /// The form compiled for the on-demand engine, compiling on first use.
    pub(crate) fn compiled_on_demand(
        &self,
        engines: &Engines,
        disk: Option<&DiskCache>,
    ) -> Result<&Compiled, String> {
        self.on_demand
            .get_or_init(|| compile_with(None, &engines.on_demand, disk, self))
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl Compiled {
    /// The engine the artifact was compiled for; its stores must use it.
    pub(crate) fn engine(&self) -> &Engine {
        match &self.code {
            Code::Module(module) => module.engine(),
            Code::Component(component) => component.engine(),
        }
    }

    /// The pre-linked artifact; with `trap_unknown_imports`, imports WASI does
    /// not provide are functions that trap when called.
    pub(crate) fn pre(
        &self,
        engines: &Engines,
        trap_unknown_imports: bool,
    ) -> Result<&Pre, String> {
        if !trap_unknown_imports || self.linked.is_ok() {
            return self.linked.as_ref().map_err(Clone::clone);
        }
        self.lenient
            .get_or_init(|| {
                let mut linkers = engines.set_of(self.engine()).linkers.clone();
                match &self.code {
                    Code::Module(module) => {
                        linkers
                            .preview1
                            .define_unknown_imports_as_traps(module)
                            .map_err(|e| format!("cannot link module: {e:#}"))?;
                        link_module(&linkers, module)
                    }
                    Code::Component(component) => link_component_leniently(linkers, component),
                }
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Why the artifact would not run with default settings, if it would not.
    pub(crate) fn problem(&self) -> Option<String> {
        if let Err(e) = &self.linked {
            return Some(e.clone());
        }
        match &self.entry {
            Entry::Module {
                default: Err(e), ..
            } => Some(e.clone()),
            _ => None,
        }
    }

    /// What a run with default settings calls, if anything.
    pub(crate) fn describe_entry(&self) -> Option<String> {
        match (&self.entry, &self.code) {
            (
                Entry::Module {
                    initialize,
                    default,
                },
                _,
            ) => {
                let default = default.as_ref().ok().map(|e| format!("{:?}", e.name));
                match (initialize, default) {
                    (true, Some(name)) => Some(format!("_initialize, then {name}")),
                    (true, None) => Some("_initialize".into()),
                    (false, name) => name,
                }
            }
            (Entry::Component { .. }, Code::Component(component)) => component
                .component_type()
                .exports(component.engine())
                .map(|(name, _)| name)
                .find(|name| name.starts_with("wasi:cli/run@0.2."))
                .map(|name| format!("{name}#run")),
            _ => None,
        }
    }

    /// The module's entry point: `invoke`, else its default.
    pub(crate) fn module_entry(&self, invoke: Option<&str>) -> Result<ModuleEntry, String> {
        match (invoke, &self.code, &self.entry) {
            (Some(name), Code::Module(module), _) => ModuleEntry::find(module, name),
            (None, _, Entry::Module { default, .. }) => default.clone(),
            _ => Err("a component has no module entry point".into()),
        }
    }
}

fn link_module(linkers: &Linkers, module: &Module) -> Result<Pre, String> {
    linkers
        .preview1
        .instantiate_pre(module)
        .map(Pre::Module)
        .map_err(|e| format!("cannot link module: {e:#}"))
}

/// Links `component`, defining each import the linker lacks as functions that
/// trap (and resources nobody implements). Unlike wasmtime's
/// `define_unknown_imports_as_traps`, this leaves alone the imports the linker
/// satisfies by semver (an adapter's `wasi:io/streams@0.2.12` against our
/// 0.2.x), so only what is really missing is stubbed.
fn link_component_leniently(mut linkers: Linkers, component: &Component) -> Result<Pre, String> {
    use wasmtime::component::types::ComponentItem;
    use wasmtime::component::ResourceType;
    let engine = component.engine();
    let imports: Vec<(String, ComponentItem)> = component
        .component_type()
        .imports(engine)
        .map(|(name, item)| (name.to_string(), item.ty))
        .collect();
    let trap = |name: String| {
        move |_: wasmtime::StoreContextMut<'_, HostState>,
              _: wasmtime::component::types::ComponentFunc,
              _: &[wasmtime::component::Val],
              _: &mut [wasmtime::component::Val]|
              -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!(
                "unknown import: `{name}` has not been defined"
            )))
        }
    };
    for _ in 0..=imports.len() {
        let error = match link_component(&linkers, component) {
            Ok(pre) => return Ok(pre),
            Err(error) => error,
        };
        let Some((name, item)) = imports
            .iter()
            .find(|(name, _)| error.contains(&format!("`{name}`")))
        else {
            return Err(error);
        };
        let stubbed: wasmtime::Result<()> = (|| {
            let mut root = linkers.preview2.root();
            match item {
                ComponentItem::ComponentFunc(_) => root.func_new(name, trap(name.clone())),
                ComponentItem::Resource(_) => {
                    root.resource(name, ResourceType::host::<()>(), |_, _| Ok(()))
                }
                ComponentItem::ComponentInstance(instance) => {
                    let mut linked = linkers.preview2.instance(name)?;
                    for (export, item) in instance.exports(engine) {
                        match item.ty {
                            ComponentItem::ComponentFunc(_) => {
                                linked.func_new(export, trap(format!("{name}#{export}")))?
                            }
                            ComponentItem::Resource(_) => linked.resource(
                                export,
                                ResourceType::host::<()>(),
                                |_, _| Ok(()),
                            )?,
                            _ => {}
                        }
                    }
                    Ok(())
                }
                _ => Err(wasmtime::Error::msg(format!(
                    "cannot define import `{name}` as traps"
                ))),
            }
        })();
        stubbed.map_err(|e| format!("cannot link component: {e:#}"))?;
    }
    link_component(&linkers, component)
}

fn link_component(linkers: &Linkers, component: &Component) -> Result<Pre, String> {
    linkers
        .preview2
        .instantiate_pre(component)
        .map(Pre::Component)
        .map_err(|e| format!("cannot link component: {e:#}"))
}

/// Compiles (or loads from `disk`) and pre-links an artifact on the pooled
/// engine, or on the on-demand engine when it does not fit a pooling slot.
pub(crate) fn compile(
    engines: &Engines,
    disk: Option<&DiskCache>,
    artifact: &Artifact,
) -> Result<Compiled, String> {
    compile_with(engines.pooled.as_ref(), &engines.on_demand, disk, artifact)
}

/// Tries each engine in turn; native code is compiled once for all engines of
/// one compatibility hash (the pooled and on-demand engines share theirs), so
/// an artifact that does not fit a pooling slot is not compiled twice.
fn compile_with(
    pooled: Option<&EngineSet>,
    on_demand: &EngineSet,
    disk: Option<&DiskCache>,
    artifact: &Artifact,
) -> Result<Compiled, String> {
    let mut native: Option<(u64, Native)> = None;
    for set in pooled.into_iter().chain([on_demand]) {
        let is_last = std::ptr::eq(set, on_demand);
        if native.as_ref().map(|(compat, _)| *compat) != Some(set.compat) {
            native = Some((set.compat, native_code(set, disk, artifact)?));
        }
        let Some((_, code)) = &native else { continue };
        // A cached artifact known not to fit a slot skips the pooled engine.
        if let (false, Some(disk), Native::File(path, _)) = (is_last, disk, code) {
            if disk.known_misfit(path) {
                continue;
            }
        }
        let why = match fit(code, set, disk, is_last) {
            Ok(compiled) => return Ok(compiled),
            Err(why) => why,
        };
        if !is_last {
            log::info!("artifact does not fit a pooling slot ({why}): allocating it on demand");
            if let (Some(disk), Native::File(path, _)) = (disk, code) {
                disk.record_misfit(path);
            }
            continue;
        }
        // No engine loads the cached file: it is stale or damaged; compile afresh.
        let (Some(disk), Native::File(path, _)) = (disk, code) else {
            return Err(why);
        };
        disk.discard(path, &why);
        let fresh = compile_native(set, None, artifact)?;
        return fit(&fresh, set, Some(disk), true);
    }
    Err("no engine".into())
}

/// The artifact loaded into `set`'s engine; unless `last`, refused when it
/// does not fit the engine's pooling slots.
fn fit(
    code: &Native,
    set: &EngineSet,
    disk: Option<&DiskCache>,
    last: bool,
) -> Result<Compiled, String> {
    match code.kind() {
        Precompiled::Component => {
            let component = code.component(set, disk)?;
            match misfit(component.resources_required(), true) {
                Some(why) if !last => Err(why),
                _ => component_compiled(set, component),
            }
        }
        Precompiled::Module => {
            let module = code.module(set, disk)?;
            match misfit(Some(module.resources_required()), false) {
                Some(why) if !last => Err(why),
                _ => Ok(module_compiled(set, module)),
            }
        }
    }
}

fn component_compiled(set: &EngineSet, component: Component) -> Result<Compiled, String> {
    let run = find_run_export(&set.engine, &component)?;
    Ok(Compiled {
        linked: link_component(&set.linkers, &component),
        entry: Entry::Component { run },
        code: Code::Component(component),
        lenient: OnceLock::new(),
    })
}

fn module_compiled(set: &EngineSet, module: Module) -> Compiled {
    Compiled {
        linked: link_module(&set.linkers, &module),
        entry: Entry::Module {
            initialize: matches!(
                module.get_export("_initialize"),
                Some(ExternType::Func(ty)) if ty.params().len() == 0 && ty.results().len() == 0
            ),
            default: ModuleEntry::default_of(&module),
        },
        code: Code::Module(module),
        lenient: OnceLock::new(),
    }
}

/// The artifact's native code for `set`'s compatibility hash: the compiled
/// cache's file if it has one, else compiled now (and saved there).
fn native_code(
    set: &EngineSet,
    disk: Option<&DiskCache>,
    artifact: &Artifact,
) -> Result<Native, String> {
    if let Some(disk) = disk {
        let path = disk.path(set.compat, &artifact.digest);
        if let Some(kind) = disk.precompiled_kind(&path) {
            return Ok(Native::File(path, kind));
        }
    }
    compile_native(set, disk, artifact)
}

/// Compiles the artifact for `set`'s engine, saving the result in `disk` if given.
fn compile_native(
    set: &EngineSet,
    disk: Option<&DiskCache>,
    artifact: &Artifact,
) -> Result<Native, String> {
    let path = disk.map(|d| d.path(set.compat, &artifact.digest));
    let bytes = artifact.bytes()?;
    let (kind, compiled) = if is_component(&bytes) {
        let compiled = set
            .engine
            .precompile_component(&bytes)
            .map_err(|e| format!("invalid WASIp2 component: {e:#}"))?;
        (Precompiled::Component, compiled)
    } else if bytes.starts_with(b"\0asm") || looks_like_text(&bytes) {
        let compiled = set
            .engine
            .precompile_module(&bytes)
            .map_err(|e| format!("invalid WebAssembly module: {e:#}"))?;
        (Precompiled::Module, compiled)
    } else {
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(format!(
            "invalid WebAssembly module: not a WebAssembly binary (expected the magic bytes 00 61 73 6d, found '{}')",
            head.join(" ")
        ));
    };
    if let Some((disk, path)) = disk.zip(path.as_ref()) {
        disk.store(path, &compiled);
        // Mapped from the file rather than copied from memory, when it was saved.
        if disk.precompiled_kind(path) == Some(kind) {
            return Ok(Native::File(path.clone(), kind));
        }
    }
    Ok(Native::Bytes(compiled, kind))
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
    entries: Mutex<HashMap<Digest, Arc<Artifact>>>,
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
        self.intern_digested(digest_of(bytes), bytes)
    }

    /// As [`ArtifactCache::intern`], for bytes whose digest is known.
    pub(crate) fn intern_digested(&self, digest: Digest, bytes: &[u8]) -> Arc<Artifact> {
        let artifact = self.intern_with(digest, || Source::Bytes(bytes.into()));
        // Known by its file until now: keep these bytes, the file may change.
        if let Source::File { read, .. } = &artifact.source {
            read.lock().get_or_insert_with(|| bytes.into());
        }
        artifact
    }

    /// The artifact whose bytes have `digest`, known to be in the image file
    /// at `path`: its bytes are read only if its native code must be compiled.
    pub(crate) fn intern_file(&self, digest: Digest, path: &std::path::Path) -> Arc<Artifact> {
        self.intern_with(digest, || Source::File {
            path: path.to_path_buf(),
            read: Mutex::new(None),
        })
    }

    fn intern_with(&self, digest: Digest, source: impl FnOnce() -> Source) -> Arc<Artifact> {
        let mut entries = self.entries.lock();
        if let Some(found) = entries.get(&digest) {
            return found.clone();
        }
        let artifact = Arc::new(Artifact {
            digest,
            source: source(),
            compiled: OnceLock::new(),
            on_demand: OnceLock::new(),
        });
        entries.insert(digest, artifact.clone());
        self.evict_unused(&mut entries);
        artifact
    }

    /// Drops artifacts only the cache holds, once there are more than `keep_unused`.
    fn evict_unused(&self, entries: &mut HashMap<Digest, Arc<Artifact>>) {
        let unused = entries
            .values()
            .filter(|a| Arc::strong_count(a) == 1)
            .count();
        let mut excess = unused.saturating_sub(self.keep_unused);
        if excess == 0 {
            return;
        }
        entries.retain(|_, a| {
            let evict = excess > 0 && Arc::strong_count(a) == 1;
            excess -= usize::from(evict);
            !evict
        });
    }
}
