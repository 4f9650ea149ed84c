//! `wasi:logging/logging@0.1.0-draft` (wasmCloud's, and wasmtime's
//! `wasi-logging` proposal): a level, a context and a message become one
//! line of the container's log, with its level ([`LogEntry::level`]), under
//! the log's byte bound; the output sink sees it on stderr as
//! `LEVEL context: message`.
//!
//! [`LogEntry::level`]: crate::LogEntry::level

use super::host::HostState;
use super::logs::{LogBuffer, MAX_LINE_BYTES};
use crate::settings::{LogLevel, LogStream, OutputSink};
use std::sync::Arc;
use wasmtime::component::{ComponentType, Lift, WasmStr};
use wasmtime::StoreContextMut;

/// Where one store's log calls go.
pub(crate) struct GuestLog {
    pub(crate) buffer: Arc<LogBuffer>,
    /// The request whose handler logs, for a service.
    pub(crate) request: Option<super::logs::CurrentRequest>,
    pub(crate) sink: Option<OutputSink>,
}

/// The interface's `level`; made by lifting it from the guest.
#[derive(ComponentType, Lift, Clone, Copy)]
#[component(enum)]
#[repr(u8)]
#[allow(dead_code)]
enum Level {
    #[component(name = "trace")]
    Trace,
    #[component(name = "debug")]
    Debug,
    #[component(name = "info")]
    Info,
    #[component(name = "warn")]
    Warn,
    #[component(name = "error")]
    Error,
    #[component(name = "critical")]
    Critical,
}

impl From<Level> for LogLevel {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
            Level::Critical => LogLevel::Critical,
        }
    }
}

/// At most `limit` bytes of `text`, cut at a character boundary.
fn clipped(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<HostState>,
) -> wasmtime::Result<()> {
    let mut logging = linker.instance("wasi:logging/logging@0.1.0-draft")?;
    logging.func_wrap(
        "log",
        |mut cx: StoreContextMut<'_, HostState>,
         (level, context, message): (Level, WasmStr, WasmStr)|
         -> wasmtime::Result<()> {
            // Read in place and clipped: a line is no longer than any other line.
            let context = clipped(&context.to_str(&cx)?, MAX_LINE_BYTES / 4).to_string();
            let message = clipped(&message.to_str(&cx)?, MAX_LINE_BYTES).to_string();
            let level = LogLevel::from(level);
            let log = &cx.data_mut().imports().log;
            let line = if context.is_empty() {
                message
            } else {
                format!("{context}: {message}")
            };
            if let Some(sink) = &log.sink {
                (sink.0)(LogStream::Stderr, format!("{level} {line}\n").as_bytes());
            }
            log.buffer
                .push_logged(log.request.as_ref().map(|r| r.get()), level, line);
            Ok(())
        },
    )?;
    Ok(())
}
