//! Replays the session fuzz corpus on stable, with the same checks as the fuzz target
//! (`proxy/fuzz/src/session_check.rs`): each input goes through a real proxy session, to
//! stub backends, and must not panic, break the reply stream or disturb a bystander.
//! Crash artifacts a local fuzzing run left in `proxy/fuzz/artifacts/session/` are replayed
//! too. See docs/FUZZING.md.

#[path = "../fuzz/src/session_check.rs"]
mod session_check;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("reading a corpus directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs the checks on each file; names every file that fails, not just the first.
fn replay(files: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for path in files {
        let data = std::fs::read(path).expect("reading a corpus file");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| session_check::check(&data))) {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            failures.push(format!(
                "{}: {msg}\n    input: {:?}",
                path.display(),
                String::from_utf8_lossy(&data)
            ));
        }
    }
    failures
}

#[test]
fn session_corpus_replays_cleanly() {
    let corpus = files_in(&Path::new(FUZZ_DIR).join("corpus/session"));
    assert!(
        corpus.len() >= 20,
        "expected the seed corpus in {FUZZ_DIR}/corpus/session, found {} files",
        corpus.len()
    );
    let failures = replay(&corpus);
    assert!(
        failures.is_empty(),
        "{} of {} corpus inputs fail:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
}

#[test]
fn session_artifacts_replay_cleanly() {
    let artifacts = files_in(&Path::new(FUZZ_DIR).join("artifacts/session"));
    let failures = replay(&artifacts);
    assert!(
        failures.is_empty(),
        "{} of {} fuzz artifacts still fail:\n{}",
        failures.len(),
        artifacts.len(),
        failures.join("\n")
    );
}
