//! The web admin served at `/`: one page, its stylesheet and its script, built into the
//! binary (no network access needed); the script calls the REST API as `tessera admin` does.

use std::sync::Arc;

use warp::Filter;
use warp::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use warp::http::{HeaderName, Response};
use warp::hyper::Body;

use crate::api::AppState;

const INDEX: &str = include_str!("../ui/index.html");
const STYLE: &str = include_str!("../ui/app.css");
const SCRIPT: &str = include_str!("../ui/app.js");

/// Only this page's own files run, and no other site may frame it.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'none'";

/// The UI's files by path (`/`, `/ui/app.css`, `/ui/app.js`), for `GET` from the dashboard's
/// own address; any other request is left to the API (which answers the 421 of a foreign
/// `Host`, and the 404 or 405 of everything else).
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response<Body>,), Error = warp::Rejection> + Clone + Send + Sync + 'static
{
    warp::get()
        .and(warp::path::full())
        .and(
            warp::host::optional().map(|a: Option<warp::host::Authority>| a.map(|a| a.to_string())),
        )
        .and_then(move |path: warp::path::FullPath, host: Option<String>| {
            let state = state.clone();
            async move {
                if let Some(&listen) = state.listen.get()
                    && tessera_topology::http::check_host(host.as_deref(), listen).is_err()
                {
                    return Err(warp::reject::not_found());
                }
                asset(path.as_str()).ok_or_else(warp::reject::not_found)
            }
        })
}

fn asset(path: &str) -> Option<Response<Body>> {
    let (body, content_type) = match path {
        "/" | "/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/ui/app.css" => (STYLE, "text/css; charset=utf-8"),
        "/ui/app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return None,
    };
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_by_path() {
        let page = asset("/").expect("the page");
        assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(INDEX.contains("/ui/app.js") && INDEX.contains("/ui/app.css"));
        assert!(asset("/ui/app.js").is_some());
        assert!(asset("/ui/other.js").is_none());
        assert!(asset("/api/health").is_none());
    }
}
