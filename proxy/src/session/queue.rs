//! A session's commands in request order and the batches it has in flight: the one place that
//! keeps the ordering invariant — a reply is written only after every reply before it.
//!
//! Every command gets a sequence number when it is read; a backend's replies come back by
//! batch tag, each reply to the [`Dest`] its command was given, and the ready prefix of the
//! queue is what the session writes.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::fanout::Gather;
use super::hello::HelloReply;
use super::plugins::ReplyHook;
use super::split::Merge;
use crate::backend::ReplyBatch;
use crate::command::CommandError;

/// Where one backend reply goes: a whole command's slot, or one part of a split command.
#[derive(Debug, Clone, Copy)]
pub(super) enum Dest {
    Whole(u64),
    Part(u64, u32),
}

pub(super) enum State {
    /// Sent to a backend; the reply is not here yet.
    Waiting,
    Ready(Bytes),
    /// A split command waiting for some of its parts.
    Merging(Box<Merge>),
    /// A fan-out command waiting for some of its groups.
    Gathering(Box<Gather>),
    /// A HELLO waiting for its backend's version: for the reply to a PING sent behind the
    /// setup of the session's connection to that backend.
    Hello(Box<HelloReply>),
}

/// A command in flight, in request order.
pub(super) struct Entry {
    pub(super) state: State,
    pub(super) cmd: Option<u16>,
    pub(super) start: Instant,
    /// The command as sent, when a plugin wants to see its reply.
    pub(super) reply_hook: Option<Box<ReplyHook>>,
    /// The reply is dropped, not written (CLIENT REPLY OFF or SKIP).
    pub(super) silent: bool,
}

/// Which replies the client wants (CLIENT REPLY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Replies {
    #[default]
    On,
    Off,
    /// The next command's reply is dropped, then On.
    SkipNext,
}

#[derive(Default)]
pub(super) struct ReplyQueue {
    /// Commands in request order; `entries[0]` has sequence number `head`.
    entries: VecDeque<Entry>,
    head: u64,
    /// Destinations of the replies of each batch in flight, by tag.
    batches: Vec<Option<Vec<Dest>>>,
    free_tags: Vec<u32>,
    /// Whether the commands queued from now on have their replies written.
    pub(super) replies: Replies,
}

impl ReplyQueue {
    /// Queues a command read now; its sequence number.
    pub(super) fn push(&mut self, cmd: Option<u16>, start: Instant) -> u64 {
        let silent = match self.replies {
            Replies::On => false,
            Replies::Off => true,
            Replies::SkipNext => {
                self.replies = Replies::On;
                true
            }
        };
        if self.entries.capacity() == 0 {
            // Most clients have one command at a time in flight: room for one, grown (and
            // kept) only for a client that pipelines.
            self.entries.reserve_exact(1);
        }
        self.entries.push_back(Entry {
            state: State::Waiting,
            cmd,
            start,
            reply_hook: None,
            silent,
        });
        self.head + self.entries.len() as u64 - 1
    }

    pub(super) fn entry(&mut self, seq: u64) -> &mut Entry {
        &mut self.entries[(seq - self.head) as usize]
    }

    pub(super) fn complete(&mut self, seq: u64, reply: Bytes) {
        self.entry(seq).state = State::Ready(reply);
    }

    pub(super) fn fail(&mut self, seq: u64, error: CommandError) {
        self.complete(seq, error.reply());
    }

    /// Gives a reply to its command, or to its part of a split or fan-out command.
    pub(super) fn fill(&mut self, dest: Dest, reply: Bytes) {
        match dest {
            Dest::Whole(seq) => self.complete(seq, reply),
            Dest::Part(seq, part) => {
                let e = self.entry(seq);
                let done = match &mut e.state {
                    State::Merging(m) => m.add(part as usize, reply),
                    State::Gathering(g) => g.add(part as usize, reply),
                    State::Hello(h) => Some(h.encode()),
                    _ => None,
                };
                if let Some(done) = done {
                    e.state = State::Ready(done);
                }
            }
        }
    }

    /// Records a batch sent with replies to `dests`, in order; its tag.
    pub(super) fn sent(&mut self, dests: Vec<Dest>) -> u32 {
        match self.free_tags.pop() {
            Some(t) => {
                self.batches[t as usize] = Some(dests);
                t
            }
            None => {
                self.batches.push(Some(dests));
                self.batches.len() as u32 - 1
            }
        }
    }

    /// Fills in the replies of a batch sent earlier.
    pub(super) fn on_replies(&mut self, batch: ReplyBatch) {
        let Some(dests) = self
            .batches
            .get_mut(batch.tag as usize)
            .and_then(Option::take)
        else {
            return;
        };
        self.free_tags.push(batch.tag);
        for (dest, reply) in dests.into_iter().zip(batch.replies) {
            self.fill(dest, reply);
        }
    }

    /// Whether a batch sent to a backend has not been answered yet.
    pub(super) fn sent_unanswered(&self) -> bool {
        self.batches.iter().any(Option::is_some)
    }

    /// The oldest command, whose reply is the next to write.
    pub(super) fn front(&mut self) -> Option<&mut Entry> {
        self.entries.front_mut()
    }

    /// Drops the oldest command, once its reply is written.
    pub(super) fn pop(&mut self) {
        self.entries.pop_front();
        self.head += 1;
    }

    /// The sequence number of the oldest command not written yet.
    pub(super) fn head(&self) -> u64 {
        self.head
    }

    /// The command of the newest entry (the last one read), if known.
    pub(super) fn back_cmd(&self) -> Option<u16> {
        self.entries.back().and_then(|e| e.cmd)
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
