//! `bongsu certs`: a development CA and the credentials of a cluster's processes.
//!
//! `bongsu certs --dir certs node-1 node-2 node-3 gateway operator` creates the CA in
//! `certs/ca` (once; its key never leaves that directory) and writes one directory per name
//! (`certs/node-1`, …) with `ca.pem`, `cert.pem` and `key.pem`, ready for a node's
//! `--tls-dir`, a gateway's, or an operator's tools. Issuing a name again replaces its
//! certificate and key in place, which running processes pick up for their next connection:
//! that is a rotation. A production cluster issues the same files from its own CA.

use std::path::PathBuf;

use anyhow::{bail, Context};
use bongsu_proto::tls::{DevCa, Role};

#[derive(clap::Args)]
pub struct CertsArgs {
    /// Where the CA (`<dir>/ca`) and the issued directories live.
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// Also trust these CA certificates (PEM files), for a CA rotation: processes trust the
    /// old and the new CA until every certificate comes from the new one.
    #[arg(long)]
    pub also_trust: Vec<PathBuf>,
    /// What to issue: `node-<id>`, `gateway` or `operator`.
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub fn parse_role(name: &str) -> anyhow::Result<Role> {
    match Role::from_label(name) {
        Some(role) => Ok(role),
        None => bail!("{name:?}: expected node-<id> (id > 0), gateway or operator"),
    }
}

pub fn run(a: CertsArgs) -> anyhow::Result<()> {
    let roles = a
        .names
        .iter()
        .map(|n| parse_role(n).map(|r| (n, r)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ca = DevCa::open_or_create(&a.dir.join("ca"), "bongsu")
        .with_context(|| format!("open or create the CA in {}", a.dir.join("ca").display()))?;
    let extra = a
        .also_trust
        .iter()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("read {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    for (name, role) in roles {
        let dir = a.dir.join(name);
        ca.issue(role, &dir, &[], &extra)
            .with_context(|| format!("issue {name}"))?;
        println!("{}: {role}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_roles() {
        assert_eq!(parse_role("node-3").unwrap(), Role::Node(3));
        assert_eq!(parse_role("gateway").unwrap(), Role::Gateway);
        assert_eq!(parse_role("operator").unwrap(), Role::Operator);
        for bad in ["node-0", "node-x", "node", "admin", ""] {
            assert!(parse_role(bad).is_err(), "{bad}");
        }
    }
}
