//! Replays the request decoder's fuzz corpus on stable, with the same checks as the fuzz
//! target (`proxy/fuzz/src/check.rs`): every seed, every input a fuzzing run added to the
//! corpus, and every crash artifact a local fuzzing run left in `proxy/fuzz/artifacts/`.
//! Inputs of bugs not fixed yet live in `proxy/fuzz/known-bugs/` (an ignored test).
//! See docs/FUZZING.md.

#[path = "../fuzz/src/check.rs"]
mod check;

#[path = "../fuzz/src/replay.rs"]
mod replay;

use replay::{FUZZ_DIR, assert_replays, files_in};

#[test]
fn request_decoder_corpus_replays_cleanly() {
    let corpus = files_in("corpus/request_decoder");
    assert!(
        corpus.len() >= 30,
        "expected the seed corpus in {FUZZ_DIR}/corpus/request_decoder, found {} files",
        corpus.len()
    );
    assert_replays(&corpus, "corpus inputs", check::check, check::show);
}

#[test]
fn request_decoder_artifacts_replay_cleanly() {
    // Present only after a local fuzzing run found something (the directory is not committed).
    let artifacts = files_in("artifacts/request_decoder");
    assert_replays(&artifacts, "fuzz artifacts", check::check, check::show);
}

/// Inputs the decoder still fails on, kept out of the corpus (so CI stays green) until it is
/// fixed; then they move to `corpus/request_decoder/`. This test fails while any is left:
/// `cargo test -p tessera-proxy --test decoder_corpus -- --ignored`.
#[test]
#[ignore = "known decoder bugs, see proxy/fuzz/known-bugs/README.md"]
fn request_decoder_known_bugs_are_fixed() {
    let known = files_in("known-bugs/request_decoder");
    assert_replays(&known, "known bugs", check::check, check::show);
}

/// The checker itself: Redis's inline splitting as the reference implements it.
#[test]
fn reference_inline_splitter_matches_redis() {
    let split = |s: &[u8]| check::sdssplitargs(s).map(|v| v.concat());
    assert_eq!(
        check::sdssplitargs(b"SET \"a b\" 'c d'"),
        Ok(vec![b"SET".to_vec(), b"a b".to_vec(), b"c d".to_vec()])
    );
    assert_eq!(
        check::sdssplitargs(b"x \"\\x41\\n\" 'it\\'s'"),
        Ok(vec![b"x".to_vec(), b"A\n".to_vec(), b"it's".to_vec()])
    );
    assert_eq!(check::sdssplitargs(b"  "), Ok(vec![]));
    assert!(split(b"\"abc").is_err());
    assert!(split(b"\"a\"b").is_err());
    assert!(split(b"'a").is_err());
    // C-string semantics: NUL ends the line; isspace() includes \v and \f between arguments,
    // but only space, \t, \r and \n end an unquoted argument.
    assert_eq!(
        check::sdssplitargs(b"GET k\0junk"),
        Ok(vec![b"GET".to_vec(), b"k".to_vec()])
    );
    assert_eq!(
        check::sdssplitargs(b"\x0bGET a\x0cb"),
        Ok(vec![b"GET".to_vec(), b"a\x0cb".to_vec()])
    );
    assert_eq!(check::sdssplitargs(b"\"a\"\x0b"), Ok(vec![b"a".to_vec()]));
}
