//! Commands on keys of a migrating slot: the session first has their keys moved from the
//! slot's source master to its destination (`MIGRATE ... KEYS`), then sends the command there.
//!
//! A slot is *open* once every registered proxy has acknowledged the revision that made it
//! migrating; until then its commands wait (no proxy may move a key while another may still
//! write it on the source by an earlier table), at most `backend.timeout_ms`, then TRYAGAIN.
//!
//! Ordering: the MIGRATE goes once every command the session sent before is answered, and
//! every command the session reads after one that waits for a MIGRATE waits behind it, in
//! order (unread, or kept here if already decoded), so none overtakes it. A MIGRATE that
//! fails any other way than `NOKEY` fails its command with `-TRYAGAIN`: it is not sent.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Session;
use crate::backend::{Batch, ReplyBatch};
use crate::command::{self, CommandError, Spec};
use crate::resp::{Request, encode};
use crate::router::{Move, SlotTable};
use crate::slot;

/// The tag of the batches of MIGRATEs a session sends; no batch of its queue has it.
pub(super) const MIGRATE_TAG: u32 = u32::MAX;

/// How a held command is dispatched once its keys are moved.
#[derive(Clone, Copy)]
pub(super) enum Again {
    Keyed(&'static Spec),
    Split(command::Split),
}

/// A session's command waiting for its keys to move, and the commands behind it.
#[derive(Default)]
pub(super) struct Migrating {
    held: Option<Box<Held>>,
    /// Commands decoded after the held one, waiting behind it in order.
    behind: VecDeque<Request>,
    /// While the held command is dispatched after its keys moved: its sequence number and
    /// the moves done for it (slots of those moves go to their destination directly).
    done: Option<(u64, Vec<Move>)>,
    /// While the held command is dispatched again on a new table: when it stops waiting.
    deadline: Option<Instant>,
    /// Tells of each new table while a command waits for a migrating slot to open.
    published: Option<watch::Receiver<u64>>,
}

struct Held {
    seq: u64,
    again: Again,
    req: Request,
    /// The keys to move (argument indices), by move.
    moves: Vec<(Move, Vec<usize>)>,
    /// `None` until the MIGRATEs are sent, then how many batches of them are unanswered.
    unanswered: Option<usize>,
    /// When the command stops waiting for a slot to open (TRYAGAIN then).
    deadline: Instant,
    /// Why a MIGRATE failed, if one did.
    failure: Option<String>,
}

impl Migrating {
    /// Whether a command waits for a MIGRATE: the session dispatches nothing after it.
    #[inline]
    pub(super) fn holds(&self) -> bool {
        self.held.is_some()
    }

    /// Whether the held command waits for a migrating slot to open (a new table).
    pub(super) fn waits_for_table(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|h| h.unanswered.is_none() && h.moves.iter().any(|(m, _)| !m.open))
    }

    /// Until a new table is published or the held command's wait is over.
    pub(super) async fn table_or_deadline(&mut self) {
        let Some(held) = &self.held else { return };
        let deadline = held.deadline;
        let Some(published) = self.published.as_mut() else {
            return;
        };
        tokio::select! {
            _ = published.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }

    /// The keys of `keys` (argument indices of `args`) in slots that are migrating and not
    /// moved for command `seq` yet, by move; empty when there is nothing to move.
    #[inline]
    pub(super) fn to_move(
        &self,
        seq: u64,
        table: &SlotTable,
        args: &[Bytes],
        keys: impl Iterator<Item = usize>,
    ) -> Vec<(Move, Vec<usize>)> {
        let mut moves: Vec<(Move, Vec<usize>)> = Vec::new();
        if !table.has_moves() {
            return moves;
        }
        let done: &[Move] = match &self.done {
            Some((s, done)) if *s == seq => done,
            _ => &[],
        };
        for k in keys {
            let Some(m) = table.moving(slot::slot(&args[k])) else {
                continue;
            };
            if done.contains(m) {
                continue;
            }
            match moves.iter_mut().find(|(have, _)| have == m) {
                Some((_, ks)) => ks.push(k),
                None => moves.push((m.clone(), vec![k])),
            }
        }
        moves
    }
}

impl Session {
    /// Keeps command `seq` until the keys of `moves` are moved; nothing after it is
    /// dispatched meanwhile.
    pub(super) fn hold_for_move(
        &mut self,
        seq: u64,
        again: Again,
        req: Request,
        moves: Vec<(Move, Vec<usize>)>,
    ) {
        let deadline = self
            .migrating
            .deadline
            .unwrap_or_else(|| Instant::now() + self.worker.shared.config.backend.timeout());
        if self.migrating.published.is_none() && moves.iter().any(|(m, _)| !m.open) {
            let mut published = self.worker.shared.published.subscribe();
            published.mark_unchanged();
            self.migrating.published = Some(published);
        }
        self.migrating.held = Some(Box::new(Held {
            seq,
            again,
            req,
            moves,
            unanswered: None,
            deadline,
            failure: None,
        }));
    }

    /// A new table, or the wait is over: the held command is dispatched again (it waits on,
    /// moves its keys, or runs where the new table says), or fails with TRYAGAIN.
    pub(super) fn table_changed(&mut self) {
        let Some(held) = self.migrating.held.as_mut() else {
            return;
        };
        if Instant::now() >= held.deadline {
            held.failure = Some("not every proxy follows the migration yet".to_string());
        }
        self.release_held(false);
        self.advance_move();
    }

