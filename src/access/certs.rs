//! The names of a client certificate (`CN=...`, `DNS=...`, `URI=...`), read once per
//! connection.
//!
//! Every request on a TLS connection carries the same shared list of peer certificates (one
//! `Arc` per connection). Parsing the certificate on every call would cost each call a parse
//! and its allocations; instead the names are kept by the address of that list, for as long
//! as the connection holds it, in a map that calls read without a lock.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use rustls_pki_types::CertificateDer;

/// The peer certificates of one connection, as TLS hands them over.
pub type PeerCerts = Arc<Vec<CertificateDer<'static>>>;

/// Certificate names by connection.
#[derive(Default)]
pub struct CertNames {
    by_connection: ArcSwap<HashMap<usize, Entry>>,
}

struct Entry {
    /// Alive while the connection is: then no other list can have its address.
    certs: Weak<Vec<CertificateDer<'static>>>,
    names: Arc<[String]>,
}

impl std::fmt::Debug for CertNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertNames")
            .field("connections", &self.by_connection.load().len())
            .finish()
    }
}

impl CertNames {
    /// The names of the connection's client certificate (empty: none, or unreadable).
    pub fn of(&self, certs: &PeerCerts) -> Arc<[String]> {
        let key = Arc::as_ptr(certs) as usize;
        if let Some(e) = self.by_connection.load().get(&key) {
            if e.certs.strong_count() > 0 {
                return e.names.clone();
            }
        }
        let names: Arc<[String]> = certs.first().map_or_else(Vec::new, |c| names(c)).into();
        // a new connection: copy the map with it added, and without closed connections
        self.by_connection.rcu(|map| {
            let mut map: HashMap<usize, Entry> = map
                .iter()
                .filter(|(_, e)| e.certs.strong_count() > 0)
                .map(|(k, e)| {
                    (
                        *k,
                        Entry {
                            certs: e.certs.clone(),
                            names: e.names.clone(),
                        },
                    )
                })
                .collect();
            map.insert(
                key,
                Entry {
                    certs: Arc::downgrade(certs),
                    names: names.clone(),
                },
            );
            map
        });
        names
    }
}

/// The subject's common names and the DNS and URI alternative names of a certificate.
fn names(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let mut out: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(|cn| format!("CN={cn}"))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => out.push(format!("DNS={d}")),
                GeneralName::URI(u) => out.push(format!("URI={u}")),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: &[&str]) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn a_connections_names_are_read_once_and_forgotten_with_it() {
        let cache = CertNames::default();
        let conn: PeerCerts = Arc::new(vec![cert("a-worker-1", &["worker.team-a.svc"])]);
        let names = cache.of(&conn);
        assert_eq!(&*names, ["CN=a-worker-1", "DNS=worker.team-a.svc"]);
        // the same connection again: the same names, not parsed again
        assert!(Arc::ptr_eq(&names, &cache.of(&conn.clone())));
        // another connection; the first one's entry goes once it is closed
        let other: PeerCerts = Arc::new(vec![cert("b", &[])]);
        drop(conn);
        assert_eq!(&*cache.of(&other), ["CN=b"]);
        assert_eq!(cache.by_connection.load().len(), 1);
    }
}
