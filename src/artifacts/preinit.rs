//! Pre-initialisation (`wasmpool wizer`, `serve --pre-init`): wasmtime 48's
//! Wizer instruments a module or component, we instantiate it once with WASI
//! (stdout and stderr inherited, nothing else granted), run its init export,
//! and Wizer rewrites what the instance then holds — memories, globals — into
//! a new binary. Start-up work is paid once, at build time; every instance
//! of the snapshot starts where the init function left off.
//!
//! Wizer's `wasmtime` feature is not used (it turns on wasmtime's own cache
//! and WIT parser, a part of every first build): its instrument and snapshot
//! halves are, with the instance's state read here.

use super::detect::{detect_wasm_version_from_binary, WasiVersion};
use anyhow::{anyhow, Result};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use wasmtime::component::{
    Component, Instance as ComponentInstance, Lift, ResourceTable, WasmList,
};
use wasmtime::error::Context as _;
use wasmtime::{bail, Result as WResult};
use wasmtime::{Config, Engine, Linker, Module, Store, Val};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wizer::{ComponentInstanceState, InstanceState, SnapshotVal, ValType, Wizer};

/// The init export Wizer calls unless told otherwise.
pub const DEFAULT_INIT_FUNC: &str = "wizer-initialize";

/// Runs `wasm`'s init export `init_func` once and returns the snapshot: a
/// module or component that starts initialised. `max_fuel` bounds the init
/// function's work (`None`: unbounded). A module also runs its
/// `_initialize` (a reactor's) first, as Wizer does.
pub fn pre_initialize(wasm: &[u8], init_func: &str, max_fuel: Option<u64>) -> Result<Vec<u8>> {
    let wasm = if wasm.starts_with(b"\0asm") {
        std::borrow::Cow::Borrowed(wasm)
    } else {
        std::borrow::Cow::Owned(wat::parse_bytes(wasm)?.into_owned())
    };
    let mut wizer = Wizer::new();
    wizer.init_func(init_func);
    let mut config = Config::new();
    config.consume_fuel(true);
    let engine = Engine::new(&config).map_err(|e| anyhow!("{e:#}"))?;
    match detect_wasm_version_from_binary(&wasm) {
        WasiVersion::Preview2 => component(&wizer, &engine, &wasm, init_func, max_fuel),
        WasiVersion::Preview1 | WasiVersion::Unknown => {
            module(&wizer, &engine, &wasm, init_func, max_fuel)
        }
    }
    .map_err(|e| anyhow!("{e:#}"))
}

/// What an init function may use: WASI, with stdout and stderr inherited.
struct Host {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// A store over `data` whose init run may burn `max_fuel`.
fn store<T>(engine: &Engine, data: T, max_fuel: Option<u64>) -> WResult<Store<T>> {
    let mut store = Store::new(engine, data);
    store.set_fuel(max_fuel.unwrap_or(u64::MAX))?;
    Ok(store)
}

/// The rights of an init function: stdout and stderr, nothing else.
fn wasi() -> WasiCtxBuilder {
    let mut builder = WasiCtxBuilder::new();
    builder.inherit_stdout().inherit_stderr();
    builder
}

/// Refuses an init export that is missing or not `func()`.
fn check_init(kind: &str, init_func: &str, found: Option<bool>) -> WResult<()> {
    match found {
        Some(true) => Ok(()),
        Some(false) => bail!(
            "the {kind}'s `{init_func}` export is not a function of no parameters and no results"
        ),
        None => {
            bail!("the {kind} has no `{init_func}` export to run (name another with --init-func)")
        }
    }
}

fn module(
    wizer: &Wizer,
    engine: &Engine,
    wasm: &[u8],
    init_func: &str,
    max_fuel: Option<u64>,
) -> WResult<Vec<u8>> {
    let (cx, instrumented) = wizer.instrument(wasm)?;
    let module = Module::new(engine, &instrumented).context("compiling the module")?;
    let found = module.get_export(init_func).map(|export| {
        matches!(export, wasmtime::ExternType::Func(ty) if ty.params().len() == 0 && ty.results().len() == 0)
    });
    check_init("module", init_func, found)?;
    let mut store = store(engine, wasi().build_p1(), max_fuel)?;
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |ctx| ctx)?;
    linker.define_unknown_imports_as_traps(&module)?;
    let instance = linker
        .instantiate(&mut store, &module)
        .context("instantiating the module")?;
    if init_func != "_initialize" {
        if let Some(init) = instance.get_func(&mut store, "_initialize") {
            init.typed::<(), ()>(&store)?
                .call(&mut store, ())
                .context("the reactor's `_initialize` failed")?;
        }
    }
    instance
        .get_typed_func::<(), ()>(&mut store, init_func)?
        .call(&mut store, ())
        .with_context(|| format!("the init function `{init_func}` failed"))?;
    let mut state = ModuleState {
        store: &mut store,
        instance,
    };
    finish(wizer.snapshot(&cx, &mut state))
}

