//! Native code of an artifact: loaded from the compiled cache, or compiled now
//! (and saved there), once for all engines of one compatibility hash.

use super::detect::{detect_wasm_version_from_binary, WasiVersion};
use super::disk_cache::{CachedFile, DiskCache};
use super::engine::EngineSet;
use super::Artifact;
use wasmtime::component::Component;
use wasmtime::{Engine, Module, Precompiled};

/// An artifact's native code, ready to deserialize into any engine of one
/// compatibility hash: a file of the compiled cache, or fresh from the compiler.
pub(crate) enum Native {
    File(CachedFile),
    Bytes(Vec<u8>, Precompiled),
}

impl Native {
    pub(crate) fn kind(&self) -> Precompiled {
        match self {
            Native::File(cached) => cached.kind,
            Native::Bytes(_, kind) => *kind,
        }
    }

    /// Where it is in the compiled cache, if it is a file there.
    pub(crate) fn path(&self) -> Option<&std::path::Path> {
        match self {
            Native::File(cached) => Some(&cached.path),
            Native::Bytes(..) => None,
        }
    }

    pub(crate) fn module(
        &self,
        set: &EngineSet,
        disk: Option<&DiskCache>,
    ) -> Result<Module, String> {
        match (self, disk) {
            (Native::File(cached), Some(disk)) => disk.module(&set.engine, cached),
            (Native::Bytes(bytes, _), _) => deserialize_module(&set.engine, bytes),
            (Native::File(..), None) => Err("no compiled cache".into()),
        }
    }

    pub(crate) fn component(
        &self,
        set: &EngineSet,
        disk: Option<&DiskCache>,
    ) -> Result<Component, String> {
        match (self, disk) {
            (Native::File(cached), Some(disk)) => disk.component(&set.engine, cached),
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

/// The artifact's native code for `set`'s compatibility hash: the compiled
/// cache's file if it has one, else compiled now (and saved there).
pub(crate) fn native_code<P>(
    set: &EngineSet,
    disk: Option<&DiskCache>,
    artifact: &Artifact<P>,
) -> Result<Native, String> {
    if let Some(disk) = disk {
        let path = disk.path(set.compat, &artifact.digest);
        if let Some(cached) = disk.open_artifact(&path) {
            set.loads
                .hits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(Native::File(cached));
        }
    }
    compile_native(set, disk, artifact)
}

/// Compiles the artifact for `set`'s engine, saving the result in `disk` if given.
fn compile_native<P>(
    set: &EngineSet,
    disk: Option<&DiskCache>,
    artifact: &Artifact<P>,
) -> Result<Native, String> {
    let path = disk.map(|d| d.path(set.compat, &artifact.digest));
    set.loads
        .misses
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
        if let Some(cached) = disk.open_artifact(path).filter(|c| c.kind == kind) {
            return Ok(Native::File(cached));
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
