//! Compile once: the in-memory artifact cache, the on-disk compiled cache, pooling fallback.

use crate::common::*;
use std::path::Path;
use wasmpool::{ContainerId, Outcome, ServiceSpec, WasmConfig, WasmRuntime};

fn cached_files(cache: &Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(cache.join("compiled")) {
        Ok(dir) => dir
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn runtime_on(cache: &Path) -> WasmRuntime {
    WasmRuntime::new(WasmConfig {
        cache_dir: cache.into(),
        workers: 1,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn compile_before_start_compiles_once_and_says_why_it_cannot() {
    let cache = tempfile::tempdir().unwrap();
    let rt = runtime_on(cache.path());
    let spec = ServiceSpec::default();
    let id = ContainerId::new("compiled-first", 0);
    rt.create_container_from_bytes(&id, &spec, wasm(&exit_module(6)))
        .unwrap();
    rt.compile(&id).unwrap();
    assert_eq!(
        cached_files(cache.path()).len(),
        1,
        "compiled and saved before start"
    );
    // Compiled already: the second call and the start find it.
    rt.compile(&id).unwrap();
    assert_eq!(rt.start(&id).unwrap().wait(), Outcome::Exited(6));

    let broken = ContainerId::new("broken", 0);
    rt.create_container_from_bytes(&broken, &spec, b"\0asm\x01\0\0\0\x01garbage")
        .unwrap();
    match rt.compile(&broken) {
        Err(wasmpool::Error::Failed { id, reason }) => {
            assert_eq!(id, broken);
            assert!(!reason.is_empty());
        }
        other => panic!("a truncated module compiled: {other:?}"),
    }
    // The start reports the same failure, it does not hang.
    assert!(matches!(
        rt.start(&broken).unwrap().wait(),
        Outcome::Failed(_)
    ));
    assert!(matches!(
        rt.compile(&ContainerId::new("nobody", 0)),
        Err(wasmpool::Error::NotFound(_))
    ));
}

#[test]
fn a_compiled_artifact_is_saved_once_and_reused_by_a_new_runtime() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = wasm(&exit_module(4));
    {
        let rt = runtime_on(cache.path());
        for i in 0..3 {
            let (_, handle) = launch(&rt, &format!("first-{i}"), &ServiceSpec::default(), &bytes);
            assert_eq!(handle.wait(), Outcome::Exited(4));
        }
    }
    let files = cached_files(cache.path());
    assert_eq!(files.len(), 1, "one artifact, one file: {files:?}");
    let saved = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
    let rt = runtime_on(cache.path());
    let (_, handle) = launch(&rt, "second", &ServiceSpec::default(), &bytes);
    assert_eq!(handle.wait(), Outcome::Exited(4));
    // A hit loads the file; it is not written again.
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        saved
    );
}

#[test]
fn a_corrupt_cached_artifact_is_discarded_and_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = wasm(&exit_module(6));
    {
        let rt = runtime_on(cache.path());
        let (_, handle) = launch(&rt, "seed", &ServiceSpec::default(), &bytes);
        assert_eq!(handle.wait(), Outcome::Exited(6));
    }
    let file = cached_files(cache.path()).pop().unwrap();
    let good = std::fs::read(&file).unwrap();
    // Keep wasmtime's header but corrupt the rest, then try a truncated file.
    for corrupt in [
        [&good[..good.len() / 2], &vec![0xAB; good.len() / 2][..]].concat(),
        good[..good.len() / 3].to_vec(),
        b"not an artifact at all".to_vec(),
    ] {
        std::fs::write(&file, &corrupt).unwrap();
        let rt = runtime_on(cache.path());
        let (_, handle) = launch(&rt, "after-corruption", &ServiceSpec::default(), &bytes);
        assert_eq!(handle.wait(), Outcome::Exited(6));
        drop(rt);
        assert_eq!(
            std::fs::read(&file).unwrap(),
            good,
            "the recompiled artifact replaced the corrupt one"
        );
    }
}

#[test]
fn the_compiled_cache_can_be_turned_off() {
    let cache = tempfile::tempdir().unwrap();
    let rt = WasmRuntime::new(WasmConfig {
        cache_dir: cache.path().into(),
        workers: 1,
        compiled_cache: false,
        ..Default::default()
    })
    .unwrap();
    let (_, handle) = launch(
        &rt,
        "no-disk",
        &ServiceSpec::default(),
        &wasm(&exit_module(0)),
    );
    assert_eq!(handle.wait(), Outcome::Exited(0));
    assert!(cached_files(cache.path()).is_empty());
}

#[test]
fn an_artifact_too_big_for_a_pooling_slot_runs_on_demand() {
    // Three memories and a large table: more than a pooling slot holds.
    let guest = r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (memory $b 1)
        (memory $c 1)
        (table 200000 funcref)
        (func (export "_start") (call $exit (i32.const 8))))"#;
    let (_dir, rt) = runtime(1);
    let (_, handle) = launch(&rt, "misfit", &ServiceSpec::default(), &wasm(guest));
    assert_eq!(handle.wait(), Outcome::Exited(8));
}

#[test]
fn pooling_and_on_demand_runtimes_agree() {
    for pooling in [true, false] {
        let (_dir, rt) = runtime_with(2, |c| c.pooling = pooling);
        let (_, a) = launch(&rt, "p1", &ServiceSpec::default(), &wasm(&exit_module(2)));
        let (_, b) = launch(
            &rt,
            "p2",
            &ServiceSpec::default(),
            &component(&exit_module(0)),
        );
        assert_eq!(
            (a.wait(), b.wait()),
            (Outcome::Exited(2), Outcome::Exited(0)),
            "pooling {pooling}"
        );
    }
}

/// Runs `bytes` in a fresh runtime on `cache` and returns its exit code.
fn exit_code_on(cache: &Path, bytes: &[u8]) -> i32 {
    let rt = runtime_on(cache);
    let (_, handle) = launch(&rt, "probe", &ServiceSpec::default(), bytes);
    handle.wait().exit_code()
}

#[test]
fn the_compiled_cache_is_private_and_refuses_artifacts_others_could_have_planted() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let cache = tempfile::tempdir().unwrap();
    let (seven, three) = (wasm(&exit_module(7)), wasm(&exit_module(3)));
    assert_eq!(exit_code_on(cache.path(), &seven), 7);
    let planted_source = cached_files(cache.path()).remove(0);
    assert_eq!(exit_code_on(cache.path(), &three), 3);
    let victim = cached_files(cache.path())
        .into_iter()
        .find(|p| *p != planted_source)
        .unwrap();
    let dir = cache.path().join("compiled");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "the folder is private");
    assert_eq!(mode(&victim), 0o600, "its files are private");

    // Plant the artifact of `exit 7` where the one of `exit 3` is looked for.
    std::fs::copy(&planted_source, &victim).unwrap();
    let chmod =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    // The control: in a private folder, by the current user, the plant would run.
    chmod(&victim, 0o600);
    assert_eq!(exit_code_on(cache.path(), &three), 7);
    // Anyone may write the folder: nothing is loaded from it.
    chmod(&dir, 0o777);
    assert_eq!(exit_code_on(cache.path(), &three), 3);
    chmod(&dir, 0o700);
    // Others may write the file: it is not loaded (and not trusted to be overwritten).
    std::fs::copy(&planted_source, &victim).unwrap();
    chmod(&victim, 0o666);
    assert_eq!(exit_code_on(cache.path(), &three), 3);
    // The file belongs to another user (only root can arrange that here).
    if std::fs::metadata(cache.path()).unwrap().uid() == 0 {
        std::fs::copy(&planted_source, &victim).unwrap();
        chmod(&victim, 0o600);
        std::os::unix::fs::chown(&victim, Some(65534), Some(65534)).unwrap();
        assert_eq!(exit_code_on(cache.path(), &three), 3);
    }
}

