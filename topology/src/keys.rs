//! The key layout of one product in the store (documented in `docs/topology.md`).

/// `/tessera/<product>/` — everything of one product lives under it.
pub fn product_prefix(product: &str) -> String {
    format!("/tessera/{product}/")
}

/// The product settings ([`crate::model::Product`]).
pub fn product(product: &str) -> String {
    format!("/tessera/{product}/product")
}

/// The slot table ([`crate::model::Slots`]), one document so any change is one revision.
pub fn slots(product: &str) -> String {
    format!("/tessera/{product}/slots")
}

/// Prefix of the groups; each group is `groups/<id>` ([`crate::model::Group`]).
pub fn groups_prefix(product: &str) -> String {
    format!("/tessera/{product}/groups/")
}

pub fn group(product: &str, id: u32) -> String {
    format!("/tessera/{product}/groups/{id:04}")
}

/// Prefix of the proxy registrations; each is `proxies/<token>` ([`crate::model::ProxyInfo`]),
/// written under the proxy's lease.
pub fn proxies_prefix(product: &str) -> String {
    format!("/tessera/{product}/proxies/")
}

pub fn proxy(product: &str, token: &str) -> String {
    format!("/tessera/{product}/proxies/{token}")
}

/// The dashboard lock ([`crate::model::DashboardLock`]), held under the dashboard's lease.
pub fn dashboard_lock(product: &str) -> String {
    format!("/tessera/{product}/dashboard")
}

/// The plugin chain ([`crate::model::Plugins`]).
pub fn plugins(product: &str) -> String {
    format!("/tessera/{product}/plugins")
}

/// Prefix of the plugin modules; each is `plugin-modules/<sha256 hex>`, the raw module bytes.
pub fn plugin_modules_prefix(product: &str) -> String {
    format!("/tessera/{product}/plugin-modules/")
}

pub fn plugin_module(product: &str, sha256: &str) -> String {
    format!("/tessera/{product}/plugin-modules/{sha256}")
}
