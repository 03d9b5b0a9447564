//! `idgraph gateway-config`: the routing of an existing reverse proxy (nginx) in front of
//! several `serve` processes, each holding some orgs. Each request goes to the process that
//! holds its org, by its path (`/orgs/NAME/...`) or its `X-Idgraph-Org` header; a request that
//! names no org goes to the first process. No routing code of idgraph's runs between client and
//! processes: adding a process is a configuration file more and a reload of the proxy.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::app::settings::{Env, Flags, Settings};

#[derive(Args)]
pub struct GatewayArgs {
    /// Each process's configuration file (its `listen` and its `[[org]]`s), in order: the first
    /// also takes requests that name no org.
    #[arg(required = true)]
    pub configs: Vec<PathBuf>,
    /// Where the proxy listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
}

/// One process: where it listens and the orgs it holds.
struct Process {
    listen: String,
    orgs: Vec<String>,
}

pub fn gateway_config(a: GatewayArgs) -> Result<()> {
    let env = Env::from_process().without_org_keys();
    let mut procs = Vec::new();
    for path in &a.configs {
        let flags = Flags { config: Some(path.clone()), ..Flags::default() };
        let base = Settings::load(&flags, &env).with_context(|| format!("{}", path.display()))?;
        let orgs = if base.orgs.is_empty() {
            anyhow::bail!("{} names no orgs ([[org]] sections): the proxy routes by org", path.display());
        } else {
            base.orgs.clone()
        };
        procs.push(Process { listen: base.server.listen.clone(), orgs });
    }
    let mut seen = std::collections::BTreeMap::new();
    for (i, p) in procs.iter().enumerate() {
        for o in &p.orgs {
            if let Some(j) = seen.insert(o.clone(), i) {
                anyhow::bail!(
                    "org {o} is in two configurations ({} and {})",
                    a.configs[j].display(),
                    a.configs[i].display()
                );
            }
        }
    }
    super::common::print_out(&nginx(&procs, &a.listen))
}

/// A whole nginx configuration, to run as `nginx -p DIR -c FILE` (paths relative to `DIR`).
fn nginx(procs: &[Process], listen: &str) -> String {
    let mut t = String::from(
        "# Written by `idgraph gateway-config`: each org to the idgraph process that holds it.\n\
         # Run: nginx -p DIR -c THIS_FILE (DIR holds the pid file and the temporary files).\n\
         worker_processes 1;\npid nginx.pid;\nerror_log stderr warn;\n\
         events { worker_connections 4096; }\n\nhttp {\n    access_log off;\n\
         \x20   client_body_temp_path body_temp;\n    proxy_temp_path proxy_temp;\n\
         \x20   fastcgi_temp_path fastcgi_temp;\n    uwsgi_temp_path uwsgi_temp;\n    scgi_temp_path scgi_temp;\n\n",
    );
    for (i, p) in procs.iter().enumerate() {
        t += &format!(
            "    # {}\n    upstream idgraph_{i} {{ server {}; keepalive 64; }}\n",
            p.orgs.join(", "),
            p.listen
        );
    }
    // The org's name is taken from the path, else the header; the last map is an exact-key hash
    // (no regular expression per org), so 10,000 orgs cost a request one hash lookup.
    t += "\n    # The org a request names by its path, then by its header; none: the first process.\n";
    t += "    map_hash_max_size 262144;\n    map_hash_bucket_size 128;\n";
    t += "    map $uri $idgraph_path_org {\n        default \"\";\n        ~^/orgs/(?<o>[^/]+) $o;\n    }\n";
    t += "    map \"$idgraph_path_org:$http_x_idgraph_org\" $idgraph_org {\n";
    t += "        ~^(?<p>[^:]+): $p;\n        ~^:(?<h>.*)$ $h;\n    }\n";
    t += "    map $idgraph_org $idgraph_upstream {\n        default idgraph_0;\n";
    for (i, p) in procs.iter().enumerate() {
        for o in &p.orgs {
            t += &format!("        {o} idgraph_{i};\n");
        }
    }
    t += "    }\n\n";
    t += &format!(
        "    server {{\n        listen {listen};\n        client_max_body_size 16m;\n        location / {{\n\
         \x20           proxy_pass http://$idgraph_upstream;\n            proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n            proxy_set_header Host $host;\n\
         \x20           proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         \x20           proxy_set_header X-Forwarded-Proto $scheme;\n\
         \x20           # Exports stream: hand them on as they come.\n            proxy_buffering off;\n\
         \x20           proxy_read_timeout 1800s;\n        }}\n    }}\n}}\n"
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_org_routes_to_its_process() {
        let procs = [
            Process { listen: "127.0.0.1:8081".into(), orgs: vec!["acme".into(), "beta".into()] },
            Process { listen: "127.0.0.1:8082".into(), orgs: vec!["gamma".into()] },
        ];
        let t = nginx(&procs, "127.0.0.1:8080");
        assert!(t.contains("upstream idgraph_1 { server 127.0.0.1:8082; keepalive 64; }"));
        assert!(t.contains("        gamma idgraph_1;"));
        assert!(t.contains("        beta idgraph_0;"));
        assert!(t.contains("listen 127.0.0.1:8080;"));
    }
}