#[test]
fn an_image_file_rewritten_in_place_runs_its_new_bytes() {
    use wasmpool::{ImageSpec, Runtime};
    let cache = tempfile::tempdir().unwrap();
    let rt = runtime_on(cache.path());
    let path = cache.path().join("localhost_app_v1.wasm");
    let spec = ServiceSpec {
        image: ImageSpec::new("localhost/app:v1"),
        ..Default::default()
    };
    let run = |name: &str| {
        let id = id(name);
        rt.create_container(&id, &spec).unwrap();
        rt.start(&id).unwrap().wait()
    };
    // Same size, different code: only the file's identity tells them apart.
    std::fs::write(&path, wasm(&exit_module(3))).unwrap();
    assert_eq!(run("first"), Outcome::Exited(3));
    assert_eq!(run("unchanged"), Outcome::Exited(3));
    std::fs::write(&path, wasm(&exit_module(4))).unwrap();
    assert_eq!(run("rewritten"), Outcome::Exited(4));
    // Replaced by another file (a new inode), as a pull's atomic rename does.
    let staged = cache.path().join("staged.wasm");
    std::fs::write(&staged, wasm(&exit_module(5))).unwrap();
    std::fs::rename(&staged, &path).unwrap();
    assert_eq!(run("replaced"), Outcome::Exited(5));
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        rt.create_container(&id("gone"), &spec),
        Err(wasmpool::Error::UnreadableArtifact { .. })
    ));
}

