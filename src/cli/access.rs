//! `idgraph token create|list|revoke` (service tokens, in the data directory or through a running
//! server) and `idgraph access-log verify`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use idgraph_access::tokens::{self, TokenRecord};
use idgraph_access::Role;

use super::common::{base_dir, print_out, remote_query};
use super::{ServerOrStore as Target, StoreArgs};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a named service token and print it (alone on stdout: the only time it is shown).
    Create(CreateArgs),
    /// List the service tokens: name, role, org, created, expires (never the tokens).
    List(Target),
    /// Revoke a service token: a running server refuses it within a second.
    Revoke(RevokeArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// The token's name (letters, digits, '.', '_', '-', '@'): what the access log calls it.
    pub name: String,
    /// viewer, auditor or admin.
    #[arg(long)]
    pub role: Role,
    /// The token expires after this long (90d, 12h, 2w); without it, never.
    #[arg(long)]
    pub expires: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args)]
pub struct RevokeArgs {
    pub name: String,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Subcommand)]
pub enum AccessLogCommand {
    /// Check the access log's hash chain: exit 0 when it holds, non-zero naming the first entry
    /// that does not.
    Verify(StoreArgs),
}

pub async fn token(c: TokenCommand) -> Result<()> {
    match c {
        TokenCommand::Create(a) => {
            let expires = a.expires.as_deref().map(tokens::expiry).transpose()?;
            let token = match &a.target.server {
                Some(server) => {
                    let q = "mutation($name: String!, $role: AccessRole!, $org: String, $expires: String) { createServiceToken(name: $name, role: $role, org: $org, expires: $expires) { token } }";
                    let vars = serde_json::json!({
                        "name": a.name, "role": a.role.name().to_uppercase(), "org": a.target.store.org, "expires": a.expires,
                    });
                    let d = remote_query(server, a.target.token.as_deref(), q, vars).await?;
                    d["createServiceToken"]["token"].as_str().context("the server answered no token")?.to_string()
                }
                None => {
                    let dir = base_dir(&a.target.store)?;
                    tokens::create(&dir, &a.name, a.role, a.target.store.org.as_deref(), expires)?
                }
            };
            eprintln!(
                "Created service token {:?} ({}{}{}). It is shown once, below: store it now.",
                a.name,
                a.role,
                a.target.store.org.as_deref().map(|o| format!(" in org {o}")).unwrap_or_default(),
                expires.map(|e| format!(", expires {}", e.to_rfc3339())).unwrap_or_default()
            );
            print_out(&format!("{token}\n"))
        }
        TokenCommand::List(t) => {
            let list: Vec<TokenRecord> = match &t.server {
                Some(server) => {
                    let q = "{ serviceTokens { name role org createdAt expiresAt } }";
                    let d = remote_query(server, t.token.as_deref(), q, serde_json::json!({})).await?;
                    d["serviceTokens"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| {
                            Some(TokenRecord {
                                name: v["name"].as_str()?.into(),
                                role: v["role"].as_str()?.parse().ok()?,
                                org: v["org"].as_str().map(str::to_string),
                                sha256: String::new(),
                                created_at: v["createdAt"].as_str()?.parse().ok()?,
                                expires_at: v["expiresAt"].as_str().and_then(|s| s.parse().ok()),
                            })
                        })
                        .collect()
                }
                None => tokens::list(&base_dir(&t.store)?)?,
            };
            let mut out = String::from("NAME\tROLE\tORG\tCREATED\tEXPIRES\n");
            let now = chrono::Utc::now();
            for r in &list {
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}\t{}\n",
                    r.name,
                    r.role,
                    r.org.as_deref().unwrap_or("*"),
                    r.created_at.format("%Y-%m-%d %H:%M"),
                    match r.expires_at {
                        Some(e) if e <= now => format!("{} (expired)", e.format("%Y-%m-%d %H:%M")),
                        Some(e) => e.format("%Y-%m-%d %H:%M").to_string(),
                        None => "never".into(),
                    }
                ));
            }
            print_out(&out)
        }
        TokenCommand::Revoke(a) => {
            match &a.target.server {
                Some(server) => {
                    let q = "mutation($name: String!) { revokeServiceToken(name: $name) }";
                    remote_query(server, a.target.token.as_deref(), q, serde_json::json!({"name": a.name})).await?;
                }
                None => {
                    tokens::revoke(&base_dir(&a.target.store)?, &a.name)?;
                }
            }
            eprintln!("Revoked service token {:?}: a running server refuses it within a second.", a.name);
            Ok(())
        }
    }
}

pub async fn access_log(c: AccessLogCommand) -> Result<()> {
    match c {
        AccessLogCommand::Verify(store) => {
            let dir = base_dir(&store)?.join(crate::app::access::ACCESS_DIR);
            if !dir.exists() {
                anyhow::bail!("{} holds no access log", dir.display());
            }
            match idgraph_access::log::verify(&dir)? {
                Ok(v) => print_out(&format!(
                    "The access log holds: entries {} to {} ({} checked), head {}.\n",
                    v.first, v.last, v.entries, v.head
                )),
                Err(broken) => anyhow::bail!("the access log does not hold: {broken}"),
            }
        }
    }
}