fn component(
    wizer: &Wizer,
    engine: &Engine,
    wasm: &[u8],
    init_func: &str,
    max_fuel: Option<u64>,
) -> WResult<Vec<u8>> {
    // The component lifts its init export: the core function stays for it.
    let mut wizer = wizer.clone();
    wizer.keep_init_func(true);
    let (cx, instrumented) = wizer.instrument_component(wasm)?;
    let component = Component::new(engine, &instrumented).context("compiling the component")?;
    let export = component.get_export(None, init_func);
    let found = export.as_ref().map(|(item, _)| {
        matches!(item, wasmtime::component::types::ComponentItem::ComponentFunc(ty) if ty.params().len() == 0 && ty.results().len() == 0)
    });
    check_init("component", init_func, found)?;
    let index = export.expect("checked above").1;
    let host = Host {
        ctx: wasi().build(),
        table: ResourceTable::new(),
    };
    let mut store = store(engine, host, max_fuel)?;
    let mut linker = wasmtime::component::Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    // What else it imports (wasi:http, WASIp3, keyvalue…) traps if the init function calls it.
    stub_unknown_imports(&mut linker, engine, &component)?;
    // A WASIp3 component (async imports) needs the `*_async` entry points;
    // they serve a synchronous one as well. Nothing here waits: the init
    // function's WASI is synchronous and the other imports fail at once.
    finish(async {
        let instance = linker
            .instantiate_async(&mut store, &component)
            .await
            .context("instantiating the component")?;
        instance
            .get_typed_func::<(), ()>(&mut store, index)?
            .call_async(&mut store, ())
            .await
            .with_context(|| format!("the init function `{init_func}` failed"))?;
        let mut state = ComponentState {
            store: &mut store,
            instance,
        };
        wizer.snapshot_component(&cx, &mut state).await
    })
}

/// Defines every import of `component` that `linker` cannot serve as a
/// function that fails when called.
///
/// Wasmtime's `define_unknown_imports_as_traps` matches names exactly: an
/// import of `wasi:cli/environment@0.2.9` (componentize-py's) would become a
/// trap beside the `@0.2.12` the linker serves by semver. Here the linker's
/// own type check names each import it cannot serve, one at a time, and
/// only those are stubbed.
fn stub_unknown_imports(
    linker: &mut wasmtime::component::Linker<Host>,
    engine: &Engine,
    component: &Component,
) -> WResult<()> {
    use wasmtime::component::types::ComponentItem;
    let ty = component.component_type();
    let mut stubbed = std::collections::HashSet::new();
    loop {
        let Err(error) = linker.instantiate_pre(component) else {
            return Ok(());
        };
        // "component imports instance `NAME`, but a matching implementation…"
        let message = error.to_string();
        let name = message.split('`').nth(1).filter(|name| {
            message.starts_with("component imports") && stubbed.insert(name.to_string())
        });
        let Some((name, import)) =
            name.and_then(|name| ty.imports(engine).find(|(n, _)| *n == name))
        else {
            return Err(error);
        };
        match import.ty {
            ComponentItem::ComponentFunc(func) => {
                stub_func(&mut linker.root(), name, name, func.async_())?
            }
            ComponentItem::ComponentInstance(instance) => {
                // A resource an earlier import brought in (`use`d here, as
                // wasi:http's `input-stream` from wasi:io) is that one.
                let earlier: Vec<_> = ty
                    .imports(engine)
                    .take_while(|(n, _)| *n != name)
                    .filter_map(|(_, import)| match import.ty {
                        ComponentItem::ComponentInstance(instance) => Some(instance),
                        _ => None,
                    })
                    .flat_map(|instance| {
                        instance
                            .exports(engine)
                            .filter_map(|(_, export)| match export.ty {
                                ComponentItem::Resource(resource) => Some(resource),
                                _ => None,
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let mut stubs = linker.instance(name)?;
                for (item, export) in instance.exports(engine) {
                    // Refused where the linker defines the item already.
                    let _ = match export.ty {
                        ComponentItem::ComponentFunc(func) => {
                            stub_func(&mut stubs, item, &format!("{name}#{item}"), func.async_())
                        }
                        ComponentItem::Resource(resource) if earlier.contains(&resource) => Ok(()),
                        ComponentItem::Resource(_) => stubs.resource(
                            item,
                            wasmtime::component::ResourceType::host::<()>(),
                            |_, _| Ok(()),
                        ),
                        _ => Ok(()),
                    };
                }
            }
            _ => return Err(error),
        }
    }
}

/// Defines `item` in `instance` as a function that fails with `what` unknown.
fn stub_func(
    instance: &mut wasmtime::component::LinkerInstance<'_, Host>,
    item: &str,
    what: &str,
    is_async: bool,
) -> WResult<()> {
    let what = what.to_string();
    if is_async {
        instance.func_new_concurrent(item, move |_, _, _, _| {
            let what = what.clone();
            Box::pin(
                async move { bail!("unknown import: `{what}` is not given to an init function") },
            )
        })
    } else {
        instance.func_new(item, move |_, _, _, _| {
            bail!("unknown import: `{what}` is not given to an init function")
        })
    }
}

/// Runs an init run or a snapshot to its end: our host functions and state
/// reads never wait, so it finishes on its first poll.
fn finish(future: impl Future<Output = WResult<Vec<u8>>>) -> WResult<Vec<u8>> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(snapshot) => snapshot,
        Poll::Pending => {
            bail!("the init function or its snapshot waited on something: it cannot finish")
        }
    }
}

/// A module instance's state, as Wizer reads it.
struct ModuleState<'a> {
    store: &'a mut Store<wasmtime_wasi::p1::WasiP1Ctx>,
    instance: wasmtime::Instance,
}

impl InstanceState for ModuleState<'_> {
    async fn global_get(&mut self, name: &str, _: ValType) -> SnapshotVal {
        let global = self
            .instance
            .get_global(&mut *self.store, name)
            .expect("Wizer names an exported global");
        match global.get(&mut *self.store) {
            Val::I32(x) => SnapshotVal::I32(x),
            Val::I64(x) => SnapshotVal::I64(x),
            Val::F32(x) => SnapshotVal::F32(x),
            Val::F64(x) => SnapshotVal::F64(x),
            Val::V128(x) => SnapshotVal::V128(x.as_u128()),
            _ => panic!("Wizer refuses reference-typed globals before it gets here"),
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        let memory = self
            .instance
            .get_memory(&mut *self.store, name)
            .expect("Wizer names an exported memory");
        contents(memory.data(&*self.store))
    }
}

/// A component instance's state: Wizer's instrumentation exports an accessor
/// per global and memory, called here.
struct ComponentState<'a> {
    store: &'a mut Store<Host>,
    instance: ComponentInstance,
}