#[test]
fn an_artifact_too_big_for_a_pooling_slot_is_cached_once_and_loads_in_a_new_runtime() {
    // A table larger than a pooling slot's: compiled once, kept, loaded on demand.
    let guest = wasm(
        r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (table 200000 funcref)
        (func (export "_start") (call $exit (i32.const 9))))"#,
    );
    let cache = tempfile::tempdir().unwrap();
    for round in 0..2 {
        let rt = runtime_on(cache.path());
        let (_, handle) = launch(
            &rt,
            &format!("misfit-{round}"),
            &ServiceSpec::default(),
            &guest,
        );
        assert_eq!(handle.wait(), Outcome::Exited(9));
        let files = cached_files(cache.path());
        assert_eq!(files.len(), 1, "round {round}: {files:?}");
    }
}

#[test]
fn a_new_runtime_runs_an_unchanged_cached_image_without_reading_it() {
    run_alone("caching::unchanged_image_in_a_new_runtime_alone");
}

/// Counts the bytes this process reads (`rchar`): run alone, by the test above.
#[test]
#[ignore = "run by a_new_runtime_runs_an_unchanged_cached_image_without_reading_it in its own process"]
fn unchanged_image_in_a_new_runtime_alone() {
    use wasmpool::{ImageSpec, Runtime};
    let read_so_far = || -> u64 {
        let io = std::fs::read_to_string("/proc/self/io").unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .unwrap()
            .parse()
            .unwrap()
    };
    let cache = tempfile::tempdir().unwrap();
    // A large image: 16 MiB of data segment behind a trivial `_start`.
    let mut image = wasm(&exit_module(6));
    let custom_payload = vec![7u8; 16 << 20];
    image.push(0); // a custom section: id 0, size, name, payload
    let mut size = Vec::new();
    let mut len = (custom_payload.len() + 5) as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            size.push(byte);
            break;
        }
        size.push(byte | 0x80);
    }
    image.extend(size);
    image.extend([4, b'f', b'i', b'l', b'l']);
    image.extend(&custom_payload);
    let path = cache.path().join("localhost_large.wasm");
    std::fs::write(&path, &image).unwrap();
    let spec = ServiceSpec {
        image: ImageSpec::new("localhost/large"),
        ..Default::default()
    };
    let run = |rt: &WasmRuntime, name: &str| {
        let id = id(name);
        rt.create_container(&id, &spec).unwrap();
        rt.start(&id).unwrap().wait()
    };
    assert_eq!(run(&runtime_on(cache.path()), "first"), Outcome::Exited(6));
    let before = read_so_far();
    assert_eq!(run(&runtime_on(cache.path()), "second"), Outcome::Exited(6));
    let read = read_so_far() - before;
    assert!(
        read < 4 << 20,
        "a new runtime read {read} bytes to run an unchanged {}-byte image",
        image.len()
    );
    // Changed (a new identity): read, hashed and compiled again.
    std::fs::write(&path, wasm(&exit_module(7))).unwrap();
    assert_eq!(run(&runtime_on(cache.path()), "third"), Outcome::Exited(7));
}

