//! Replays the session fuzz corpus on stable, with the same checks as the fuzz target
//! (`proxy/fuzz/src/session_check.rs`): each input goes through a real proxy session, to
//! stub backends, and must not panic, break the reply stream or disturb a bystander.
//! Crash artifacts a local fuzzing run left in `proxy/fuzz/artifacts/session/` are replayed
//! too. See docs/FUZZING.md.

#[path = "../fuzz/src/session_check.rs"]
mod session_check;

#[path = "../fuzz/src/replay.rs"]
mod replay;

use replay::{FUZZ_DIR, assert_replays, files_in};

fn show(data: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(data))
}

#[test]
fn session_corpus_replays_cleanly() {
    let corpus = files_in("corpus/session");
    assert!(
        corpus.len() >= 20,
        "expected the seed corpus in {FUZZ_DIR}/corpus/session, found {} files",
        corpus.len()
    );
    assert_replays(&corpus, "corpus inputs", session_check::check, show);
}

#[test]
fn session_artifacts_replay_cleanly() {
    // Present only after a local fuzzing run found something (the directory is not committed).
    let artifacts = files_in("artifacts/session");
    assert_replays(&artifacts, "fuzz artifacts", session_check::check, show);
}
