//! What read views show instead of a secret (passwords, plugin configs). The proxy's admin
//! API and the dashboard both mask with these definitions, so they never differ.

use serde_json::json;
use sha2::{Digest, Sha256};

/// What read views show instead of a secret that is set: a password, a plugin's config.
pub const MASK: &str = "********";

/// `secret` as read views show it: [`MASK`], or empty if it is empty.
pub fn mask(secret: &str) -> String {
    if secret.is_empty() {
        String::new()
    } else {
        MASK.to_string()
    }
}

/// A plugin link as JSON (`[[plugin]]` of the proxy config, or a link of the dashboard's
/// chain) as read views show it: its `config` [`mask`]ed, with `config_bytes` (its length)
/// and `config_sha256` (lowercase hex) added, so that two configs can be told apart.
pub fn mask_plugin_config(link: &mut serde_json::Value) {
    let Some(link) = link.as_object_mut() else {
        return;
    };
    let config = link
        .get("config")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let sha256: String = Sha256::digest(config.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let bytes = config.len();
    let masked = mask(config);
    link.insert("config".to_string(), json!(masked));
    link.insert("config_bytes".to_string(), json!(bytes));
    link.insert("config_sha256".to_string(), json!(sha256));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_configs_are_masked_with_a_fingerprint() {
        let mut link = json!({"name": "acl", "config": "abc", "fail": "open"});
        mask_plugin_config(&mut link);
        assert_eq!(
            link,
            json!({"name": "acl", "config": MASK, "config_bytes": 3, "fail": "open",
                   "config_sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"})
        );
        let mut empty = json!({"name": "f", "config": ""});
        mask_plugin_config(&mut empty);
        assert_eq!(
            (&empty["config"], &empty["config_bytes"]),
            (&json!(""), &json!(0))
        );
    }
}
