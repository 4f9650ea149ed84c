//! `wasi:config/store`: the values of the spec's `config` (and the CLI's
//! `--config KEY=VALUE`), in both versions toolchains import —
//! `0.2.0-rc.1` (wasmtime's, wasmCloud's), through `wasmtime-wasi-config`,
//! and `0.2.0-draft-2024-09-27` (Spin 3's), the same two functions here.

use super::host::HostState;
use std::collections::BTreeMap;
use wasmtime::component::{ComponentType, Lower};
use wasmtime::StoreContextMut;
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};

/// A container's config values, made once at create and shared by its stores.
#[derive(Default)]
pub(crate) struct ConfigValues {
    /// As `wasmtime-wasi-config` reads them.
    vars: WasiConfigVariables,
    /// As the draft interface reads them (`WasiConfigVariables` keeps its map private).
    map: BTreeMap<String, String>,
}

impl ConfigValues {
    pub(crate) fn new(values: &[(String, String)]) -> Self {
        ConfigValues {
            vars: values
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            map: values.iter().cloned().collect(),
        }
    }
}

/// Spin's `error`: the same variant as rc.1's. The values are in memory, so
/// neither case is ever returned.
#[derive(ComponentType, Lower)]
#[component(variant)]
#[allow(dead_code)]
enum DraftError {
    #[component(name = "upstream")]
    Upstream(String),
    #[component(name = "io")]
    Io(String),
}

type Cx<'a> = StoreContextMut<'a, HostState>;
type Pairs = Vec<(String, String)>;

pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<HostState>,
) -> wasmtime::Result<()> {
    wasmtime_wasi_config::add_to_linker(linker, |state: &mut HostState| {
        WasiConfig::new(&state.imports().config.vars)
    })?;
    let mut draft = linker.instance("wasi:config/store@0.2.0-draft-2024-09-27")?;
    draft.func_wrap(
        "get",
        |mut cx: Cx<'_>,
         (key,): (String,)|
         -> wasmtime::Result<(Result<Option<String>, DraftError>,)> {
            Ok((Ok(cx.data_mut().imports().config.map.get(&key).cloned()),))
        },
    )?;
    draft.func_wrap(
        "get-all",
        |mut cx: Cx<'_>, (): ()| -> wasmtime::Result<(Result<Pairs, DraftError>,)> {
            let map = &cx.data_mut().imports().config.map;
            Ok((Ok(map
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()),))
        },
    )?;
    Ok(())
}