impl ComponentState<'_> {
    async fn call<R: Lift + Send + Sync + 'static>(&mut self, instance: &str, func: &str) -> R {
        let (_, exported) = self
            .instance
            .get_export(&mut *self.store, None, instance)
            .expect("Wizer's accessor instance is exported");
        let (_, func) = self
            .instance
            .get_export(&mut *self.store, Some(&exported), func)
            .expect("Wizer's accessor is exported");
        let func = self
            .instance
            .get_typed_func::<(), (R,)>(&mut *self.store, func)
            .expect("Wizer's accessor has its type");
        func.call_async(&mut *self.store, ())
            .await
            .expect("Wizer's accessor runs")
            .0
    }
}

impl ComponentInstanceState for ComponentState<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        let list: WasmList<u8> = self.call(instance, func).await;
        contents(list.as_le_slice(&*self.store));
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func).await
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func).await
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call::<f32>(instance, func).await.to_bits()
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call::<f64>(instance, func).await.to_bits()
    }
}

/// The snapshot of `wasm` after `init_func` as [`pre_initialize`] makes it,
/// kept in `dir` (made 0700 if missing): made once, then read back — only
/// from a folder and a file that belong to the current user and that no one
/// else may write. Also says whether it was made now.
pub fn pre_initialize_cached(
    dir: &std::path::Path,
    wasm: &[u8],
    init_func: &str,
    max_fuel: Option<u64>,
) -> Result<(Vec<u8>, bool)> {
    use sha2::Digest as _;
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| anyhow!("cannot make '{}': {e}", dir.display()))?;
    super::disk_cache::trusted(dir, true)
        .map_err(|why| anyhow!("not using the snapshot cache: {why}"))?;
    let mut key = sha2::Sha256::new();
    key.update(wasm);
    key.update([0]);
    key.update(init_func.as_bytes());
    key.update([0]);
    key.update(env!("CARGO_PKG_VERSION").as_bytes());
    let path = dir.join(format!("{}.wasm", hex::encode(key.finalize())));
    if super::disk_cache::trusted(&path, false).is_ok() {
        if let Ok(snapshot) = std::fs::read(&path) {
            return Ok((snapshot, false));
        }
    }
    let snapshot = pre_initialize(wasm, init_func, max_fuel)?;
    // Written whole under a name of its own, then renamed into place.
    let partial = path.with_extension(format!("{}.partial", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .and_then(|mut file| file.write_all(&snapshot).and_then(|()| file.sync_all()))
        .and_then(|()| std::fs::rename(&partial, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        log::warn!("the snapshot was not kept in '{}': {e}", dir.display());
    }
    Ok((snapshot, true))
}
