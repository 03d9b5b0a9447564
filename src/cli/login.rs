//! `idgraph auth login`: the OAuth authorization-code flow with a loopback redirect.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use idgraph_crawler::{Secret, StoredTokens};

use crate::app::settings::duration;

#[derive(Args)]
pub struct LoginArgs {
    #[arg(long, env = "IDGRAPH_OAUTH_CLIENT_ID")]
    client_id: String,
    #[arg(long, env = "IDGRAPH_OAUTH_CLIENT_SECRET", hide_env_values = true)]
    client_secret: String,
    #[arg(long, default_value = "https://dev.drift.com/authorize")]
    authorize_url: String,
    #[arg(long, default_value = "https://driftapi.com/oauth2/token")]
    token_url: String,
    /// Where to store the tokens (written with mode 0600).
    #[arg(long, default_value = "idgraph-data/oauth-tokens.json")]
    token_file: PathBuf,
    /// The loopback port for the redirect (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Give up waiting for the browser after this long.
    #[arg(long, default_value = "5m")]
    timeout: String,
}

pub async fn login(a: LoginArgs) -> Result<()> {
    use axum::extract::Query;
    use axum::routing::get;
    let timeout = duration(&a.timeout)?;
    let listener =
        tokio::net::TcpListener::bind(("127.0.0.1", a.port)).await.context("cannot bind the loopback redirect")?;
    let port = listener.local_addr()?.port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let state: String = {
        use rand::distr::Alphanumeric;
        use rand::Rng;
        rand::rng().sample_iter(&Alphanumeric).take(24).map(char::from).collect()
    };
    let url = format!(
        "{}?response_type=code&client_id={}&redirect_uri={}&state={}",
        a.authorize_url,
        urlencoding::encode(&a.client_id),
        urlencoding::encode(&redirect),
        state
    );
    println!("Open this URL in a browser and approve idgraph:\n\n  {url}\n\nWaiting for the redirect to {redirect} …");
    let (tx, rx) = tokio::sync::oneshot::channel::<(String, String)>();
    let tx = Arc::new(parking_lot::Mutex::new(Some(tx)));
    let app = axum::Router::new().route(
        "/callback",
        get(move |Query(q): Query<std::collections::HashMap<String, String>>| {
            let tx = tx.clone();
            async move {
                if let (Some(code), Some(st)) = (q.get("code"), q.get("state")) {
                    if let Some(tx) = tx.lock().take() {
                        let _ = tx.send((code.clone(), st.clone()));
                    }
                    "idgraph is authorized; you can close this tab."
                } else {
                    "missing code or state"
                }
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let (code, got_state) = tokio::time::timeout(timeout, rx)
        .await
        .context("timed out waiting for the browser")?
        .context("the redirect listener stopped")?;
    server.abort();
    if got_state != state {
        anyhow::bail!("the redirect's state does not match: refusing the code");
    }
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let tokens: StoredTokens = idgraph_crawler::auth::exchange_code(
        &http,
        &a.token_url,
        &a.client_id,
        &Secret::new(a.client_secret.clone()),
        &code,
        &redirect,
    )
    .await?;
    tokens.write(&a.token_file)?;
    println!(
        "Stored the tokens in {} (mode 0600). Point idgraph at them with an [oauth] section:\n\n[oauth]\nclient_id = \"{}\"\nclient_secret = \"…\"\ntoken_file = \"{}\"\ntoken_url = \"{}\"",
        a.token_file.display(),
        a.client_id,
        a.token_file.display(),
        a.token_url
    );
    Ok(())
}
