//! In-process tests of a session.
