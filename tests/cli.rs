//! The `wasmpool` binary, driven as a user would drive it.

use crate::common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The CLI's cache for this test run: a private folder, made once.
fn cli_cache() -> &'static Path {
    static CACHE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    CACHE
        .get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

fn bin() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasmpool"));
    command.env("WASMPOOL_CACHE_DIR", cli_cache());
    command
}

fn write_wat(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, wat).unwrap();
    path
}

fn run(args: &[&str]) -> Output {
    bin().args(args).stdin(Stdio::null()).output().unwrap()
}

/// `wasmpool serve` of `file` on a free loopback port, once it said its URL;
/// the rest of its stderr is read (and kept) until it exits.
fn serve_cli(file: &Path) -> (std::process::Child, std::net::SocketAddr) {
    let mut child = bin()
        .args(["serve", "--addr", "127.0.0.1:0", file.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("Serving HTTP on http://")
        .unwrap_or_else(|| panic!("no URL in {line:?}"));
    let address = url.trim_end_matches('/').parse().unwrap();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    });
    (child, address)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_readme_first_command_prints_the_greeting() {
    let out = run(&["run", "examples/hello.wat"]);
    assert_eq!(text(&out.stdout), "Hello from a WebAssembly guest!\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn the_guest_exit_code_passes_through() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_wat(dir.path(), "exit.wat", &exit_module(17));
    assert_eq!(
        run(&["run", file.to_str().unwrap()]).status.code(),
        Some(17)
    );
}

#[test]
fn stdout_and_stderr_stream_in_order_and_args_follow_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_wat(
        dir.path(),
        "print.wat",
        &print_module(&[("a\n", 1), ("b\n", 2), ("c\n", 1)], None),
    );
    let out = run(&["run", file.to_str().unwrap()]);
    assert_eq!(text(&out.stdout), "a\nc\n");
    assert_eq!(text(&out.stderr), "b\n");
    let args = write_wat(dir.path(), "args.wat", PRINT_ARGS_AND_ENV);
    let out = run(&["run", args.to_str().unwrap(), "--", "x", "--y"]);
    assert_eq!(text(&out.stdout), "args.wat\nx\n--y\n");
}

#[test]
fn the_host_environment_is_not_visible_unless_passed() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_wat(dir.path(), "env.wat", PRINT_ARGS_AND_ENV);
    let out = bin()
        .args([
            "run",
            "--env",
            "A=1",
            "--env",
            "PASSED",
            file.to_str().unwrap(),
        ])
        .env("SECRET_HOST_VAR", "hidden")
        .env("PASSED", "through")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(stdout, "env.wat\nA=1\nPASSED=through\n");
    assert!(!stdout.contains("SECRET_HOST_VAR"));
}

#[test]
fn a_read_only_dir_refuses_a_write_and_a_dir_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let file = write_wat(dir.path(), "write.wat", &write_file_module("f.txt"));
    let mount = format!("{}::/data", data.path().display());
    let refused = run(&["run", "--ro-dir", &mount, file.to_str().unwrap()]);
    assert_eq!(
        refused.status.code(),
        Some(63),
        "EPERM from the read-only mount"
    );
    assert!(!data.path().join("f.txt").exists());
    let allowed = run(&["run", "--dir", &mount, file.to_str().unwrap()]);
    assert_eq!(allowed.status.code(), Some(0));
    assert!(data.path().join("f.txt").exists());
}