    /// Keeps a command read while another waits for a MIGRATE, if one does (`Err` gives it
    /// back otherwise).
    pub(super) fn wait_behind_move(&mut self, req: Request) -> Result<(), Request> {
        if !self.migrating.holds() {
            return Err(req);
        }
        self.migrating.behind.push_back(req);
        Ok(())
    }

    /// Takes the replies to MIGRATEs; a reply other than `+OK` or `+NOKEY` fails the command.
    pub(super) fn on_moved(&mut self, batch: ReplyBatch) {
        let Some(held) = self.migrating.held.as_mut() else {
            return;
        };
        for reply in &batch.replies {
            if held.failure.is_none() && !matches!(&reply[..], b"+OK\r\n" | b"+NOKEY\r\n") {
                let text = String::from_utf8_lossy(reply);
                let text = text.trim_start_matches(['-', '+']).trim_end();
                held.failure = Some(text.to_string());
            }
        }
        if let Some(n) = held.unanswered.as_mut() {
            *n = n.saturating_sub(1);
        }
    }

    /// Moves the held command on: sends its MIGRATEs once the commands before it are
    /// answered, and once those are answered, sends it (or fails it) and dispatches what
    /// waited behind it.
    pub(super) fn advance_move(&mut self) {
        // Bounded: each round either waits or dispatches the held command.
        loop {
            let Some(held) = self.migrating.held.as_mut() else {
                return;
            };
            match held.unanswered {
                None if held.moves.iter().any(|(m, _)| !m.open) => return,
                None if !self.queue.sent_unanswered() => {
                    let n = self.send_migrates();
                    if let Some(held) = self.migrating.held.as_mut() {
                        held.unanswered = Some(n);
                    }
                }
                Some(0) => self.release_held(true),
                _ => return,
            }
        }
    }

    /// Sends the MIGRATEs of the held command: one batch per source master, on the worker's
    /// connection for MIGRATEs from it. How many batches.
    fn send_migrates(&mut self) -> usize {
        let held = self.migrating.held.as_ref().expect("a held command");
        let config = &self.worker.shared.config.backend;
        let timeout = config.timeout_ms.to_string();
        let db = self.client.db.to_string();
        let password = self.worker.shared.passwords.load().backend.clone();
        let mut batches: Vec<(u32, BytesMut, u32)> = Vec::new();
        for (m, keys) in &held.moves {
            let i = match batches.iter().position(|b| b.0 == m.from) {
                Some(i) => i,
                None => {
                    batches.push((m.from, BytesMut::new(), 0));
                    batches.len() - 1
                }
            };
            let (_, out, count) = &mut batches[i];
            let auth = if password.is_empty() { 0 } else { 2 };
            encode::array_header(out, 8 + auth + keys.len());
            for a in [
                "MIGRATE", &m.to_host, &m.to_port, "", &db, &timeout, "REPLACE",
            ] {
                encode::bulk(out, a.as_bytes());
            }
            if auth > 0 {
                encode::bulk(out, b"AUTH");
                encode::bulk(out, password.as_bytes());
            }
            encode::bulk(out, b"KEYS");
            for &k in keys {
                encode::bulk(out, &held.req.args[k]);
            }
            *count += 1;
        }
        let n = batches.len();
        for (from, data, count) in batches {
            let conn = self.worker.mover(from, self.client.db);
            conn.send(Batch {
                data: data.freeze(),
                count,
                tag: MIGRATE_TAG,
                reply_to: self.outbox.reply_to(),
                routed: None,
            });
        }
        n
    }

    /// Sends the held command (its keys are `moved`, or it is dispatched again on a new
    /// table) or fails it, then dispatches the commands that waited behind it until one
    /// waits for a MIGRATE again.
    fn release_held(&mut self, moved: bool) {
        let held = *self.migrating.held.take().expect("a held command");
        let table = self.worker.shared.table.load_full();
        let refusal = self.worker.shared.refusal.load_full();
        let refusal = refusal.as_deref().map(String::as_str);
        let now = std::time::Instant::now();
        self.outbox.revision = table.revision;
        if let Some(why) = held.failure {
            let slot = held
                .moves
                .first()
                .and_then(|(_, keys)| keys.first())
                .map_or(0, |&k| slot::slot(&held.req.args[k]));
            let to = held.moves.first().map_or(String::new(), |(m, _)| {
                format!("{}:{}", m.to_host, m.to_port)
            });
            self.queue.fail(
                held.seq,
                CommandError::TryAgain(format!(
                    "slot {slot} is migrating and its keys could not be moved to {to}: {why}"
                )),
            );
        } else {
            let done = if moved {
                held.moves.into_iter().map(|(m, _)| m).collect()
            } else {
                self.migrating.deadline = Some(held.deadline);
                Vec::new()
            };
            self.migrating.done = Some((held.seq, done));
            match held.again {
                Again::Split(kind) => self.dispatch_split(held.seq, kind, held.req, &table),
                Again::Keyed(spec) => self.dispatch_keyed(held.seq, spec, held.req, &table, None),
            }
            self.migrating.done = None;
            self.migrating.deadline = None;
        }
        while !self.migrating.holds() {
            let Some(req) = self.migrating.behind.pop_front() else {
                break;
            };
            self.dispatch(req, &table, refusal, now);
        }
        self.outbox.flush(&mut self.queue);
        if !self.migrating.holds() && self.client.reads() {
            // What is still unread in the read buffer.
            self.on_input(now);
        }
    }
}

/// The argument indices of the keys of a split command.
pub(super) fn split_keys(kind: command::Split, args: &[Bytes]) -> impl Iterator<Item = usize> {
    let step = if kind == command::Split::Mset { 2 } else { 1 };
    (1..args.len()).step_by(step)
}
