//! Pulls from a real OCI registry (Debian's `docker-registry`) on loopback.

use crate::common::registry::*;
use crate::common::*;
use std::sync::Arc;
use std::time::Duration;
use wasmpool::{
    ContainerId, Error, ImageSpec, Outcome, PullPolicy, RegistryAuth, Runtime, ServiceSpec,
    WasmRuntime,
};

fn spec(image: &str, policy: PullPolicy) -> ServiceSpec {
    ServiceSpec {
        image: ImageSpec {
            name: image.to_string(),
            pull_policy: policy,
        },
        ..Default::default()
    }
}

/// Creates a container of `image` with `policy`, runs it, and returns its exit code.
fn run_image(runtime: &WasmRuntime, name: &str, image: &str, policy: PullPolicy) -> i32 {
    let id = ContainerId::new(name, 1);
    runtime
        .create_container(&id, &spec(image, policy))
        .unwrap_or_else(|e| panic!("create {image}: {e}"));
    let outcome = wait_bounded(&runtime.start(&id).unwrap());
    runtime.remove_container(&id).unwrap();
    match outcome {
        Outcome::Exited(code) => code,
        other => panic!("{image} did not exit: {other}"),
    }
}

fn pull_error(result: wasmpool::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(error @ Error::Pull { .. }) => error.to_string(),
        other => panic!("expected a pull error, got {other:?}"),
    }
}

/// Files in the cache folder whose names contain `part`.
fn cache_files(dir: &std::path::Path, part: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(part))
        .collect()
}

#[test]
fn an_image_pulled_by_tag_runs_and_lands_in_the_seed_cache_path() {
    let registry = Registry::start();
    let digest = registry.push_wasm("demo/exit:v1", &wasm(&exit_module(7)));
    let (dir, runtime) = runtime(1);
    let image = registry.reference("demo/exit:v1");
    assert_eq!(
        run_image(&runtime, "tag", &image, PullPolicy::IfNotPresent),
        7
    );
    let key = image.replace(['/', ':', '@'], "_");
    let file = dir.path().join(format!("{key}.wasm"));
    assert_eq!(std::fs::read(&file).unwrap(), wasm(&exit_module(7)));
    let recorded = std::fs::read_to_string(dir.path().join(format!("{key}.wasm.digest"))).unwrap();
    // The digest, then the reference it was pulled by.
    assert_eq!(
        recorded.lines().collect::<Vec<_>>(),
        [digest.as_str(), image.as_str()]
    );
    assert!(cache_files(dir.path(), ".pulling-").is_empty());
}

#[test]
fn an_image_pulled_by_digest_is_verified_and_runs() {
    let registry = Registry::start();
    let digest = registry.push_wasm("demo/bydigest:v1", &wasm(&exit_module(3)));
    let (_dir, runtime) = runtime(1);
    let image = registry.reference(&format!("demo/bydigest@{digest}"));
    runtime.pull_image(&image).unwrap();
    assert_eq!(run_image(&runtime, "digest", &image, PullPolicy::Never), 3);
    // A digest no manifest has is not found.
    let unknown = registry.reference(&format!("demo/bydigest@{}", digest_of(b"nothing")));
    assert!(
        pull_error(runtime.pull(&unknown, PullPolicy::IfNotPresent)).contains("not found (404)")
    );
}

#[test]
fn a_cached_image_is_served_with_the_registry_stopped_unless_the_policy_is_always() {
    let mut registry = Registry::start();
    registry.push_wasm("demo/offline:v1", &wasm(&exit_module(5)));
    let (_dir, runtime) = runtime(1);
    let image = registry.reference("demo/offline:v1");
    let first = runtime.pull(&image, PullPolicy::IfNotPresent).unwrap();
    assert!(first.downloaded);
    registry.stop();
    assert_eq!(
        run_image(&runtime, "offline", &image, PullPolicy::IfNotPresent),
        5
    );
    let again = runtime.pull(&image, PullPolicy::IfNotPresent).unwrap();
    assert!(!again.downloaded);
    assert_eq!(again.digest, first.digest);
    // Always must ask the registry, and says it cannot.
    let error = pull_error(runtime.pull(&image, PullPolicy::Always));
    assert!(error.contains("cannot connect to"), "{error}");
}

