//! Who a certificate says its holder is.

use tokio_rustls::rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The DNS domain under which certificates name their holder's role.
pub const DOMAIN: &str = "bongsu.internal";

/// What a process of the cluster is, as its certificate names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Node `id`: may send Raft traffic as that node and use the admin calls nodes make on
    /// each other.
    Node(u64),
    /// A gateway: may use the internal API that serves users, nothing else.
    Gateway,
    /// An operator's tool: may use the operator's admin calls, never write messages.
    Operator,
}

impl Role {
    /// The DNS names a certificate for this role carries. A node's also carries `node`, the
    /// name a client checks when it dials a node whose id it does not know yet (a seed).
    pub fn names(&self) -> Vec<String> {
        match self {
            Role::Node(_) => vec![format!("{}.{DOMAIN}", self.label()), Role::any_node()],
            Role::Gateway | Role::Operator => vec![format!("{}.{DOMAIN}", self.label())],
        }
    }

    /// The name a client checks a server of this role against.
    pub fn server_name(&self) -> String {
        self.names().swap_remove(0)
    }

    /// The role's label: `node-<id>`, `gateway` or `operator`, as its DNS name starts, and as
    /// tools name credential directories.
    pub fn label(&self) -> String {
        match self {
            Role::Node(id) => format!("node-{id}"),
            Role::Gateway => "gateway".into(),
            Role::Operator => "operator".into(),
        }
    }

    /// The role a label names (`node-<id>` with a positive id, `gateway`, `operator`).
    pub fn from_label(label: &str) -> Option<Role> {
        match label {
            "gateway" => Some(Role::Gateway),
            "operator" => Some(Role::Operator),
            other => match other.strip_prefix("node-").map(str::parse::<u64>) {
                Some(Ok(id)) if id > 0 => Some(Role::Node(id)),
                _ => None,
            },
        }
    }

    /// The name every node's certificate carries.
    pub fn any_node() -> String {
        format!("node.{DOMAIN}")
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Node(id) => write!(f, "node {id}"),
            Role::Gateway => f.write_str("gateway"),
            Role::Operator => f.write_str("operator"),
        }
    }
}

/// The role an end-entity certificate names. Exactly one role: a certificate naming two
/// (say node 3 and a gateway) is refused, so no holder can pick the role it acts in.
pub fn role_of(cert: &CertificateDer<'_>) -> Result<Role, String> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("unparseable certificate: {e}"))?;
    let san = x509
        .subject_alternative_name()
        .map_err(|e| format!("bad subject alternative names: {e}"))?
        .ok_or_else(|| "certificate has no subject alternative names".to_string())?;
    let mut role: Option<Role> = None;
    let suffix = format!(".{DOMAIN}");
    for name in &san.value.general_names {
        let GeneralName::DNSName(dns) = name else {
            continue;
        };
        let Some(label) = dns.strip_suffix(suffix.as_str()) else {
            continue;
        };
        let Some(found) = Role::from_label(label) else {
            continue;
        };
        match role {
            Some(r) if r != found => {
                return Err(format!("certificate names two roles: {r} and {found}"));
            }
            _ => role = Some(found),
        }
    }
    role.ok_or_else(|| format!("certificate names no bongsu role under {DOMAIN}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn each_role_round_trips_through_its_names() {
        for role in [Role::Node(7), Role::Gateway, Role::Operator] {
            let names = role.names();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            assert_eq!(role_of(&cert(&names)), Ok(role));
        }
    }

    #[test]
    fn no_role_or_two_roles_is_refused() {
        assert!(role_of(&cert(&["example.com"])).is_err());
        assert!(role_of(&cert(&["node.bongsu.internal"])).is_err());
        assert!(role_of(&cert(&["node-0.bongsu.internal"])).is_err());
        assert!(role_of(&cert(&["node-x.bongsu.internal"])).is_err());
        let two = role_of(&cert(&[
            "node-1.bongsu.internal",
            "gateway.bongsu.internal",
        ]));
        assert!(two.unwrap_err().contains("two roles"));
        let nodes = role_of(&cert(&["node-1.bongsu.internal", "node-2.bongsu.internal"]));
        assert!(nodes.is_err());
        assert!(role_of(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).is_err());
    }
}
