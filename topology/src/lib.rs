//! Tessera's topology: what the cluster looks like ([`model`]: product, groups, slots,
//! proxies, as JSON documents under `/tessera/<product>/`) and where it is kept ([`store`]:
//! one trait, with etcd and an embedded file store behind it).
//!
//! The dashboard is the single writer of the model; proxies read and watch it and register
//! themselves under leases. Every change is one store transaction with one revision.

#![forbid(unsafe_code)]

pub mod embedded;
pub mod etcd;
pub mod keys;
pub mod load;
pub mod model;
pub mod slot;
pub mod store;

pub use load::{apply_event, apply_revision, load_topology};
pub use store::{KeyValue, LeaseId, Revision, Store, StoreError, WatchEvent, connect};
