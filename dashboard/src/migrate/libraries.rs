//! The function libraries of a group about to get its first slots: restored on its master
//! from a group that owns slots before any slot routes to it, so its FCALLs find them.

use std::time::Duration;

use tessera_topology::model::SlotState;
use tracing::info;

use super::redis::{RedisConn, RedisError, Reply};
use crate::error::DashboardError;
use crate::service::Snapshot;

/// The bound of each connect and command.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Before group `to` gets slots (assigned or migrating to it): when it owns none yet and
/// another group does, copies that group's libraries (the lowest such group's `FUNCTION
/// DUMP`) to `to`'s master with `FUNCTION RESTORE ... REPLACE`. A failure is an error that
/// names both groups, and `to` must not get the slots then. Nothing to do when the source
/// has no library (or is a Redis without functions, before 7.0), or for an unknown group
/// or one without a server (the caller refuses those).
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
    let Some((from, from_addr)) = snap
        .groups
        .keys()
        .filter(|&&g| g != to && has_slots(g))
        .find_map(|&g| Some((g, master(g)?)))
    else {
        return Ok(());
    };
    let password = snap
        .product
        .as_ref()
        .map(|p| p.value.backend_password.clone())
        .unwrap_or_default();
    copy(&from_addr, &to_addr, &password)
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
    Ok(())
}

/// Restores `from`'s libraries on `to`; `to` is not contacted when `from` has none.
async fn copy(from: &str, to: &str, password: &str) -> Result<(), RedisError> {
    let mut source = RedisConn::connect(from, password, TIMEOUT).await?;
    match source.call(&[b"FUNCTION", b"LIST"]).await {
        Ok(Reply::Array(Some(libraries))) if libraries.is_empty() => return Ok(()),
        Err(RedisError::Reply { message, .. }) if message.starts_with("ERR unknown command") => {
            return Ok(());
        }
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let dump = match source.call(&[b"FUNCTION", b"DUMP"]).await? {
        Reply::Bulk(Some(dump)) => dump,
        other => {
            return Err(RedisError::Reply {
                addr: from.to_string(),
                command: "FUNCTION DUMP".into(),
                message: format!("not a payload: {other:?}"),
            });
        }
    };
    let mut target = RedisConn::connect(to, password, TIMEOUT).await?;
    target
        .call(&[b"FUNCTION", b"RESTORE", &dump, b"REPLACE"])
        .await?;
    Ok(())
}