#[test]
fn always_downloads_only_when_the_tag_moved_and_then_runs_the_new_bytes() {
    let registry = Registry::start();
    let (_dir, runtime) = runtime(1);
    let image = registry.reference("demo/moving:latest");
    registry.push_wasm("demo/moving:latest", &wasm(&exit_module(1)));
    assert_eq!(run_image(&runtime, "v1", &image, PullPolicy::Always), 1);
    let unchanged = runtime.pull(&image, PullPolicy::Always).unwrap();
    assert!(!unchanged.downloaded, "the tag did not move: {unchanged:?}");
    let moved = registry.push_wasm("demo/moving:latest", &wasm(&exit_module(2)));
    // IfNotPresent keeps the cached copy; Always sees the move.
    assert_eq!(
        run_image(&runtime, "kept", &image, PullPolicy::IfNotPresent),
        1
    );
    assert_eq!(run_image(&runtime, "v2", &image, PullPolicy::Always), 2);
    let now = runtime.pull(&image, PullPolicy::Always).unwrap();
    assert_eq!(now.digest.as_deref(), Some(moved.as_str()));
    assert!(!now.downloaded);
}

#[test]
fn a_layer_whose_bytes_do_not_match_its_digest_is_refused_and_leaves_nothing() {
    let registry = Registry::start();
    let module = wasm(&print_module(&[("genuine", 1)], None));
    registry.push_wasm("demo/tampered:v1", &module);
    // The registry serves what its storage holds: change a byte behind its back.
    let blob = registry.blob_file(&digest_of(&module));
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let (dir, runtime) = runtime(1);
    let image = registry.reference("demo/tampered:v1");
    let error = pull_error(runtime.pull(&image, PullPolicy::IfNotPresent));
    assert!(error.contains("digest mismatch"), "{error}");
    assert!(cache_files(dir.path(), "tampered").is_empty());
    assert!(cache_files(dir.path(), ".pulling-").is_empty());
    let id = ContainerId::new("tampered", 1);
    assert!(runtime
        .create_container(&id, &spec(&image, PullPolicy::Never))
        .is_err());
}

#[test]
fn a_manifest_whose_bytes_do_not_match_the_requested_digest_is_refused() {
    let registry = Registry::start();
    let digest = registry.push_wasm("demo/badmanifest:v1", &wasm(&exit_module(0)));
    let blob = registry.blob_file(&digest);
    let text = std::fs::read_to_string(&blob).unwrap();
    std::fs::write(&blob, text.replace("module.wasm", "module.WASM")).unwrap();
    let (dir, runtime) = runtime(1);
    let image = registry.reference(&format!("demo/badmanifest@{digest}"));
    let error = pull_error(runtime.pull(&image, PullPolicy::IfNotPresent));
    assert!(error.contains("digest"), "{error}");
    assert!(cache_files(dir.path(), "badmanifest").is_empty());
}

