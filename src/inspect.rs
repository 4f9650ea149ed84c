//! Looking inside an artifact without running it: kind, imports, exports, and whether it would run.

use crate::artifacts::{
    detect_wasm_version_from_binary, is_component, ArtifactCache, Engines, WasiVersion,
};
use crate::guest::{Linking, Prepared};
use crate::settings::WasmConfig;
use wasmtime::component::Component;
use wasmtime::Module;

/// What an artifact is and whether this runtime would run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// What the header says (the seed's detection rules).
    pub version: WasiVersion,
    /// `"WASIp1 core module"`, `"WASIp2 component"`, `"WASIp3 component"`
    /// (its entry is WASI 0.3's `wasi:cli/run` or `wasi:http/handler`) or `"not WebAssembly"`.
    pub kind: &'static str,
    /// Imports as `module::name` (core) or interface names (component).
    pub imports: Vec<String>,
    /// Export names.
    pub exports: Vec<String>,
    /// What a run calls, such as `_initialize, then ""` or `wasi:cli/run@0.2.3#run`.
    pub entry: Option<String>,
    /// Why it would not run, or `None` if it would.
    pub problem: Option<String>,
}

/// Compiles `bytes` (a module, a component or WAT text) and reports what it is,
/// what it imports and exports, and why it would not run, if it would not.
///
/// # Examples
/// ```
/// let wasm = wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap();
/// let report = wasmpool::inspect(&wasm);
/// assert_eq!(report.kind, "WASIp1 core module");
/// assert!(report.problem.unwrap().contains("_start"));
/// ```
pub fn inspect(bytes: &[u8]) -> Inspection {
    let mut report = Inspection {
        version: detect_wasm_version_from_binary(bytes),
        kind: "not WebAssembly",
        imports: Vec::new(),
        exports: Vec::new(),
        entry: None,
        problem: None,
    };
    let config = WasmConfig {
        pooling: false,
        ..Default::default()
    };
    let engines = match Engines::new(&config) {
        Ok(engines) => engines,
        Err(e) => {
            report.problem = Some(format!("cannot create an engine: {e:#}"));
            return report;
        }
    };
    let engine = &engines.on_demand.engine;
    if is_component(bytes) {
        report.kind = "WASIp2 component";
        if let Ok(component) = Component::new(engine, bytes) {
            let ty = component.component_type();
            report.imports = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
            report.exports = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
        }
    } else if let Ok(module) = Module::new(engine, bytes) {
        report.kind = "WASIp1 core module";
        report.imports = module
            .imports()
            .map(|i| format!("{}::{}", i.module(), i.name()))
            .collect();
        report.exports = module.exports().map(|e| e.name().to_string()).collect();
    }
    let linking = match Linking::new(&engines) {
        Ok(linking) => linking,
        Err(e) => {
            report.problem = Some(format!("cannot create the WASI linkers: {e:#}"));
            return report;
        }
    };
    let artifact = ArtifactCache::<Prepared>::new(0).intern(bytes);
    match artifact.compiled(&engines, None) {
        Ok(compiled) => {
            let prepared = Prepared::of(compiled, &linking);
            report.entry = prepared.describe_entry();
            report.problem = prepared.problem();
            if prepared.is_p3() {
                report.kind = "WASIp3 component";
            }
        }
        Err(problem) => report.problem = Some(problem),
    }
    report
}
