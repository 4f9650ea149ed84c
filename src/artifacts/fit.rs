//! Fitting native code to the runtime's engines: the pooled engine when the
//! artifact fits a pooling slot, else the on-demand one.

use super::disk_cache::DiskCache;
use super::engine::{misfit, EngineSet, Engines};
use super::native::{native_code, Native};
use super::{Artifact, Code, Compiled};
use wasmtime::{Engine, Precompiled};

/// Compiles (or loads from `disk`) an artifact for the pooled engine, or for
/// the on-demand engine when it does not fit a pooling slot.
pub(crate) fn compile<P>(
    engines: &Engines,
    disk: Option<&DiskCache>,
    artifact: &Artifact<P>,
) -> Result<Compiled<P>, String> {
    compile_with(engines.pooled.as_ref(), &engines.on_demand, disk, artifact)
}

/// Tries each engine in turn; native code is compiled once for all engines of
/// one compatibility hash (the pooled and on-demand engines share theirs), so
/// an artifact that does not fit a pooling slot is not compiled twice.
pub(crate) fn compile_with<P>(
    pooled: Option<&EngineSet>,
    on_demand: &EngineSet,
    disk: Option<&DiskCache>,
    artifact: &Artifact<P>,
) -> Result<Compiled<P>, String> {
    try_engines(pooled, on_demand, disk, artifact, true)
}

/// [`compile_with`]; `again`: whether a cached file no engine loads may be
/// discarded and the whole tried once more from a fresh compile.
fn try_engines<P>(
    pooled: Option<&EngineSet>,
    on_demand: &EngineSet,
    disk: Option<&DiskCache>,
    artifact: &Artifact<P>,
    again: bool,
) -> Result<Compiled<P>, String> {
    let mut native: Option<(u64, Native)> = None;
    for set in pooled.into_iter().chain([on_demand]) {
        let is_last = std::ptr::eq(set, on_demand);
        if native.as_ref().map(|(compat, _)| *compat) != Some(set.compat) {
            native = Some((set.compat, native_code(set, disk, artifact)?));
        }
        let Some((_, code)) = &native else { continue };
        // A cached artifact known not to fit a slot skips the pooled engine.
        if let (false, Some(disk), Some(path)) = (is_last, disk, code.path()) {
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
            if let (Some(disk), Some(path)) = (disk, code.path()) {
                disk.record_misfit(path);
            }
            continue;
        }
        // No engine loads the cached file: it is stale or damaged (its
        // header may be whole and the rest not). Discard it, and start over
        // once: it is compiled afresh and saved again.
        let (Some(disk), Some(path), true) = (disk, code.path(), again) else {
            return Err(why);
        };
        disk.discard(path, &why);
        return try_engines(pooled, on_demand, Some(disk), artifact, false);
    }
    Err("no engine".into())
}

/// The artifact's native code loaded into `set`'s engine; unless `last`,
/// refused when it does not fit the engine's pooling slots.
fn fit<P>(
    code: &Native,
    set: &EngineSet,
    disk: Option<&DiskCache>,
    last: bool,
) -> Result<Compiled<P>, String> {
    match code.kind() {
        Precompiled::Component => {
            let component = code.component(set, disk)?;
            match misfit(component.resources_required(), true) {
                Some(why) if !last => Err(why),
                _ => Ok(Compiled::new(Code::Component(component))),
            }
        }
        Precompiled::Module => {
            let module = code.module(set, disk)?;
            match misfit(Some(module.resources_required()), false) {
                Some(why) if !last => Err(why),
                _ => Ok(Compiled::new(Code::Module(module))),
            }
        }
    }
}

/// `compiled`'s code for `to`'s engine, without compiling it again: as it is
/// if it runs on demand (it fits no slot), else serialized and loaded into
/// `to` (same compatibility hash); `None` if it cannot be.
pub(crate) fn moved<P>(
    compiled: &Compiled<P>,
    to: &EngineSet,
    on_demand: &EngineSet,
) -> Option<Compiled<P>> {
    if Engine::same(compiled.engine(), &on_demand.engine) {
        return Some(Compiled::new(compiled.code.clone()));
    }
    let native = match &compiled.code {
        Code::Component(component) => {
            Native::Bytes(component.serialize().ok()?, Precompiled::Component)
        }
        Code::Module(module) => Native::Bytes(module.serialize().ok()?, Precompiled::Module),
    };
    fit(&native, to, None, false).ok()
}
