//! Entry points: what a run calls in an instance. Modules follow `wasmtime
//! run` (`_initialize` first, then `""`, `_start` or `main`, or the export
//! named by `invoke`); command components export `wasi:cli/run@0.2.x#run`.

use crate::artifacts::Code;
use wasmtime::component::{Component, ComponentExportIndex};
use wasmtime::{ExternType, Module};

/// What to call in an instance.
pub(crate) enum Entry {
    /// A core module: `_initialize` first when exported, then the default export.
    Module {
        initialize: bool,
        default: Result<ModuleEntry, String>,
    },
    /// A command component's `wasi:cli/run#run`: WASI 0.3's (an async
    /// export, run on the store's concurrent event loop) when the component
    /// exports it, as Rust's toolchain does beside 0.2's stub, else 0.2's.
    Component {
        run: ComponentExportIndex,
        /// The export's name, such as `wasi:cli/run@0.2.3`.
        name: String,
        /// Whether it is `wasi:cli/run@0.3.x`.
        p3: bool,
    },
    /// A service: a component exporting `wasi:http/handler@0.3.x` (preferred)
    /// or `wasi:http/incoming-handler@0.2.x`, called once per request by the
    /// server, never run as a command.
    Proxy {
        /// The export's name, such as `wasi:http/incoming-handler@0.2.3`.
        name: String,
        /// Whether it is `wasi:http/handler@0.3.x`.
        p3: bool,
    },
}

/// The prefix of a WASIp2 HTTP handler's export.
pub(crate) const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2.";
/// The prefix of a WASIp3 HTTP handler's export.
pub(crate) const HANDLER_P3: &str = "wasi:http/handler@0.3.";

impl Entry {
    /// The entry conventions of `code`; an error when a component has no entry at all.
    pub(crate) fn of(code: &Code) -> Result<Entry, String> {
        match code {
            Code::Module(module) => Ok(Entry::Module {
                initialize: matches!(
                    module.get_export("_initialize"),
                    Some(ExternType::Func(ty)) if ty.params().len() == 0 && ty.results().len() == 0
                ),
                default: ModuleEntry::default_of(module),
            }),
            Code::Component(component) => {
                for (prefix, p3) in [("wasi:cli/run@0.3.", true), ("wasi:cli/run@0.2.", false)] {
                    if let Some(name) = export_named(component, prefix) {
                        let (run, name) = find_run_export(component, name)?;
                        return Ok(Entry::Component { run, name, p3 });
                    }
                }
                for (prefix, p3) in [(HANDLER_P3, true), (INCOMING_HANDLER, false)] {
                    if let Some(name) = export_named(component, prefix) {
                        return Ok(Entry::Proxy { name, p3 });
                    }
                }
                Err("entry point not found: the component exports neither `wasi:cli/run` (a command) nor `wasi:http/incoming-handler@0.2.x` or `wasi:http/handler@0.3.x` (an HTTP service)".into())
            }
        }
    }

    /// What a run with default settings calls, if anything.
    pub(crate) fn describe(&self) -> Option<String> {
        match self {
            Entry::Module {
                initialize,
                default,
            } => {
                let default = default.as_ref().ok().map(|e| format!("{:?}", e.name));
                match (initialize, default) {
                    (true, Some(name)) => Some(format!("_initialize, then {name}")),
                    (true, None) => Some("_initialize".into()),
                    (false, name) => name,
                }
            }
            Entry::Component { name, .. } => Some(format!("{name}#run")),
            Entry::Proxy { name, .. } => Some(format!("{name}#handle, once per HTTP request")),
        }
    }
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

/// The HTTP handler a component exports, if any — `wasi:http/handler@0.3.x`
/// before `wasi:http/incoming-handler@0.2.x` — and whether it is 0.3's. A
/// service may export `wasi:cli/run` too (Rust's std adds a stub): serving
/// looks for the handler whatever else it exports.
pub(crate) fn handler_of(component: &Component) -> Option<(String, bool)> {
    [(HANDLER_P3, true), (INCOMING_HANDLER, false)]
        .into_iter()
        .find_map(|(prefix, p3)| export_named(component, prefix).map(|name| (name, p3)))
}

/// The name of the component's first export that starts with `prefix`.
fn export_named(component: &Component, prefix: &str) -> Option<String> {
    component
        .component_type()
        .exports(component.engine())
        .map(|(name, _)| name)
        .find(|name| name.starts_with(prefix))
        .map(str::to_owned)
}

/// The `run` function of the component's export `name` (`wasi:cli/run@0.2.x` or `@0.3.x`).
fn find_run_export(
    component: &Component,
    name: String,
) -> Result<(ComponentExportIndex, String), String> {
    let instance = component
        .get_export_index(None, &name)
        .ok_or_else(|| format!("entry point not found: `{name}`"))?;
    let run = component
        .get_export_index(Some(&instance), "run")
        .ok_or_else(|| format!("entry point not found: `{name}` has no `run`"))?;
    Ok((run, name))
}
