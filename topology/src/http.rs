//! The `Host` check of the admin HTTP APIs (the proxy's and the dashboard's): a request must
//! name the server it was sent to, so that a web page cannot reach them through DNS rebinding.

use std::net::{IpAddr, SocketAddr};

/// A request for another server than this one: its `Host` names neither the address the
/// server listens on nor, for a server on a loopback or wildcard address, `localhost`.
#[derive(Debug, thiserror::Error)]
#[error(
    "this server is http://{listen}/, not {host:?}: requests for another host name are refused (use the address it listens on, or localhost for a local one)"
)]
pub struct ForeignHost {
    pub host: String,
    pub listen: SocketAddr,
}

/// Whether a request with this `Host` header is for the server listening on `listen`. A
/// browser always sends the name it resolved, so a page served from a name an attacker
/// rebound to this machine's address (DNS rebinding) is refused here. Accepted:
///
/// - the port of `listen` (80 if the header has none), and
/// - as the name, an IP address: `listen`'s own, any loopback one if `listen` is loopback,
///   any if `listen` is a wildcard (`0.0.0.0`, `[::]`) — an address cannot be rebound; or
///   `localhost` if `listen` is loopback or a wildcard.
///
/// No header at all (HTTP/1.0 tools) is accepted: a browser never omits it.
pub fn check_host(host: Option<&str>, listen: SocketAddr) -> Result<(), ForeignHost> {
    let Some(header) = host else {
        return Ok(());
    };
    let refused = || ForeignHost {
        host: header.to_string(),
        listen,
    };
    let text = header.trim();
    let (name, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (name, after) = rest.split_once(']').ok_or_else(refused)?;
            (name, after.strip_prefix(':'))
        }
        None => match text.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (text, None),
        },
    };
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| refused())?,
        None => 80,
    };
    if port != listen.port() {
        return Err(refused());
    }
    let ip = listen.ip();
    let ok = match name.parse::<IpAddr>() {
        Ok(addr) => ip.is_unspecified() || addr == ip || (ip.is_loopback() && addr.is_loopback()),
        Err(_) => {
            name.eq_ignore_ascii_case("localhost") && (ip.is_loopback() || ip.is_unspecified())
        }
    };
    if ok { Ok(()) } else { Err(refused()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_this_server_only() {
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        let ok = |host: &str, listen: &str| check_host(Some(host), at(listen)).is_ok();
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LocalHost:8080",
            "[::1]:8080",
            "127.0.0.2:8080",
        ] {
            assert!(ok(host, "127.0.0.1:8080"), "{host}");
        }
        for host in [
            "evil.example:8080",
            "127.0.0.1:8081",
            "127.0.0.1",
            "localhost",
            "10.0.0.1:8080",
            "[::1",
            "x:y",
            "",
        ] {
            assert!(!ok(host, "127.0.0.1:8080"), "{host}");
        }
        assert!(ok("10.1.2.3:80", "10.1.2.3:80") && ok("10.1.2.3", "10.1.2.3:80"));
        assert!(!ok("localhost:80", "10.1.2.3:80") && !ok("10.1.2.4:80", "10.1.2.3:80"));
        for host in ["10.9.9.9:9000", "localhost:9000", "[fe80::1]:9000"] {
            assert!(ok(host, "0.0.0.0:9000") && ok(host, "[::]:9000"), "{host}");
        }
        assert!(!ok("evil.example:9000", "0.0.0.0:9000"));
        assert!(check_host(None, at("127.0.0.1:8080")).is_ok());
        let e = check_host(Some("evil.example:8080"), at("127.0.0.1:8080")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("this server is http://127.0.0.1:8080/, not \"evil.example:8080\""),
            "{e}"
        );
    }
}
