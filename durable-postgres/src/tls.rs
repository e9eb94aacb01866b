//! TLS for servers whose URL asks for it (`sslmode=require`): rustls, with
//! the certificate chain and the host name always verified (as libpq's
//! `verify-full`), against Mozilla's roots or the PEM file named by
//! [`PostgresOptions::tls_root_certificates`](crate::PostgresOptions::tls_root_certificates)
//! or the URL's `sslrootcert`.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Splits the durable-only parameter `sslrootcert=<file>` off a URL (the
/// driver refuses parameters it does not know), returning the URL without
/// it and the file.
pub(crate) fn split_root_file(url: &str) -> (String, Option<PathBuf>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut file = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| match p.strip_prefix("sslrootcert=") {
            Some(f) => {
                file = Some(PathBuf::from(percent_decoded(f)));
                false
            }
            None => true,
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, file)
}

/// `%XX` escapes decoded (a path in a URL may have them for `/`, `&`, ` `).
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The connector: trusting the certificates of `roots` (a PEM file) if
/// given, else Mozilla's roots.
pub(crate) fn connector(roots: Option<&Path>) -> Result<MakeRustlsConnect, String> {
    let mut store = rustls::RootCertStore::empty();
    match roots {
        Some(file) => {
            let pem = std::fs::read(file).map_err(|e| {
                format!(
                    "cannot read the TLS root certificates {}: {e}",
                    file.display()
                )
            })?;
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    format!(
                        "the TLS root certificates {} are not valid PEM: {e}",
                        file.display()
                    )
                })?;
                store.add(cert).map_err(|e| {
                    format!("a certificate in {} cannot be trusted: {e}", file.display())
                })?;
                found += 1;
            }
            if found == 0 {
                return Err(format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    file.display()
                ));
            }
        }
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("setting up TLS: {e}"))?
    .with_root_certificates(store)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslrootcert_is_taken_out_of_the_url() {
        assert_eq!(
            split_root_file("postgres://h/db"),
            ("postgres://h/db".into(), None)
        );
        assert_eq!(
            split_root_file("postgres://h/db?sslmode=require&sslrootcert=%2Fetc%2Fca.pem"),
            (
                "postgres://h/db?sslmode=require".into(),
                Some(PathBuf::from("/etc/ca.pem"))
            )
        );
        assert_eq!(
            split_root_file("postgres://h/db?sslrootcert=ca.pem"),
            ("postgres://h/db".into(), Some(PathBuf::from("ca.pem")))
        );
        assert_eq!(percent_decoded("a%20b%2"), "a b%2");
    }

    #[test]
    fn bad_root_files_are_explained() {
        let e = connector(Some(Path::new("/nonexistent/ca.pem")))
            .err()
            .unwrap();
        assert!(e.contains("cannot read the TLS root certificates"), "{e}");
        let f = std::env::temp_dir().join(format!("durable-not-pem-{}", std::process::id()));
        std::fs::write(&f, "not a certificate").unwrap();
        let e = connector(Some(&f)).err().unwrap();
        std::fs::remove_file(&f).unwrap();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        assert!(connector(None).is_ok());
    }
}
