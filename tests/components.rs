//! Real WASIp2 command components, built from WAT with the preview1 command adapter.

use crate::common::*;
use wasmpool::{detect_wasm_version_from_binary, Outcome, Runtime, ServiceSpec, WasiVersion};

#[test]
fn a_component_runs_and_prints() {
    let bytes = component(&print_module(&[("hello from p2\n", 1)], None));
    assert_eq!(detect_wasm_version_from_binary(&bytes), WasiVersion::Preview2);
    let (_dir, rt) = runtime(1);
    let (id, handle) = launch(&rt, "p2-hello", &ServiceSpec::default(), &bytes);
    assert_eq!(handle.wait(), Outcome::Exited(0));
    assert_eq!(stdout_lines(&rt, &id), ["hello from p2"]);
    assert_eq!(rt.wait_container(&id).unwrap(), 0);
}
