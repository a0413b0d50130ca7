//! TLS for the Kafka listeners: rustls server configurations (with the ring provider the
//! rest of the process uses) from PEM files, and the principal of a client certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use super::config::{ClientAuth, ConfigError, TlsFiles};

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| ConfigError(format!("{what} {}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// The rustls configuration of a TLS listener.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certs(&files.certificate, "certificate file")?;
    let key_path = files.key.as_deref().unwrap_or(&files.certificate);
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        ConfigError(format!(
            "private key {}: {e} (a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)",
            key_path.display()
        ))
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("TLS: {e}")))?;
    let verifier = match (files.client_auth, &files.client_cas) {
        (ClientAuth::None, _) | (_, None) => WebPkiClientVerifier::no_client_auth(),
        (auth, Some(cas)) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(cas, "CA file")? {
                roots
                    .add(c)
                    .map_err(|e| ConfigError(format!("CA file {}: {e}", cas.display())))?;
            }
            let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let b = if auth == ClientAuth::Requested {
                b.allow_unauthenticated()
            } else {
                b
            };
            b.build()
                .map_err(|e| ConfigError(format!("client certificate verifier: {e}")))?
        }
    };
    let config = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            ConfigError(format!(
                "certificate {} and its key: {e}",
                files.certificate.display()
            ))
        })?;
    Ok(Arc::new(config))
}

/// The principal of a client certificate with Kafka's default mapping: `User:` and the
/// subject as Java's `X500Principal.getName()` writes it (RFC 2253: the last RDN first,
/// `,` between RDNs, `+` inside one, known attribute names, special characters escaped).
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let mut rdns = Vec::new();
    for rdn in parsed.subject().iter() {
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let name = match oid.as_str() {
                "2.5.4.3" => "CN".to_string(),
                "2.5.4.6" => "C".to_string(),
                "2.5.4.7" => "L".to_string(),
                "2.5.4.8" => "ST".to_string(),
                "2.5.4.9" => "STREET".to_string(),
                "2.5.4.10" => "O".to_string(),
                "2.5.4.11" => "OU".to_string(),
                "0.9.2342.19200300.100.1.25" => "DC".to_string(),
                "0.9.2342.19200300.100.1.1" => "UID".to_string(),
                _ => oid,
            };
            let value = match atv.as_str() {
                Ok(s) => escape(s),
                Err(_) => format!(
                    "#{}",
                    atv.attr_value()
                        .as_bytes()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                ),
            };
            parts.push(format!("{name}={value}"));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some(format!("User:{}", rdns.join(",")))
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_from_certificate_subjects() {
        let mut params = rcgen::CertificateParams::new(vec!["client".into()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "US");
        dn.push(rcgen::DnType::OrganizationName, "Acme, Inc");
        dn.push(rcgen::DnType::CommonName, "alice");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            principal_of(cert.der()).as_deref(),
            Some("User:CN=alice,O=Acme\\, Inc,C=US")
        );
    }
}