#[test]
fn timeout_fuel_and_memory_limits_end_the_guest_with_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let spin = write_wat(dir.path(), "spin.wat", SPIN);
    let out = run(&["run", "--timeout", "300ms", spin.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(124));
    assert!(
        text(&out.stderr).contains("deadline exceeded"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["run", "--fuel", "5000", spin.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(152));
    assert!(text(&out.stderr).contains("out of fuel"));
    let grow = write_wat(dir.path(), "grow.wat", &grow_module(1, 4));
    assert_eq!(
        run(&["run", "--max-memory", "128Ki", grow.to_str().unwrap()])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        run(&["run", "--max-memory", "1Mi", grow.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn usage_errors_exit_2_and_bad_files_exit_with_a_one_line_error() {
    assert_eq!(run(&["run"]).status.code(), Some(2));
    assert_eq!(
        run(&["run", "--timeout", "soon", "x.wat"]).status.code(),
        Some(2)
    );
    let missing = run(&["run", "/no/such/file.wasm"]);
    assert_eq!(missing.status.code(), Some(125));
    let stderr = text(&missing.stderr);
    assert!(
        stderr.starts_with("wasmpool: cannot read '/no/such/file.wasm'"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\x7fELF\x02\x01\x01\0\0\0").unwrap();
    let out = run(&["run", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(126));
    assert!(
        text(&out.stderr).contains("not a WebAssembly binary"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn inspect_tells_modules_from_components_and_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["inspect", "examples/hello.wat"]);
    assert!(text(&out.stdout).contains("WASIp1 core module"));
    assert!(text(&out.stdout).contains("wasi_snapshot_preview1::fd_write"));
    assert_eq!(out.status.code(), Some(0));
    let comp = dir.path().join("c.wasm");
    std::fs::write(&comp, component(&exit_module(0))).unwrap();
    let out = run(&["inspect", comp.to_str().unwrap()]);
    assert!(text(&out.stdout).contains("WASIp2 component"));
    assert!(text(&out.stdout).contains("wasi:cli/run@0.2"));
    let no_entry = write_wat(
        dir.path(),
        "lib.wat",
        r#"(module (memory (export "memory") 1))"#,
    );
    let out = run(&["inspect", no_entry.to_str().unwrap()]);
    assert!(
        text(&out.stdout).contains("runs: no: entry point not found"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn bench_reports_throughput_and_percentiles() {
    let out = run(&["bench", "examples/hello.wat", "-n", "200", "-w", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("200 instances of 'examples/hello.wat' on 2 workers"),
        "{stdout}"
    );
    assert!(
        stdout.contains("instances/s") && stdout.contains("p99"),
        "{stdout}"
    );
}

/// Starts `run` on a guest that prints "ready" and then blocks; returns once it printed.
fn start_until_ready(args: &[&str], stdin: Stdio) -> std::process::Child {
    let mut child = bin()
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    child
}

/// A guest that prints "ready", then spins.
fn ready_spin() -> String {
    cat_module(true).replace(CAT_LOOP, "(loop $spin (br $spin))")
}

#[test]
fn ctrl_c_stops_a_spinning_guest_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let spin = write_wat(dir.path(), "spin.wat", &ready_spin());
    let child = start_until_ready(&["run", spin.to_str().unwrap()], Stdio::null());
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
}

#[test]
fn a_guest_blocked_on_stdin_is_ended_by_timeout_and_by_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let cat = write_wat(dir.path(), "cat.wat", &cat_module(true));
    // A pipe whose writer stays open: the guest's read blocks.
    let mut blocked = bin()
        .args(["run", "--timeout", "300ms", cat.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _writer = blocked.stdin.take();
    let out = blocked.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "ready\n");
    assert_eq!(out.status.code(), Some(124));

    let mut child = start_until_ready(&["run", cat.to_str().unwrap()], Stdio::piped());
    let _writer = child.stdin.take();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(child.wait().unwrap().code(), Some(130));
}

#[test]
fn piped_stdin_reaches_the_guest() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let cat = write_wat(dir.path(), "cat.wat", &cat_module(false));
    let mut child = bin()
        .args(["run", cat.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped line\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "piped line\n");
}

#[test]
fn a_component_file_runs_like_a_module() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.wasm");
    std::fs::write(
        &file,
        component(&print_module(&[("from a component\n", 1)], None)),
    )
    .unwrap();
    let out = run(&["run", file.to_str().unwrap()]);
    assert_eq!(text(&out.stdout), "from a component\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn everything_after_the_file_is_the_guests_even_what_looks_like_our_options() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_wat(dir.path(), "args.wat", PRINT_ARGS_AND_ENV);
    let out = run(&[
        "run",
        "--env",
        "A=1",
        file.to_str().unwrap(),
        "x",
        "--env",
        "-v",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "args.wat\nx\n--env\n-v\nA=1\n");
}

#[test]
fn exit_statuses_pass_through_and_a_negative_one_is_255() {
    let dir = tempfile::tempdir().unwrap();
    let exit200 = write_wat(dir.path(), "exit200.wat", &exit_module(200));
    assert_eq!(
        run(&["run", exit200.to_str().unwrap()]).status.code(),
        Some(200)
    );
    let minus_one = write_wat(
        dir.path(),
        "minus.wat",
        r#"(module (memory (export "memory") 1) (func (export "main") (result i32) (i32.const -1)))"#,
    );
    assert_eq!(
        run(&["run", minus_one.to_str().unwrap()]).status.code(),
        Some(255)
    );
}

#[test]
fn invoke_and_trapping_imports_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = write_wat(
        dir.path(),
        "reactor.wat",
        r#"(module
            (memory (export "memory") 1)
            (global $n (mut i32) (i32.const 0))
            (func (export "_initialize") (global.set $n (i32.const 40)))
            (func (export "answer") (result i32) (i32.add (global.get $n) (i32.const 2))))"#,
    );
    let path = reactor.to_str().unwrap();
    assert_eq!(
        run(&["run", "--invoke", "answer", path]).status.code(),
        Some(42)
    );
    let out = run(&["run", path]);
    assert_eq!(out.status.code(), Some(126));
    assert!(
        text(&out.stderr).contains("entry point not found"),
        "{}",
        text(&out.stderr)
    );
    let inspected = run(&["inspect", path]);
    assert!(
        text(&inspected.stdout).contains("entry: _initialize"),
        "{}",
        text(&inspected.stdout)
    );

    let unknown = write_wat(
        dir.path(),
        "unknown.wat",
        r#"(module
            (import "vendor" "missing" (func $missing))
            (memory (export "memory") 1)
            (func (export "_start") (call $missing)))"#,
    );
    let path = unknown.to_str().unwrap();
    let out = run(&["run", path]);
    assert_eq!(out.status.code(), Some(126));
    assert!(
        text(&out.stderr).contains("missing"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["run", "--trap-unknown-imports", path]);
    assert_eq!(out.status.code(), Some(134), "{}", text(&out.stderr));
}

#[test]
fn one_v_logs_wasmpool_only_and_two_add_wasmtime_and_cranelift() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_wat(dir.path(), "hello.wat", &exit_module(0));
    let verbose = |flag: &str| {
        // A fresh cache, so the artifact compiles and cranelift has something to say.
        let cache = tempfile::tempdir().unwrap();
        let out = bin()
            .env("WASMPOOL_CACHE_DIR", cache.path())
            .env_remove("RUST_LOG")
            .args([flag, "run", file.to_str().unwrap()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        text(&out.stderr)
    };
    let one = verbose("-v");
    assert!(one.contains(" wasmpool"), "{one}");
    assert!(
        !one.contains("cranelift") && !one.contains(" wasmtime"),
        "{one}"
    );
    let two = verbose("-vv");
    assert!(two.contains("cranelift"), "{two}");
}

#[test]
fn absurd_bench_settings_are_refused_with_the_value() {
    let out = run(&["bench", "examples/hello.wat", "--instances", "10000000000"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("10000000000"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&[
        "bench",
        "examples/hello.wat",
        "--workers",
        "100000000",
        "-n",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("workers"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn pull_and_run_take_an_image_reference_from_a_registry() {
    use crate::common::registry::Registry;
    let registry = Registry::start();
    registry.push_wasm(
        "cli/hello:v1",
        &wasm(&print_module(&[("pulled hello", 1)], Some(3))),
    );
    let image = registry.reference("cli/hello:v1");
    let cache = tempfile::tempdir().unwrap();
    let wasmpool = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_wasmpool"))
            .env("WASMPOOL_CACHE_DIR", cache.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = wasmpool(&["run", "--pull", "never", &image]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("pull policy is Never"),
        "{}",
        text(&out.stderr)
    );

    let out = wasmpool(&["pull", &image]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("pulled {image} (sha256:")));
    let out = wasmpool(&["pull", &image]);
    assert!(
        text(&out.stdout).contains("is up to date"),
        "{}",
        text(&out.stdout)
    );

    let out = wasmpool(&["run", &image, "guest-arg"]);
    assert_eq!(text(&out.stdout), "pulled hello");
    assert_eq!(out.status.code(), Some(3));

    // The tag moves: the default (missing) keeps the cached copy, always fetches the new one.
    registry.push_wasm(
        "cli/hello:v1",
        &wasm(&print_module(&[("moved hello", 1)], Some(4))),
    );
    let out = wasmpool(&["run", &image]);
    assert_eq!(text(&out.stdout), "pulled hello");
    let out = wasmpool(&["run", "--pull", "always", &image]);
    assert_eq!(text(&out.stdout), "moved hello");
    assert_eq!(out.status.code(), Some(4));

    let missing = registry.reference("cli/missing:v1");
    let out = wasmpool(&["pull", &missing]);
    assert_eq!(out.status.code(), Some(125));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("not found (404)") && stderr.lines().count() == 1,
        "{stderr}"
    );
    // A file name that does not exist is still read as a file.
    let out = wasmpool(&["run", "no-such-file.wasm"]);
    assert!(text(&out.stderr).contains("cannot read 'no-such-file.wasm'"));
}

#[test]
fn a_binary_file_runs_and_a_rewritten_one_runs_its_new_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tool.wasm");
    std::fs::write(&file, wasm(&exit_module(21))).unwrap();
    let path = file.to_str().unwrap();
    assert_eq!(run(&["run", path]).status.code(), Some(21));
    assert_eq!(run(&["run", path]).status.code(), Some(21));
    std::fs::write(&file, wasm(&exit_module(22))).unwrap();
    assert_eq!(run(&["run", path]).status.code(), Some(22));
    std::fs::write(&file, b"\0asm\x01\0\0\0\x7f garbage").unwrap();
    let out = run(&["run", path]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
}

#[test]
fn serve_listens_prints_its_url_answers_and_drains_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.wasm");
    std::fs::write(&file, crate::common::service::hello_handler()).unwrap();
    let (mut child, address) = serve_cli(&file);
    let reply = crate::common::service::get(address, "/hello");
    assert_eq!((reply.status, reply.text().as_str()), (200, "hello\n"));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn run_of_a_service_says_to_serve_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("service.wasm");
    std::fs::write(&file, crate::common::service::hello_handler()).unwrap();
    let out = bin()
        .args(["run", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126));
    let error = text(&out.stderr);
    assert!(error.contains("wasmpool serve"), "{error}");
    assert!(!error.contains("discarding"), "{error}");
}

#[test]
fn wasmtime_s_and_w_options_map_onto_ours_and_unknown_ones_name_what_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let spin = write_wat(dir.path(), "spin.wat", SPIN);
    let spin = spin.to_str().unwrap();
    let out = run(&["run", "-W", "fuel=5000", spin]);
    assert_eq!(out.status.code(), Some(152), "{}", text(&out.stderr));
    let out = run(&["run", "-W", "timeout=300ms", spin]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    // Comma-separated, as wasmtime takes them: a grow past the limit traps (137).
    let grow = write_wat(dir.path(), "grow.wat", &grow_module(1, 4));
    let out = run(&[
        "run",
        "-W",
        "max-memory-size=131072,trap-on-grow-failure",
        grow.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    // -S inherit-env passes the host's variables.
    let env = write_wat(dir.path(), "env.wat", PRINT_ARGS_AND_ENV);
    let out = bin()
        .args(["run", "-S", "inherit-env", env.to_str().unwrap()])
        .env("FROM_THE_HOST", "yes")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("FROM_THE_HOST=yes"),
        "{}",
        text(&out.stdout)
    );
    // What we do not have is a usage error naming what we have.
    for (flag, option, named) in [
        ("-S", "config-var=a=b", "inherit-network"),
        ("-W", "max-wasm-stack=1000", "max-memory-size"),
    ] {
        let out = run(&["run", flag, option, spin]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains(named), "{}", text(&out.stderr));
    }
}

#[test]
fn an_option_of_ours_after_the_file_goes_to_the_guest_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let args = write_wat(dir.path(), "args.wat", PRINT_ARGS_AND_ENV);
    let out = run(&["run", args.to_str().unwrap(), "--fuel", "10", "--mine"]);
    assert_eq!(text(&out.stdout), "args.wat\n--fuel\n10\n--mine\n");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("`--fuel`") && stderr.contains("guest's argument"),
        "{stderr}"
    );
    assert!(!stderr.contains("--mine"), "{stderr}");
}

#[test]
fn serve_drains_and_exits_on_sigterm_as_a_service_manager_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.wasm");
    std::fs::write(&file, crate::common::service::hello_handler()).unwrap();
    let (mut child, address) = serve_cli(&file);
    assert_eq!(crate::common::service::get(address, "/").status, 200);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = std::time::Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        assert!(started.elapsed() < NO_HANG, "serve ignored SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
}

#[test]
fn durations_parse_one_way_and_cache_dir_is_a_flag() {
    let dir = tempfile::tempdir().unwrap();
    let spin = write_wat(dir.path(), "spin.wat", SPIN);
    // humantime's compound form and a bare number of seconds.
    let out = run(&["run", "--timeout", "0m0.3s", spin.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    let cache = tempfile::tempdir().unwrap();
    let hello = std::fs::canonicalize("examples/hello.wat").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wasmpool"))
        .args(["--cache-dir", cache.path().to_str().unwrap(), "run"])
        .arg(&hello)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        cache.path().join("compiled").is_dir(),
        "the compiled cache went elsewhere"
    );
}
