//! The function libraries of a group about to get its first slots: restored on its master
//! from a group that owns slots before any slot routes to it, so its FCALLs find them.

use std::time::Duration;

use tessera_topology::model::SlotState;
use tracing::{info, warn};

use super::redis::{RedisConn, RedisError, Reply};
use crate::error::DashboardError;
use crate::service::Snapshot;

/// The bound of each connect and command.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Before group `to` gets slots (assigned or migrating to it): when it owns none yet and
/// other groups do, copies the libraries of the first of them (by id) whose master answers
/// (`FUNCTION LIST`, `FUNCTION DUMP`) to `to`'s master with `FUNCTION RESTORE ... REPLACE`.
/// A failure on `to` is an error naming both groups, and `to` must not get the slots then.
/// Nothing to do (a warning when no source answered) when the source has no library (or is
/// a Redis without functions, before 7.0), when no group with slots answers, or for an
/// unknown group or one without a server (the caller refuses those).
pub async fn before_first_slots(snap: &Snapshot, to: u32) -> Result<(), DashboardError> {
    let states = snap.slot_states();
    let has_slots = |g: u32| {
        states.iter().any(|s| match *s {
            SlotState::Owned { group } => group == g,
            SlotState::Migrating { from, to } => from == g || to == g,
            SlotState::Offline => false,
        })
    };
    let master = |g: u32| {
        snap.groups
            .get(&g)
            .and_then(|doc| doc.value.servers.first().cloned())
    };
    let Some(to_addr) = master(to) else {
        return Ok(());
    };
    if has_slots(to) {
        return Ok(());
    }
    let password = snap
        .product
        .as_ref()
        .map(|p| p.value.backend_password.clone())
        .unwrap_or_default();
    let mut unreachable = Vec::new();
    for (&from, from_addr) in snap
        .groups
        .keys()
        .filter(|&&g| g != to && has_slots(g))
        .filter_map(|g| Some((g, master(*g)?)))
    {
        // A source that does not answer (a dead group being replaced) gives way to the next.
        let dump = match dump(&from_addr, &password).await {
            Ok(None) => return Ok(()),
            Ok(Some(dump)) => dump,
            Err(e) => {
                unreachable.push(format!("group {from}: {e}"));
                continue;
            }
        };
        restore(&to_addr, &password, &dump)
            .await
            .map_err(|e| {
                DashboardError::Backend(format!(
                    "group {to} gets no slots before it has the function libraries, and copying them from group {from} failed: {e}"
                ))
            })?;
        info!(
            from,
            to, "function libraries copied to a group about to get its first slots"
        );
        return Ok(());
    }
    if !unreachable.is_empty() {
        // Nothing is known to copy: the slots go on (a failover onto a new group must not
        // wait for the dead groups), with a warning.
        warn!(
            to,
            "no group with slots answered for its function libraries, none copied: {}",
            unreachable.join("; ")
        );
    }
    Ok(())
}

/// `from`'s libraries as a `FUNCTION DUMP` payload, `None` when it has none.
async fn dump(from: &str, password: &str) -> Result<Option<Vec<u8>>, RedisError> {
    let mut source = RedisConn::connect(from, password, TIMEOUT).await?;
    match source.call(&[b"FUNCTION", b"LIST"]).await {
        Ok(Reply::Array(Some(libraries))) if libraries.is_empty() => return Ok(None),
        Err(RedisError::Reply { message, .. }) if message.starts_with("ERR unknown command") => {
            return Ok(None);
        }
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    match source.call(&[b"FUNCTION", b"DUMP"]).await? {
        Reply::Bulk(Some(dump)) => Ok(Some(dump)),
        other => Err(RedisError::Reply {
            addr: from.to_string(),
            command: "FUNCTION DUMP".into(),
            message: format!("not a payload: {other:?}"),
        }),
    }
}

async fn restore(to: &str, password: &str, dump: &[u8]) -> Result<(), RedisError> {
    let mut target = RedisConn::connect(to, password, TIMEOUT).await?;
    target
        .call(&[b"FUNCTION", b"RESTORE", dump, b"REPLACE"])
        .await?;
    Ok(())
}
