//! GraphiQL, served from the binary: the page works offline (async-graphql's own page loads React
//! and GraphiQL from a CDN, and renders blank without internet). Versions and licences are in
//! `graphiql/assets/README.md`. Queries go to `/graphql` over HTTP with the headers the headers
//! tab holds; subscriptions to the same endpoint over `graphql-transport-ws`, authorized with the
//! same `Authorization` header.
use axum::{
    Router,
    http::{HeaderValue, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};

/// In every asset path, so a browser never mixes a cached file of one version with another's.
pub const VERSION: &str = "4.1.2";

const GRAPHIQL_JS: &[u8] = include_bytes!("graphiql/assets/graphiql.min.js");
const GRAPHIQL_CSS: &[u8] = include_bytes!("graphiql/assets/graphiql.min.css");
const REACT_JS: &[u8] = include_bytes!("graphiql/assets/react.production.min.js");
const REACT_DOM_JS: &[u8] = include_bytes!("graphiql/assets/react-dom.production.min.js");
const LICENCES: &str = concat!(
    "GraphiQL 4.1.2\n\n",
    include_str!("graphiql/assets/LICENSE-graphiql"),
    "\n\nReact 18.3.1\n\n",
    include_str!("graphiql/assets/LICENSE-react"),
    "\n\nReact DOM 18.3.1\n\n",
    include_str!("graphiql/assets/LICENSE-react-dom"),
);

/// Starts GraphiQL. A file of its own rather than an inline script, so the page's policy can
/// forbid inline scripts altogether.
const START: &str = r#"(function () {
  var scheme = location.protocol === "https:" ? "wss:" : "ws:";
  // The headers tab is the one place a token is typed; subscriptions send its Authorization in
  // connection_init, read when the socket connects.
  function authorization() {
    try {
      var headers = JSON.parse(localStorage.getItem("graphiql:headers") || "{}");
      for (var name in headers) {
        if (name.toLowerCase() === "authorization") return { authorization: headers[name] };
      }
    } catch (ignored) {}
    return {};
  }
  var fetcher = GraphiQL.createFetcher({
    url: "/graphql",
    subscriptionUrl: scheme + "//" + location.host + "/graphql",
    wsConnectionParams: authorization,
  });
  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: true,
      defaultHeaders: '{\n  "Authorization": "Bearer <access token from login>"\n}',
    })
  );
})();
"#;

fn page() -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>home-visits GraphiQL</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/graphiql/{VERSION}/graphiql.min.css">
<style>body {{ margin: 0; height: 100vh; }} #graphiql {{ height: 100vh; }}</style>
</head>
<body>
<div id="graphiql">Loading GraphiQL...</div>
<script src="/graphiql/{VERSION}/react.production.min.js"></script>
<script src="/graphiql/{VERSION}/react-dom.production.min.js"></script>
<script src="/graphiql/{VERSION}/graphiql.min.js"></script>
<script src="/graphiql/{VERSION}/start.js"></script>
</body>
</html>
"#
    )
}

/// Everything from this origin; fonts and icons are data URIs inside the CSS; GraphiQL styles
/// its editors inline. `connect-src 'self'` covers the same origin's `ws:`/`wss:` (CSP level 3).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     font-src data:; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The page, as `GET /graphql` answers a browser.
pub fn html() -> Response {
    let mut response = Html(page()).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    response
}

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Versioned paths never change content.
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

/// The page's files under `/graphiql/<version>/`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let at = |file: &str| format!("/graphiql/{VERSION}/{file}");
    Router::new()
        .route(
            &at("graphiql.min.js"),
            get(|| async { asset("text/javascript; charset=utf-8", GRAPHIQL_JS) }),
        )
        .route(
            &at("graphiql.min.css"),
            get(|| async { asset("text/css; charset=utf-8", GRAPHIQL_CSS) }),
        )
        .route(
            &at("react.production.min.js"),
            get(|| async { asset("text/javascript; charset=utf-8", REACT_JS) }),
        )
        .route(
            &at("react-dom.production.min.js"),
            get(|| async { asset("text/javascript; charset=utf-8", REACT_DOM_JS) }),
        )
        .route(
            &at("start.js"),
            get(|| async { asset("text/javascript; charset=utf-8", START.as_bytes()) }),
        )
        .route(
            &at("LICENSES.txt"),
            get(|| async { asset("text/plain; charset=utf-8", LICENCES.as_bytes()) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let page = page();
        let absolute: Vec<&str> = page
            .split(['"', '\''])
            .filter(|part| part.contains("//"))
            .collect();
        assert_eq!(
            absolute,
            Vec::<&str>::new(),
            "absolute references in the page"
        );
        assert!(page.contains(&format!("/graphiql/{VERSION}/graphiql.min.js")));
    }

    #[test]
    fn the_licences_are_served_with_the_files() {
        assert!(LICENCES.contains("MIT License"));
        assert!(LICENCES.contains("GraphQL Contributors"));
        assert!(LICENCES.contains("Facebook"));
    }
}
