//! Tessera's protocol: RESP on the wire ([`resp`]: the request decoder with its limits, the
//! reply scanner, encoders) and the Redis command table ([`command`]: ids, classes, key
//! positions), shared by the proxy and the plugin host.

#![forbid(unsafe_code)]

pub mod command;
pub mod resp;
