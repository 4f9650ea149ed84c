//! A long-lived host's caches: `pull` re-resolves like docker's, the compiled
//! cache stays within its bound under churn (running guests unharmed), and a
//! user can see and prune what the host keeps — also while another process
//! uses the same folders.

use crate::common::registry::Registry;
use crate::common::*;
use std::path::Path;
use std::process::Command;
use wasmpool::{ImageSpec, Outcome, PullPolicy, Runtime, ServiceSpec};

fn cli(cache: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmpool"))
        .args(args)
        .env("WASMPOOL_CACHE_DIR", cache)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn compiled_files(cache: &Path) -> Vec<(std::path::PathBuf, u64)> {
    std::fs::read_dir(cache.join("compiled"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
                .map(|e| (e.path(), e.metadata().unwrap().len()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pull_resolves_the_tag_every_time_like_docker() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = registry.reference("demo/moving:latest");
    registry.push_wasm("demo/moving:latest", &wasm(&exit_module(1)));
    let (ok, out) = cli(dir.path(), &["pull", &image]);
    assert!(ok && out.starts_with(&format!("pulled {image}")), "{out}");
    let (ok, out) = cli(dir.path(), &["pull", &image]);
    assert!(ok && out.contains("is up to date"), "{out}");
    // The tag moves: a plain pull sees it (no --always needed).
    registry.push_wasm("demo/moving:latest", &wasm(&exit_module(2)));
    let (ok, out) = cli(dir.path(), &["pull", &image]);
    assert!(ok && out.starts_with(&format!("pulled {image}")), "{out}");
    let (ok, out) = cli(dir.path(), &["pull", "--always", &image]);
    assert!(
        ok && out.contains("is up to date"),
        "--always is accepted: {out}"
    );
    // `images` lists it with its digest.
    let (ok, out) = cli(dir.path(), &["images"]);
    assert!(ok, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("demo/moving:latest"))
        .expect(&out);
    assert!(line.contains("sha256:"), "{line}");
}

#[test]
fn the_compiled_cache_stays_within_its_bound_under_churn_and_running_guests_are_unharmed() {
    let probe_dir = tempfile::tempdir().unwrap();
    // One artifact's size, to set a bound of about three.
    let (_, probe) = runtime_with(1, |c| c.cache_dir = probe_dir.path().into());
    let (_, handle) = launch(
        &probe,
        "probe",
        &ServiceSpec::default(),
        &wasm(&exit_module(0)),
    );
    assert_eq!(wait_bounded(&handle), Outcome::Exited(0));
    let one = compiled_files(probe_dir.path())[0].1;
    let limit = one * 3 + one / 2;
    let (dir, rt) = runtime_with(2, |c| c.compiled_cache_limit = limit);
    // A guest of the first image runs for the whole churn.
    let sleeper_wasm = wasm(&ready_sleep_module(1_500_000_000));
    let (sleeper_id, sleeper) = launch(&rt, "sleeper", &ServiceSpec::default(), &sleeper_wasm);
    until_ready(&rt, &sleeper_id);
    let first = compiled_files(dir.path());
    assert_eq!(first.len(), 1);
    for i in 0..50 {
        let (_, handle) = launch(
            &rt,
            &format!("churn-{i}"),
            &ServiceSpec::default(),
            &wasm(&exit_module(i)),
        );
        assert_eq!(wait_bounded(&handle), Outcome::Exited(i));
        let total: u64 = compiled_files(dir.path())
            .iter()
            .map(|(_, size)| size)
            .sum();
        assert!(total <= limit, "{total} bytes compiled, bound {limit}");
    }
    // The oldest went; the newest stayed; the sleeper was not disturbed.
    assert!(
        !first[0].0.exists(),
        "the least recently used artifact was evicted"
    );
    assert_eq!(compiled_files(dir.path()).len(), 3);
    assert_eq!(wait_bounded(&sleeper), Outcome::Exited(0));
    // A new runtime runs the evicted image again: compiled afresh.
    drop(rt);
    let (_, again) = runtime_with(1, |c| c.cache_dir = dir.path().into());
    let (_, handle) = launch(&again, "again", &ServiceSpec::default(), &sleeper_wasm);
    assert_eq!(wait_bounded(&handle), Outcome::Exited(0));
    assert!(first[0].0.exists(), "compiled again");
}

#[test]
fn images_prune_and_df_show_and_remove_what_the_host_keeps() {
    let (dir, rt) = runtime(1);
    let cache = dir.path();
    // A cached image, run once (so its compiled code and identity are recorded) ...
    std::fs::write(cache.join("local_app_v1.wasm"), wasm(&exit_module(7))).unwrap();
    let spec = ServiceSpec {
        image: ImageSpec::new("local/app:v1"),
        ..Default::default()
    };
    let app = id("app");
    rt.create_container(&app, &spec).unwrap();
    rt.start_container(&app).unwrap();
    assert_eq!(rt.wait_container(&app).unwrap(), 7);
    rt.remove_container(&app).unwrap();
    // ... and code compiled from bytes no image holds.
    let (_, handle) = launch(
        &rt,
        "bytes",
        &ServiceSpec::default(),
        &wasm(&exit_module(8)),
    );
    assert_eq!(wait_bounded(&handle), Outcome::Exited(8));
    rt.remove_container(&id("bytes")).unwrap();
    let usage = rt.disk_usage();
    assert_eq!((usage.images, usage.compiled), (1, 2), "{usage:?}");
    let images = rt.images();
    assert_eq!(images[0].reference, "local_app_v1");

    let (ok, out) = cli(cache, &["df"]);
    assert!(
        ok && out.contains("images") && out.contains("compiled"),
        "{out}"
    );
    // A dry run says what a prune would remove, and removes nothing.
    let (ok, out) = cli(cache, &["prune", "--dry-run"]);
    assert!(
        ok && out.contains("would remove") && out.contains(".cwasm"),
        "{out}"
    );
    assert_eq!(compiled_files(cache).len(), 2);
    // A prune removes the code no image holds, and keeps the image's.
    let report = rt.prune(false, false);
    assert_eq!(
        report
            .removed
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .count(),
        1,
        "{report:?}"
    );
    assert_eq!(compiled_files(cache).len(), 1);
    assert_eq!(rt.images().len(), 1);
    // --all removes the image and its code (no container of that process uses them).
    let (ok, out) = cli(cache, &["prune", "--all"]);
    assert!(ok && out.contains("local_app_v1.wasm"), "{out}");
    assert!(rt.images().is_empty());
    assert!(compiled_files(cache).is_empty());
    assert!(!rt.remove_image("local/app:v1").unwrap());
}

#[test]
fn another_process_pruning_the_shared_folders_never_breaks_runs() {
    let (dir, rt) = runtime(2);
    let modules: Vec<_> = (0..8).map(|i| wasm(&exit_module(i))).collect();
    let cache = dir.path().to_path_buf();
    let pruner = std::thread::spawn(move || (0..10).all(|_| cli(&cache, &["prune", "--all"]).0));
    for round in 0..30 {
        for (i, module) in modules.iter().enumerate() {
            let (_, handle) = launch(
                &rt,
                &format!("r{round}-{i}"),
                &ServiceSpec::default(),
                module,
            );
            assert_eq!(wait_bounded(&handle), Outcome::Exited(i as i32));
        }
    }
    assert!(pruner.join().unwrap(), "every prune succeeded");
    // And pulls into the shared cache still work after it all.
    let registry = Registry::start();
    registry.push_wasm("demo/after:v1", &wasm(&exit_module(9)));
    let image = registry.reference("demo/after:v1");
    assert!(
        rt.pull(&image, PullPolicy::IfNotPresent)
            .unwrap()
            .downloaded
    );
}