#[test]
fn a_container_from_a_file_runs_its_current_bytes() {
    let cache = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let rt = runtime_on(cache.path());
    let path = elsewhere.path().join("tool.wasm");
    let run = |name: &str| {
        let id = id(name);
        rt.create_container_from_file(&id, &ServiceSpec::default(), &path)
            .unwrap();
        rt.start(&id).unwrap().wait()
    };
    std::fs::write(&path, wasm(&exit_module(12))).unwrap();
    assert_eq!(run("first"), Outcome::Exited(12));
    assert_eq!(run("again"), Outcome::Exited(12));
    std::fs::write(&path, wasm(&exit_module(13))).unwrap();
    assert_eq!(run("rewritten"), Outcome::Exited(13));
    // A new runtime on the same cache, the file unchanged: the same program.
    let fresh = runtime_on(cache.path());
    let id = id("fresh");
    fresh
        .create_container_from_file(&id, &ServiceSpec::default(), &path)
        .unwrap();
    assert_eq!(fresh.start(&id).unwrap().wait(), Outcome::Exited(13));
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        rt.create_container_from_file(&crate::common::id("gone"), &ServiceSpec::default(), &path),
        Err(wasmpool::Error::UnreadableArtifact { .. })
    ));
}

#[test]
fn a_cache_folder_swapped_while_it_is_read_never_loads_what_was_swapped_in() {
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let base = tempfile::tempdir().unwrap();
    if std::fs::metadata(base.path()).unwrap().uid() != 0 {
        // The planted folder must belong to another user: only root can arrange that.
        eprintln!("SKIPPED: needs root to plant a folder of another user");
        return;
    }
    let (seven, three) = (wasm(&exit_module(7)), wasm(&exit_module(3)));
    // Ours: the artifact of `exit 3`. Another user's: the artifact of `exit 7`
    // under the name `exit 3`'s is looked for.
    let ours = base.path().join("ours");
    let theirs = base.path().join("theirs");
    assert_eq!(exit_code_on(&ours, &three), 3);
    assert_eq!(exit_code_on(&theirs, &seven), 7);
    let name = cached_files(&ours).remove(0);
    std::fs::rename(
        cached_files(&theirs).remove(0),
        theirs.join("compiled").join(name.file_name().unwrap()),
    )
    .unwrap();
    for path in [
        theirs.clone(),
        theirs.join("compiled"),
        theirs.join("compiled").join(name.file_name().unwrap()),
    ] {
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    }
    // The runtime's cache folder is a link in a folder anyone may write: it
    // is swapped between ours and theirs as fast as it goes, while runtimes
    // check and load `exit 3`'s artifact through it.
    let link = base.path().join("cache");
    std::os::unix::fs::symlink(&ours, &link).unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, link, ours, theirs) = (stop.clone(), link.clone(), ours.clone(), theirs.clone());
        std::thread::spawn(move || {
            let next = link.with_extension("next");
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for target in [&theirs, &ours] {
                    let _ = std::fs::remove_file(&next);
                    std::os::unix::fs::symlink(target, &next).unwrap();
                    std::fs::rename(&next, &link).unwrap();
                    flips += 1;
                }
            }
            flips
        })
    };
    let started = std::time::Instant::now();
    let mut runs = 0;
    while runs < 300 && started.elapsed() < std::time::Duration::from_secs(20) {
        let code = exit_code_on(&link, &three);
        assert_eq!(code, 3, "run {runs}: another user's artifact was loaded");
        runs += 1;
    }
    stop.store(true, Ordering::Relaxed);
    assert!(swapper.join().unwrap() > 0);
}

