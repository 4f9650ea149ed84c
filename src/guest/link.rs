//! Linking: the WASI linkers of each engine, and an artifact pre-linked
//! against them (strictly, or with unknown imports defined as traps).

use super::entry::{Entry, ModuleEntry};
use super::host::HostState;
use crate::artifacts::{Code, Compiled, Engines};
use std::sync::OnceLock;
use wasmtime::component::Component;
use wasmtime::{Engine, InstancePre, Module};
use wasmtime_wasi::I32Exit;

/// A pre-linked artifact.
pub(crate) enum Pre {
    Module(InstancePre<HostState>),
    Component(wasmtime::component::InstancePre<HostState>),
}

/// The linkers every artifact of one engine is pre-linked against.
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
        super::host::add_descriptor_cap(&mut preview1)?;
        let mut preview2 = wasmtime::component::Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut preview2)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut preview2)?;
        // WASI 0.3 beside 0.2: toolchains' p3 components import both.
        wasmtime_wasi::p3::add_to_linker(&mut preview2)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut preview2)?;
        super::config::add_to_linker(&mut preview2)?;
        super::keyvalue::add_to_linker(&mut preview2)?;
        super::logging::add_to_linker(&mut preview2)?;
        super::tls::add_to_linker(&mut preview2)?;
        Ok(Linkers { preview1, preview2 })
    }
}

/// The linkers of a runtime's engines.
pub(crate) struct Linking {
    pooled: Option<(Engine, Linkers)>,
    on_demand: (Engine, Linkers),
    /// The reused instances' engine's, made with it.
    reused: OnceLock<Option<(Engine, Linkers)>>,
}

impl Linking {
    pub(crate) fn new(engines: &Engines) -> wasmtime::Result<Self> {
        let pooled = match &engines.pooled {
            Some(set) => Some((set.engine.clone(), Linkers::new(&set.engine)?)),
            None => None,
        };
        let on_demand = &engines.on_demand.engine;
        Ok(Linking {
            pooled,
            on_demand: (on_demand.clone(), Linkers::new(on_demand)?),
            reused: OnceLock::new(),
        })
    }

    /// The linkers of `engine`, one of the runtime's: any but the first two
    /// is the reused instances' engine, whose linkers are made on first need.
    fn of(&self, engine: &Engine) -> &Linkers {
        if let Some((pooled, linkers)) = &self.pooled {
            if Engine::same(pooled, engine) {
                return linkers;
            }
        }
        if Engine::same(&self.on_demand.0, engine) {
            return &self.on_demand.1;
        }
        let reused = self.reused.get_or_init(|| {
            Linkers::new(engine)
                .map(|linkers| (engine.clone(), linkers))
                .map_err(|e| log::warn!("no linkers for the reused instances' engine: {e:#}"))
                .ok()
        });
        match reused {
            Some((reused, linkers)) if Engine::same(reused, engine) => linkers,
            // Linked against another engine, instantiation fails and says so.
            _ => &self.on_demand.1,
        }
    }
}

/// What a guest derives once from an artifact's compiled code: what to call,
/// and its linking, ready to instantiate.
pub(crate) struct Prepared {
    /// The module's entry conventions, or the component's `wasi:cli/run#run`.
    pub(crate) entry: Result<Entry, String>,
    /// Linked against WASI; an import nobody provides is an error.
    linked: Result<Pre, String>,
    /// Linked with every unknown import defined as a function that traps.
    lenient: OnceLock<Result<Pre, String>>,
}

/// An artifact as the guest runs it: compiled code plus what is prepared from it.
pub(crate) type Artifact = crate::artifacts::Artifact<Prepared>;

impl Prepared {
    /// The prepared form of `compiled`, linked and its entry picked on first use.
    pub(crate) fn of<'a>(compiled: &'a Compiled<Prepared>, linking: &Linking) -> &'a Prepared {
        compiled.prepared.get_or_init(|| {
            let linkers = linking.of(compiled.engine());
            Prepared {
                entry: Entry::of(&compiled.code),
                linked: match &compiled.code {
                    Code::Module(module) => link_module(linkers, module),
                    Code::Component(component) => link_component(linkers, component),
                },
                lenient: OnceLock::new(),
            }
        })
    }

    /// The pre-linked artifact; with `trap_unknown_imports`, imports WASI does
    /// not provide are functions that trap when called.
    pub(crate) fn pre(
        &self,
        compiled: &Compiled<Prepared>,
        linking: &Linking,
        trap_unknown_imports: bool,
    ) -> Result<&Pre, String> {
        if !trap_unknown_imports || self.linked.is_ok() {
            return self.linked.as_ref().map_err(Clone::clone);
        }
        self.lenient
            .get_or_init(|| {
                let mut linkers = linking.of(compiled.engine()).clone();
                match &compiled.code {
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
        let entry = match &self.entry {
            Err(e) => return Some(e.clone()),
            Ok(entry) => entry,
        };
        if let Err(e) = &self.linked {
            return Some(e.clone());
        }
        match entry {
            Entry::Module {
                default: Err(e), ..
            } => Some(e.clone()),
            _ => None,
        }
    }

    /// Whether the entry is WASI 0.3's (an async `wasi:cli/run` or `wasi:http/handler`).
    pub(crate) fn is_p3(&self) -> bool {
        matches!(
            self.entry,
            Ok(Entry::Component { p3: true, .. } | Entry::Proxy { p3: true, .. })
        )
    }

    /// What a run with default settings calls, if anything.
    pub(crate) fn describe_entry(&self) -> Option<String> {
        self.entry.as_ref().ok().and_then(Entry::describe)
    }

    /// The module's entry point: `invoke`, else its default.
    pub(crate) fn module_entry(
        &self,
        compiled: &Compiled<Prepared>,
        invoke: Option<&str>,
    ) -> Result<ModuleEntry, String> {
        match (invoke, &compiled.code, &self.entry) {
            (Some(name), Code::Module(module), _) => ModuleEntry::find(module, name),
            (None, _, Ok(Entry::Module { default, .. })) => default.clone(),
            (_, _, Err(e)) => Err(e.clone()),
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