#[test]
fn missing_repositories_and_tags_are_not_found() {
    let registry = Registry::start();
    registry.push_wasm("demo/here:v1", &wasm(&exit_module(0)));
    let (_dir, runtime) = runtime(1);
    for missing in ["demo/here:v2", "demo/nowhere:v1"] {
        let error = pull_error(runtime.pull(&registry.reference(missing), PullPolicy::Always));
        assert!(error.contains("not found (404)"), "{error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
}

#[test]
fn a_container_image_is_refused_naming_the_media_types_found() {
    let registry = Registry::start();
    registry.push(
        "demo/linux:v1",
        "application/vnd.oci.image.config.v1+json",
        br#"{"architecture":"amd64","os":"linux"}"#,
        &[(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            b"not a tarball",
        )],
    );
    // Two wasm layers: which one would run is a guess, so none does.
    let module = wasm(&exit_module(0));
    registry.push(
        "demo/twolayers:v1",
        WASM_CONFIG,
        b"{}",
        &[(WASM_LAYER, &module), (WASM_LAYER, &wasm(&exit_module(1)))],
    );
    let (dir, runtime) = runtime(1);
    let error = pull_error(runtime.pull(&registry.reference("demo/linux:v1"), PullPolicy::Always));
    assert!(error.contains("not a WebAssembly artifact"), "{error}");
    assert!(
        error.contains("application/vnd.oci.image.layer.v1.tar+gzip"),
        "{error}"
    );
    assert!(
        error.contains("application/vnd.oci.image.config.v1+json"),
        "{error}"
    );
    let error =
        pull_error(runtime.pull(&registry.reference("demo/twolayers:v1"), PullPolicy::Always));
    assert!(error.contains("not a WebAssembly artifact"), "{error}");
    // A wasm media type over bytes that are not WebAssembly.
    registry.push(
        "demo/liar:v1",
        WASM_CONFIG,
        b"{}",
        &[(WASM_LAYER, b"#!/bin/sh\necho hi\n")],
    );
    let error = pull_error(runtime.pull(&registry.reference("demo/liar:v1"), PullPolicy::Always));
    assert!(error.contains("not WebAssembly"), "{error}");
    assert!(cache_files(dir.path(), ".wasm").is_empty());
}

#[test]
fn the_older_wasm_layer_type_and_an_index_with_a_wasi_platform_are_pulled() {
    let registry = Registry::start();
    let (_dir, runtime) = runtime(1);
    registry.push(
        "demo/old:v1",
        "application/vnd.wasm.config.v1+json",
        b"{}",
        &[(
            "application/vnd.wasm.content.layer.v1+wasm",
            &wasm(&exit_module(11)),
        )],
    );
    let old = registry.reference("demo/old:v1");
    assert_eq!(
        run_image(&runtime, "old", &old, PullPolicy::IfNotPresent),
        11
    );

    // An index: a linux/amd64 container image and a wasi/wasm artifact.
    let linux = registry.push(
        "demo/multi:linux",
        "application/vnd.oci.image.config.v1+json",
        b"{}",
        &[("application/vnd.oci.image.layer.v1.tar", b"tar")],
    );
    let wasi = registry.push_wasm("demo/multi:wasi", &wasm(&exit_module(12)));
    let index_digest = registry.push_index(
        "demo/multi:v1",
        &[
            (
                linux.clone(),
                registry.manifest_size(&linux),
                "linux",
                "amd64",
            ),
            (wasi.clone(), registry.manifest_size(&wasi), "wasi", "wasm"),
        ],
    );
    let multi = registry.reference("demo/multi:v1");
    assert_eq!(
        run_image(&runtime, "multi", &multi, PullPolicy::IfNotPresent),
        12
    );
    let pulled = runtime.pull(&multi, PullPolicy::Always).unwrap();
    assert_eq!(pulled.digest.as_deref(), Some(index_digest.as_str()));
    assert!(!pulled.downloaded);

    // An index without a wasm platform is refused naming what it has.
    registry.push_index(
        "demo/multi:linux-only",
        &[(
            linux.clone(),
            registry.manifest_size(&linux),
            "linux",
            "amd64",
        )],
    );
    let error = pull_error(runtime.pull(
        &registry.reference("demo/multi:linux-only"),
        PullPolicy::Always,
    ));
    assert!(
        error.contains("wasi/wasm") && error.contains("linux/amd64"),
        "{error}"
    );
}

#[test]
fn a_pulled_component_runs_as_a_component() {
    let registry = Registry::start();
    let component = component(&print_module(&[("from a component", 1)], None));
    registry.push_wasm("demo/component:v1", &component);
    let (_dir, runtime) = runtime(1);
    let image = registry.reference("demo/component:v1");
    let id = ContainerId::new("component", 1);
    runtime
        .create_container(&id, &spec(&image, PullPolicy::IfNotPresent))
        .unwrap();
    assert_eq!(
        wait_bounded(&runtime.start(&id).unwrap()),
        Outcome::Exited(0)
    );
    assert_eq!(stdout_lines(&runtime, &id), ["from a component"]);
}

#[test]
fn a_registry_that_requires_basic_auth_refuses_anonymous_pulls_and_serves_credentials() {
    let registry = Registry::with_basic_auth("puller", "s3cret-pass");
    registry.push_wasm("private/app:v1", &wasm(&exit_module(9)));
    let image = registry.reference("private/app:v1");

    let (dir, anonymous) = runtime(1);
    let error = pull_error(anonymous.pull(&image, PullPolicy::IfNotPresent));
    assert!(error.contains("unauthorized (401)"), "{error}");
    assert!(cache_files(dir.path(), "private").is_empty());

    let (_dir, wrong) = runtime_with(1, |config| {
        config.registry_auth.insert(
            registry.host.clone(),
            RegistryAuth::Basic {
                username: "puller".into(),
                password: "wrong".into(),
            },
        );
    });
    let error = pull_error(wrong.pull(&image, PullPolicy::IfNotPresent));
    assert!(error.contains("unauthorized (401)"), "{error}");
    assert!(
        !error.contains("wrong"),
        "the error must not quote the password: {error}"
    );

    let (_dir, authorized) = runtime_with(1, |config| {
        config.registry_auth.insert(
            registry.host.clone(),
            RegistryAuth::Basic {
                username: "puller".into(),
                password: "s3cret-pass".into(),
            },
        );
    });
    assert_eq!(
        run_image(&authorized, "auth", &image, PullPolicy::IfNotPresent),
        9
    );
    let debug = format!("{:?}", authorized.config());
    assert!(
        !debug.contains("s3cret-pass"),
        "Debug must not print secrets"
    );
}

#[test]
fn credentials_come_from_the_docker_config_file() {
    run_alone("registry::docker_config_credentials_alone");
}

/// Sets `DOCKER_CONFIG` for this whole process: run alone, by the test above.
#[test]
#[ignore = "run by credentials_come_from_the_docker_config_file in its own process"]
fn docker_config_credentials_alone() {
    use base64::Engine as _;
    let registry = Registry::with_basic_auth("docker-user", "from-config");
    registry.push_wasm("private/docker:v1", &wasm(&exit_module(21)));
    let config = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("docker-user:from-config");
    std::fs::write(
        config.path().join("config.json"),
        format!(
            r#"{{"auths": {{"http://{}": {{"auth": "{auth}"}}}}}}"#,
            registry.host
        ),
    )
    .unwrap();
    std::env::set_var("DOCKER_CONFIG", config.path());
    let (_dir, runtime) = runtime(1);
    let image = registry.reference("private/docker:v1");
    assert_eq!(
        run_image(&runtime, "docker", &image, PullPolicy::IfNotPresent),
        21
    );
}

#[test]
fn an_artifact_over_the_size_limit_is_refused() {
    let registry = Registry::start();
    let module = wasm(&print_module(
        &[("a module of a few hundred bytes", 1)],
        None,
    ));
    registry.push_wasm("demo/big:v1", &module);
    let (dir, runtime) = runtime_with(1, |config| {
        config.max_artifact_size = module.len() as u64 - 1;
    });
    let image = registry.reference("demo/big:v1");
    let error = pull_error(runtime.pull(&image, PullPolicy::IfNotPresent));
    assert!(error.contains("too large"), "{error}");
    assert!(error.contains(&module.len().to_string()), "{error}");
    assert!(cache_files(dir.path(), "big").is_empty());
    // At the limit it is accepted.
    let (_dir, runtime) = runtime_with(1, |config| {
        config.max_artifact_size = module.len() as u64;
    });
    assert!(
        runtime
            .pull(&image, PullPolicy::IfNotPresent)
            .unwrap()
            .downloaded
    );
}

#[test]
fn a_layer_larger_than_its_manifest_declares_is_refused() {
    let registry = Registry::start();
    let module = wasm(&exit_module(0));
    let digest = registry.push_wasm("demo/grows:v1", &module);
    // Serve a longer blob than the manifest's size (and so another digest, too).
    let blob = registry.blob_file(&digest_of(&module));
    let mut longer = module.clone();
    longer.extend_from_slice(&vec![0u8; 4096]);
    std::fs::write(&blob, &longer).unwrap();
    let (dir, runtime) = runtime(1);
    let error = pull_error(runtime.pull(&registry.reference("demo/grows:v1"), PullPolicy::Always));
    assert!(
        error.contains("larger than") || error.contains("digest mismatch"),
        "{error} ({digest})"
    );
    assert!(cache_files(dir.path(), "grows").is_empty());
}

#[test]
fn threads_and_runtimes_pulling_one_reference_at_once_download_it_once() {
    let registry = Registry::start();
    registry.push_wasm("demo/shared:v1", &wasm(&exit_module(4)));
    let (dir, runtime) = runtime(2);
    // A second runtime on the same cache folder, as another process would be.
    let other = Arc::new(
        WasmRuntime::new(wasmpool::WasmConfig {
            cache_dir: dir.path().to_path_buf(),
            workers: 1,
            ..Default::default()
        })
        .unwrap(),
    );
    let image = Arc::new(registry.reference("demo/shared:v1"));
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let pulls: Vec<_> = [&runtime, &runtime, &other, &other]
        .into_iter()
        .map(|runtime| {
            let (runtime, image, barrier) = (runtime.clone(), image.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                runtime.pull(&image, PullPolicy::IfNotPresent).unwrap()
            })
        })
        .collect();
    let results: Vec<_> = pulls.into_iter().map(|t| t.join().unwrap()).collect();
    let downloads = results.iter().filter(|r| r.downloaded).count();
    assert_eq!(downloads, 1, "{results:?}");
    assert!(results.iter().all(|r| r.digest == results[0].digest));
    assert_eq!(run_image(&runtime, "shared", &image, PullPolicy::Never), 4);
    assert_eq!(run_image(&other, "shared", &image, PullPolicy::Never), 4);
}

#[test]
fn never_reads_the_cache_only_and_says_so() {
    let registry = Registry::start();
    registry.push_wasm("demo/never:v1", &wasm(&exit_module(0)));
    let (_dir, runtime) = runtime(1);
    let image = registry.reference("demo/never:v1");
    let error = pull_error(runtime.pull(&image, PullPolicy::Never));
    assert!(error.contains("pull policy is Never"), "{error}");
    let id = ContainerId::new("never", 1);
    assert!(matches!(
        runtime.create_container(&id, &spec(&image, PullPolicy::Never)),
        Err(Error::UnreadableArtifact { .. })
    ));
}

#[test]
fn unreachable_registries_and_bad_references_fail_with_one_line() {
    let (_dir, runtime) = runtime_with(1, |config| {
        config.registry_connect_timeout = Duration::from_secs(5);
        config.registry_pull_timeout = Duration::from_secs(20);
    });
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let error = pull_error(runtime.pull(
        &format!("127.0.0.1:{port}/demo/x:v1"),
        PullPolicy::IfNotPresent,
    ));
    assert!(error.contains("cannot connect to"), "{error}");
    // A host name that cannot resolve (`.invalid` is reserved for that).
    let error = pull_error(runtime.pull("registry.invalid/demo/x:v1", PullPolicy::IfNotPresent));
    assert!(
        error.contains("registry.invalid") && !error.contains('\n'),
        "{error}"
    );
    let error = pull_error(runtime.pull("localhost:5000/Upper/Case:v1", PullPolicy::IfNotPresent));
    assert!(error.contains("invalid reference"), "{error}");
    assert!(matches!(
        runtime.pull("../escape:v1", PullPolicy::IfNotPresent),
        Err(Error::InvalidImageName(_))
    ));
}

#[test]
fn a_registry_off_loopback_is_spoken_to_over_tls_unless_listed_as_insecure() {
    let Some(address) = non_loopback_address() else {
        eprintln!("skipped: this machine has no non-loopback IPv4 address");
        return;
    };
    let registry = Registry::on_all_interfaces();
    registry.push_wasm("demo/lan:v1", &wasm(&exit_module(6)));
    let port = registry.host.rsplit(':').next().unwrap();
    let image = format!("{address}:{port}/demo/lan:v1");
    let (_dir, strict) = runtime_with(1, |config| {
        config.registry_pull_timeout = Duration::from_secs(20);
    });
    // TLS against a plain-HTTP registry: the handshake fails, nothing is pulled.
    let error = pull_error(strict.pull(&image, PullPolicy::IfNotPresent));
    assert!(!error.contains('\n'), "{error}");
    let (_dir, insecure) = runtime_with(1, |config| {
        config.insecure_registries = vec![format!("{address}:{port}")];
    });
    assert_eq!(
        run_image(&insecure, "lan", &image, PullPolicy::IfNotPresent),
        6
    );
}

/// An IPv4 address of this machine other than loopback, if it has one.
fn non_loopback_address() -> Option<std::net::IpAddr> {
    // Connecting a UDP socket sends nothing; it only picks the outgoing address.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn a_registry_that_never_answers_times_out_on_the_read_and_the_whole_pull_bounds() {
    // Listens but never accepts: the kernel completes the handshake, nobody answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    let image = format!("{address}/demo/silent:v1");
    let started = std::time::Instant::now();
    let (_dir, runtime) = runtime_with(1, |config| {
        config.registry_read_timeout = Duration::from_millis(500);
    });
    let error = pull_error(runtime.pull(&image, PullPolicy::IfNotPresent));
    assert!(error.contains("timed out"), "{error}");
    let (_dir, runtime) = runtime_with(1, |config| {
        config.registry_pull_timeout = Duration::from_millis(500);
    });
    let error = pull_error(runtime.pull(&image, PullPolicy::IfNotPresent));
    assert!(error.contains("registry_pull_timeout"), "{error}");
    assert!(started.elapsed() < NO_HANG);
    drop(silent);
}

#[test]
fn credentials_come_from_dockers_credential_helpers() {
    run_alone("registry::docker_credential_helpers_alone");
}

/// Sets `DOCKER_CONFIG` and `PATH` for this whole process: run alone, by the test above.
#[test]
#[ignore = "run by credentials_come_from_dockers_credential_helpers in its own process"]
fn docker_credential_helpers_alone() {
    use std::os::unix::fs::PermissionsExt;
    let registry = Registry::with_basic_auth("helped", "from-a-helper");
    registry.push_wasm("private/helped:v1", &wasm(&exit_module(23)));
    let config = tempfile::tempdir().unwrap();
    // A real helper program speaking docker's protocol: the server on stdin,
    // JSON on stdout; it answers only for the server it was asked about.
    let helper = config.path().join("docker-credential-wasmpooltest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n\
             [ \"$server\" = \"{}\" ] || {{ echo 'credentials not found' >&2; exit 1; }}\n\
             echo '{{\"ServerURL\":\"'\"$server\"'\",\"Username\":\"helped\",\"Secret\":\"from-a-helper\"}}'\n",
            registry.host
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        config.path().join("config.json"),
        format!(
            r#"{{"auths": {{"{host}": {{"auth": "d3Jvbmc6d3Jvbmc="}}}}, "credHelpers": {{"{host}": "wasmpooltest"}}}}"#,
            host = registry.host
        ),
    )
    .unwrap();
    std::env::set_var("DOCKER_CONFIG", config.path());
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::set_var("PATH", format!("{}:{path}", config.path().display()));
    let (_dir, runtime) = runtime(1);
    let image = registry.reference("private/helped:v1");
    // The helper's answer, not the wrong `auths` entry beside it.
    assert_eq!(
        run_image(&runtime, "helped", &image, PullPolicy::IfNotPresent),
        23
    );
}

#[test]
fn a_pull_reports_its_progress_up_to_the_artifacts_size() {
    let registry = Registry::start();
    let module = wasm(&print_module(&[("progress", 200)], None));
    registry.push_wasm("demo/progress:v1", &module);
    let (_dir, runtime) = runtime(1);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let image = registry.reference("demo/progress:v1");
    let pulled = runtime
        .pull_with_progress(&image, PullPolicy::Always, move |done, total| {
            record.lock().unwrap().push((done, total));
        })
        .unwrap();
    assert!(pulled.downloaded);
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "no progress was reported");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    assert_eq!(
        *seen.last().unwrap(),
        (module.len() as u64, module.len() as u64)
    );
    // Nothing to download: no progress.
    let quiet = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = quiet.clone();
    runtime
        .pull_with_progress(&image, PullPolicy::IfNotPresent, move |_, _| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
    assert_eq!(quiet.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// A registry whose token server speaks the OAuth 2 form of the token API
/// (as Azure's and others' do for `docker login`): an identity token is
/// exchanged there (`POST`, `grant_type=refresh_token`) for the access token
/// every later request carries; a wrong one gets the token server's refusal.
#[test]
fn an_identity_token_is_exchanged_for_an_access_token_at_the_realm() {
    use crate::common::hostile_registry::*;
    use std::io::Read;
    let module = wasm(&exit_module(23));
    let digest = {
        use sha2::Digest as _;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&module)))
    };
    let (blob, layer) = (module.clone(), digest.clone());
    let own = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let realm = own.clone();
    let server = Hostile::start(move |head, stream| {
        let lower = head.to_ascii_lowercase();
        let path = path_of(head);
        if path.starts_with("/token") {
            let length: usize = lower
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            let mut form = vec![0; length.min(4096)];
            let _ = stream.read_exact(&mut form);
            let form = String::from_utf8_lossy(&form);
            let fields: Vec<&str> = form.split('&').collect();
            let good = head.starts_with("POST ")
                && fields.contains(&"grant_type=refresh_token")
                && fields.contains(&"refresh_token=refresh-abc")
                && fields.contains(&"service=oauth-registry")
                && fields.iter().any(|f| f.starts_with("client_id="));
            return if good {
                answer(stream, "200 OK", "", br#"{"access_token":"access-xyz"}"#)
            } else {
                answer(
                    stream,
                    "401 Unauthorized",
                    "",
                    br#"{"error":"invalid_grant"}"#,
                )
            };
        }
        if !lower.contains("\r\nauthorization: bearer access-xyz\r\n") {
            return answer(
                stream,
                "401 Unauthorized",
                &format!(
                    "WWW-Authenticate: Bearer realm=\"http://{}/token\",service=\"oauth-registry\",scope=\"repository:demo/oauth:pull\"\r\n",
                    realm.get().map_or("", String::as_str)
                ),
                b"",
            );
        }
        if path.contains("/manifests/") {
            let manifest = manifest_json(&[("application/wasm", &layer, blob.len() as u64)]);
            answer(stream, "200 OK", MANIFEST_TYPE, manifest.as_bytes())
        } else if path.ends_with(&layer) {
            answer(stream, "200 OK", "", &blob)
        } else {
            answer(stream, "404 Not Found", "", b"")
        }
    });
    own.set(server.host()).unwrap();
    let image = format!("{}/demo/oauth:v1", server.host());
    let host = server.host();
    let with_token = |token: &str| {
        let auth = (host.clone(), RegistryAuth::IdentityToken(token.to_string()));
        runtime_with(1, move |config| {
            config.registry_auth.insert(auth.0, auth.1);
        })
    };
    let (_dir, runtime) = with_token("refresh-abc");
    assert_eq!(
        run_image(&runtime, "oauth", &image, PullPolicy::IfNotPresent),
        23
    );
    let (_dir, refused) = with_token("refresh-stolen");
    let error = pull_error(refused.pull(&image, PullPolicy::IfNotPresent));
    assert!(
        error.contains("token server answered 401") && error.contains("invalid_grant"),
        "{error}"
    );
    assert!(
        !format!("{:?}", RegistryAuth::IdentityToken("refresh-abc".into())).contains("abc"),
        "Debug must not print secrets"
    );
}