#[test]
fn an_identity_record_of_an_earlier_digest_is_not_trusted() {
    // Earlier versions recorded an image file's SHA-256, untagged. A record
    // naming a digest whose compiled code is in the cache — another
    // program's — must not make the file run that code: it is read and
    // hashed again, and its record replaced.
    let cache = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let path = elsewhere.path().join("tool.wasm");
    let other = wasm(&exit_module(21));
    let run_file = |rt: &WasmRuntime, name: &str| {
        let id = id(name);
        rt.create_container_from_file(&id, &ServiceSpec::default(), &path)
            .unwrap();
        rt.start(&id).unwrap().wait()
    };
    {
        let rt = runtime_on(cache.path());
        let id = id("other");
        rt.create_container_from_bytes(&id, &ServiceSpec::default(), &other)
            .unwrap();
        assert_eq!(rt.start(&id).unwrap().wait(), Outcome::Exited(21));
        std::fs::write(&path, wasm(&exit_module(22))).unwrap();
        assert_eq!(run_file(&rt, "file"), Outcome::Exited(22));
    }
    let records: Vec<_> = std::fs::read_dir(cache.path().join("compiled"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "identity"))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let text = std::fs::read_to_string(&records[0]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let wrong = blake3::hash(&other).to_hex().to_string();
    // The record with `digest_line` in place of its own, then a new runtime's run of the file.
    let run_with_record = |digest_line: &str, name: &str| {
        let record = format!("{}\n{}\n{digest_line}\n", lines[0], lines[1]);
        std::fs::write(&records[0], record).unwrap();
        run_file(&runtime_on(cache.path()), name)
    };
    // The record as this version writes it, but pointing at the other
    // program: trusted (the record is the runtime's own, in its 0700
    // folder), so the other program runs — the test's control.
    assert_eq!(
        run_with_record(&format!("blake3:{wrong}"), "tagged"),
        Outcome::Exited(21)
    );
    // Untagged, as an earlier version wrote it: not trusted.
    assert_eq!(run_with_record(&wrong, "untagged"), Outcome::Exited(22));
    let replaced = std::fs::read_to_string(&records[0]).unwrap();
    let own = blake3::hash(&std::fs::read(&path).unwrap())
        .to_hex()
        .to_string();
    assert!(replaced.ends_with(&format!("blake3:{own}\n")), "{replaced}");
}

#[test]
fn a_cache_hit_marks_the_artifact_used_for_eviction() {
    let cache = tempfile::tempdir().unwrap();
    let image = wasm(&exit_module(23));
    let run = |name: &str| {
        let rt = runtime_on(cache.path());
        let id = id(name);
        rt.create_container_from_bytes(&id, &ServiceSpec::default(), &image)
            .unwrap();
        rt.start(&id).unwrap().wait()
    };
    assert_eq!(run("first"), Outcome::Exited(23));
    let files = cached_files(cache.path());
    assert_eq!(files.len(), 1);
    let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30);
    let file = std::fs::File::options()
        .write(true)
        .open(&files[0])
        .unwrap();
    file.set_times(std::fs::FileTimes::new().set_accessed(long_ago))
        .unwrap();
    drop(file);
    let accessed = || std::fs::metadata(&files[0]).unwrap().accessed().unwrap();
    assert_eq!(accessed(), long_ago);
    // A new runtime loads it from the cache: least recently used no more.
    assert_eq!(run("second"), Outcome::Exited(23));
    let since = std::time::SystemTime::now()
        .duration_since(accessed())
        .unwrap_or_default();
    assert!(
        since < std::time::Duration::from_secs(600),
        "{:?}",
        accessed()
    );
}
