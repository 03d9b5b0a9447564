//! GraphiQL's page: the libraries come from `/assets/` (see `build.rs`), no CDN.

const DEFAULT_QUERY: &str = r#"# idgraph: who owns whom in your Drift org.
# Press the run button (or Ctrl-Enter).
# A server with tokens answers 401 until you give one: open the Headers tab below and put
#   {"Authorization": "Bearer YOUR_TOKEN"}
# then run a query; the Docs and autocomplete fill in once the token is accepted.
{
  indexStatus { generation contacts agents orphans lastCrawlAt nextCrawlAt crawling }
  orphans(first: 5) {
    totalCount
    edges { node { contact { id email } reason owner { id email status departedAt } } }
  }
  whoOwnsWhom(first: 5) { edges { node { agent { id email status } contacts accounts } } }
}
"#;

/// GraphiQL's page (or, without the bundled assets, a minimal query page).
pub fn graphiql_page() -> String {
    let query_js = serde_json::to_string(DEFAULT_QUERY).unwrap_or_else(|_| "\"\"".into());
    if crate::graphiql_bundled() {
        format!(
            r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>idgraph · GraphiQL</title>
  <link rel="stylesheet" href="/assets/graphiql.min.css">
  <style>html, body, #graphiql {{ height: 100%; margin: 0; }}</style>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script src="/assets/react.production.min.js"></script>
  <script src="/assets/react-dom.production.min.js"></script>
  <script src="/assets/graphiql.min.js"></script>
  <script>
    // Sends the headers typed in GraphiQL's header editor (e.g. an Authorization bearer token).
    // When the schema could not be read (no token yet) and a request with a token then
    // succeeds, GraphiQL is given a new fetcher, which makes it read the schema again.
    let schemaRefused = false;
    function makeFetcher() {{
      return async function fetcher(params, opts) {{
        const headers = Object.assign({{'content-type': 'application/json'}}, (opts && opts.headers) || {{}});
        // Signed in through the identity provider: the session's CSRF token goes with every POST.
        const csrf = document.querySelector('meta[name="idgraph-csrf"]');
        if (csrf) headers['x-csrf-token'] = csrf.content;
        const r = await fetch((/^\/orgs\/[^/]+\//.exec(location.pathname) || ['/'])[0] + 'graphql', {{method: 'POST', headers, body: JSON.stringify(params)}});
        const introspection = params && params.operationName === 'IntrospectionQuery';
        if (introspection && (r.status === 401 || r.status === 403)) schemaRefused = true;
        if (!introspection && r.ok && schemaRefused && Object.keys(headers).some((k) => k.toLowerCase() === 'authorization')) {{
          schemaRefused = false;
          setTimeout(draw, 0);
        }}
        return r.json();
      }};
    }}
    const root = ReactDOM.createRoot(document.getElementById('graphiql'));
    function draw() {{
      root.render(React.createElement(GraphiQL, {{fetcher: makeFetcher(), defaultQuery: {query_js}, defaultEditorToolbarOpen: true}}));
    }}
    draw();
  </script>
</body>
</html>"#
        )
    } else {
        format!(
            r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>idgraph · query</title>
<style>body{{font-family:system-ui,sans-serif;margin:1rem}}textarea{{width:100%;height:40vh;font-family:monospace}}pre{{background:#f4f4f4;padding:1rem;overflow:auto}}</style></head>
<body>
<h1>idgraph</h1>
<p>This build has no GraphiQL assets (npm was not reachable when it was built); this minimal page runs queries against <code>/graphql</code>.</p>
<p><label>Bearer token (if the server requires one): <input id="token" type="password" size="40"></label></p>
<textarea id="query"></textarea>
<p><button id="run">Run</button></p>
<pre id="result"></pre>
<script>
document.getElementById('query').value = {query_js};
document.getElementById('run').onclick = async () => {{
  const headers = {{'content-type': 'application/json'}};
  const t = document.getElementById('token').value;
  if (t) headers['authorization'] = 'Bearer ' + t;
  const r = await fetch((/^\/orgs\/[^/]+\//.exec(location.pathname) || ['/'])[0] + 'graphql', {{method: 'POST', headers, body: JSON.stringify({{query: document.getElementById('query').value}})}});
  document.getElementById('result').textContent = JSON.stringify(await r.json(), null, 2);
}};
</script>
</body></html>"#
        )
    }
}
