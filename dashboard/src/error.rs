//! The dashboard's one error type, and the one place where an error becomes an HTTP
//! response: `{"error": "message"}` with the status [`DashboardError::status`] gives.

use tessera_topology::StoreError;
use tessera_topology::model::{DashboardLock, SlotRangeError};
use warp::http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The request is malformed or asks for something impossible (400).
    #[error("{0}")]
    BadRequest(String),
    /// A slot range that does not parse (400).
    #[error(transparent)]
    BadRange(#[from] SlotRangeError),
    /// A request whose `Host` is not the dashboard's address (421).
    #[error(transparent)]
    ForeignHost(#[from] tessera_topology::http::ForeignHost),
    /// A mutating call without the right `Authorization: Bearer <token>` (401).
    #[error("missing or wrong admin token: send `Authorization: Bearer <token>`")]
    Unauthorized,
    /// An unknown group, server or route (404).
    #[error("{0}")]
    NotFound(String),
    /// A known route called with the wrong method (405).
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// The request body is larger than the route accepts (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request contradicts the current topology: exists already, still in use (409).
    #[error("{0}")]
    Conflict(String),
    /// A backend Redis failed a step the change depends on (502).
    #[error("{0}")]
    Backend(String),
    /// The store could not be used (503 when unreachable, 500 otherwise).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A document in the store does not parse (500): written by something else than Tessera.
    #[error("document {key} in the store is not valid: {message}")]
    Corrupt { key: String, message: String },
    /// Another dashboard holds the single-writer lock of this product (at start).
    #[error(
        "another dashboard holds the lock for product {product:?}: {} (pid {}, since {}); it expires by itself {} s after that dashboard dies",
        holder.addr, holder.pid, crate::fmt_unix_time(holder.start_time), holder.ttl_secs
    )]
    Locked {
        product: String,
        holder: DashboardLock,
    },
    /// This dashboard can no longer be sure it holds the lock, so it refuses writes (503).
    #[error("this dashboard lost its lock ({0}); it accepts no more writes and is shutting down")]
    LockLost(String),
    /// The HTTP listener could not be bound (at start).
    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: String, message: String },
}

impl DashboardError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            DashboardError::BadRequest(_) | DashboardError::BadRange(_) => StatusCode::BAD_REQUEST,
            DashboardError::ForeignHost(_) => StatusCode::MISDIRECTED_REQUEST,
            DashboardError::Unauthorized => StatusCode::UNAUTHORIZED,
            DashboardError::NotFound(_) => StatusCode::NOT_FOUND,
            DashboardError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            DashboardError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            DashboardError::Conflict(_) | DashboardError::Locked { .. } => StatusCode::CONFLICT,
            DashboardError::Backend(_) => StatusCode::BAD_GATEWAY,
            DashboardError::Store(StoreError::Unreachable { .. } | StoreError::LeaseLost(_))
            | DashboardError::LockLost(_) => StatusCode::SERVICE_UNAVAILABLE,
            DashboardError::Store(_)
            | DashboardError::Corrupt { .. }
            | DashboardError::Listen { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The HTTP response: `{"error": message}` with [`Self::status`] (and, for 401, the
    /// `WWW-Authenticate` header).
    pub fn into_response(self) -> warp::reply::Response {
        use warp::Reply;
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), "{self}");
        } else {
            tracing::debug!(status = status.as_u16(), "{self}");
        }
        let body = warp::reply::json(&serde_json::json!({ "error": self.to_string() }));
        let reply = warp::reply::with_status(body, status);
        if status == StatusCode::UNAUTHORIZED {
            warp::reply::with_header(reply, "www-authenticate", "Bearer").into_response()
        } else {
            reply.into_response()
        }
    }
}
