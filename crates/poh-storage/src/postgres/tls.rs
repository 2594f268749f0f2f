//! TLS to the server (rustls): used when the URL says `sslmode=require` (or `prefer`,
//! `verify-ca`, `verify-full`), always verifying the server's certificate and name —
//! against the CA file of `sslrootcert=` in the URL or `PGSSLROOTCERT`, else the system's
//! trusted roots. Without `sslmode` the connection is plain.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What the URL said about TLS, beyond what tokio-postgres parses itself.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct TlsOpts {
    /// The URL names an `sslmode`.
    pub(crate) mode_given: bool,
    /// CA certificates to trust instead of the system's (`sslrootcert`).
    pub(crate) root_cert: Option<PathBuf>,
}

/// Splits the libpq parameters tokio-postgres does not know off `url`: `sslrootcert`,
/// and the `verify-ca` / `verify-full` modes (verification always happens here, so they
/// mean `require`).
pub(crate) fn split_url(url: &str) -> Result<(String, TlsOpts), String> {
    let mut opts = TlsOpts::default();
    let Some((head, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), opts));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sslrootcert" => opts.root_cert = Some(PathBuf::from(percent_decode(v)?)),
            "sslmode" => {
                opts.mode_given = true;
                match v {
                    "verify-ca" | "verify-full" => kept.push("sslmode=require".to_owned()),
                    _ => kept.push(pair.to_owned()),
                }
            }
            _ => kept.push(pair.to_owned()),
        }
    }
    if opts.root_cert.is_none() {
        opts.root_cert = std::env::var_os("PGSSLROOTCERT").map(PathBuf::from);
    }
    let url = if kept.is_empty() {
        head.to_owned()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    Ok((url, opts))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad %-escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// The TLS connector for every connection of a pool.
pub(crate) fn connector(opts: &TlsOpts) -> Result<MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &opts.root_cert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "sslrootcert {} holds no certificate",
                    path.display()
                ));
            }
        }
        None if opts.mode_given => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system root rustls cannot parse is skipped, as browsers do.
                let _ = roots.add(cert);
            }
        }
        None => {}
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_parameters_tokio_postgres_does_not_know_are_taken_off() {
        let (url, o) = split_url(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@h/db?sslmode=require&application_name=x");
        assert!(o.mode_given);
        assert_eq!(o.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        let (url, o) = split_url("postgres://u@h/db").unwrap();
        assert_eq!(url, "postgres://u@h/db");
        assert!(!o.mode_given);
        assert!(split_url("postgres://u@h/db?sslrootcert=%zz").is_err());
    }
}
