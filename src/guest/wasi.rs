//! A guest's WASI context, built from its plan: exactly its env, argv,
//! mounts, stdio, network grant and resource cap.

use super::host::{HttpHooks, Imports, Wasi};
use super::instance::Instance;
use super::logging::GuestLog;
use super::logs::{GuestOutput, RequestOutput};
use crate::settings::{LogStream, StdinSpec};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;

/// The guest's WASI context: exactly the plan's env, argv, mounts and stdio.
///
/// For a request of a service, `request` tags its output lines with the request.
pub(crate) fn build_wasi(
    instance: &Instance,
    component: bool,
    request: Option<&RequestOutput>,
) -> Result<Wasi, String> {
    let plan = &instance.plan;
    let mut builder = WasiCtxBuilder::new();
    builder.args(&plan.argv).envs(&plan.env);
    let output = |stream| match request {
        Some(request) => request.stream(&instance.logs, stream, plan.output.clone()),
        None => GuestOutput {
            buffer: instance.logs.clone(),
            stream,
            sink: plan.output.clone(),
            request: None,
        },
    };
    builder
        .stdout(output(LogStream::Stdout))
        .stderr(output(LogStream::Stderr));
    match &plan.stdin {
        StdinSpec::Empty => {}
        StdinSpec::Bytes(bytes) => {
            builder.stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(bytes.clone()));
        }
        StdinSpec::Inherit => {
            builder.inherit_stdin();
        }
    }
    for mount in &plan.mounts {
        let perms = if mount.readonly {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        builder
            .preopened_dir(&mount.host, &mount.guest, perms)
            .map_err(|e| format!("cannot mount '{}': {e:#}", mount.host.display()))?;
    }
    if let Some(dir) = &plan.workdir {
        builder.initial_cwd(dir);
    }
    // Off unless the spec asks: wasmtime-wasi refuses TCP, UDP and name lookups
    // by default, and no address passes its default check.
    if plan.network {
        builder
            .inherit_network()
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(true);
    }
    // Every open descriptor, stream, socket and pollable is an entry in the
    // store's resource table: bounding the table bounds what a guest holds.
    let cap = plan.max_open_resources;
    Ok(if !component {
        let mut ctx = builder.build_p1();
        ctx.ctx().table.set_max_capacity(cap);
        Wasi::Preview1(ctx)
    } else {
        let mut table = wasmtime::component::ResourceTable::new();
        table.set_max_capacity(cap);
        Wasi::Preview2 {
            ctx: builder.build(),
            table,
            http: WasiHttpCtx::new(),
            hooks: HttpHooks {
                network: plan.network,
            },
            imports: Imports {
                config: instance.config.clone(),
                keyvalue: instance.keyvalue.clone(),
                log: GuestLog {
                    buffer: instance.logs.clone(),
                    request: request.map(|r| r.request.clone()),
                    sink: plan.output.clone(),
                },
                tls: super::tls::context(plan.network),
            },
        }
    })
}
