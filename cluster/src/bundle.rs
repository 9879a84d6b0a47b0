//! The TLS bundle a node needs for Redis: downloaded at start from one HTTPS URL carrying a
//! bearer token (`STARLING_REDIS_TLS_BUNDLE_URL`, never logged), or read from three files.
//! The bundle server's certificate is checked against the system's trust store, which honours
//! `SSL_CERT_FILE` and `SSL_CERT_DIR`, so a private CA can be added without code changes.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::redis::TlsFiles;

/// The bundle's files.
const FILES: [&str; 3] = ["ca.crt", "client.crt", "client.key"];
/// Largest bundle downloaded.
const MAX_BUNDLE: usize = 1 << 20;

/// Why there is no usable bundle. Never holds the URL or its token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The URL is not an HTTPS URL.
    #[error("the TLS bundle URL must be https://")]
    NotHttps,
    /// The bundle server could not be reached, or its certificate is not trusted.
    #[error("cannot fetch the TLS bundle: {0}")]
    Fetch(String),
    /// The bundle server answered with an error status (401: wrong or missing token).
    #[error("the TLS bundle server answered HTTP {0}")]
    Status(u16),
    /// The download is not a zip, or too large.
    #[error("the TLS bundle is not a readable zip: {0}")]
    Zip(String),
    /// A file the bundle must hold is missing.
    #[error("the TLS bundle has no {0}")]
    Missing(&'static str),
    /// A file is not the PEM it should be.
    #[error("{0} is not a PEM {1}")]
    Pem(&'static str, &'static str),
    /// The client key does not belong to the client certificate.
    #[error("client.key does not match client.crt")]
    KeyMismatch,
    /// A file given by path cannot be read.
    #[error("cannot read {0}: {1}")]
    Read(String, String),
}

/// Downloads and checks the bundle at `url` (`https://...?access_token=...`).
pub async fn download(url: &str) -> Result<TlsFiles, BundleError> {
    if !url.starts_with("https://") {
        return Err(BundleError::NotHttps);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| BundleError::Fetch(describe(e)))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| BundleError::Fetch(describe(e)))?;
    if !response.status().is_success() {
        return Err(BundleError::Status(response.status().as_u16()));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BUNDLE as u64)
    {
        return Err(BundleError::Zip("larger than 1 MiB".into()));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| BundleError::Fetch(describe(e)))?;
    if body.len() > MAX_BUNDLE {
        return Err(BundleError::Zip("larger than 1 MiB".into()));
    }
    from_zip(&body)
}

/// The error and its causes (a certificate not trusted shows there), without the URL: it
/// holds the token.
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Checks a bundle zip and takes its three files.
pub(crate) fn from_zip(data: &[u8]) -> Result<TlsFiles, BundleError> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(data))
        .map_err(|e| BundleError::Zip(e.to_string()))?;
    let mut files: [Vec<u8>; 3] = Default::default();
    for (name, slot) in FILES.iter().zip(files.iter_mut()) {
        let entry = zip.by_name(name).map_err(|_| BundleError::Missing(name))?;
        entry
            .take(MAX_BUNDLE as u64)
            .read_to_end(slot)
            .map_err(|e| BundleError::Zip(e.to_string()))?;
    }
    let [ca, client_cert, client_key] = files;
    check(TlsFiles {
        ca,
        client_cert,
        client_key,
    })
}

/// Reads the three files from paths (container secrets) and checks them.
pub fn from_paths(ca: &Path, cert: &Path, key: &Path) -> Result<TlsFiles, BundleError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| BundleError::Read(p.display().to_string(), e.to_string()))
    };
    check(TlsFiles {
        ca: read(ca)?,
        client_cert: read(cert)?,
        client_key: read(key)?,
    })
}

/// PEM everywhere, and the key belongs to the certificate.
fn check(files: TlsFiles) -> Result<TlsFiles, BundleError> {
    CertificateDer::pem_slice_iter(&files.ca)
        .next()
        .and_then(Result::ok)
        .ok_or(BundleError::Pem("ca.crt", "certificate"))?;
    match key_matches(&files.client_cert, &files.client_key) {
        Ok(()) => Ok(files),
        Err(PairError::Certificate) => Err(BundleError::Pem("client.crt", "certificate")),
        Err(PairError::Key) => Err(BundleError::Pem("client.key", "private key")),
        Err(PairError::Mismatch) => Err(BundleError::KeyMismatch),
    }
}

/// What is wrong with a certificate and key meant to go together.
pub(crate) enum PairError {
    /// No PEM certificate first in the chain.
    Certificate,
    /// No PEM private key rustls can sign with.
    Key,
    /// The key is not the certificate's.
    Mismatch,
}

/// Whether `key_pem` is the private key of the first certificate in `chain_pem`.
pub(crate) fn key_matches(chain_pem: &[u8], key_pem: &[u8]) -> Result<(), PairError> {
    let cert = CertificateDer::pem_slice_iter(chain_pem)
        .next()
        .and_then(Result::ok)
        .ok_or(PairError::Certificate)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| PairError::Key)?;
    let signing =
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|_| PairError::Key)?;
    rustls::sign::CertifiedKey::new(vec![cert], signing)
        .keys_match()
        .map_err(|_| PairError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn certs() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("starling-bundle-{}", std::process::id()));
        if !dir.join("bundle.zip").exists() {
            let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/redis-tls-certs");
            let ok = std::process::Command::new(script)
                .arg(&dir)
                .output()
                .expect("deploy script")
                .status
                .success();
            assert!(ok);
        }
        dir
    }

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in files {
            out.start_file(*name, zip::write::SimpleFileOptions::default())
                .expect("entry");
            out.write_all(data).expect("write");
        }
        out.finish().expect("zip").into_inner()
    }

    #[test]
    fn the_deploy_bundle_is_taken_and_bad_ones_say_what_is_wrong() {
        let dir = certs();
        let bundle = std::fs::read(dir.join("bundle.zip")).expect("bundle");
        assert!(from_zip(&bundle).is_ok());
        let read = |n: &str| std::fs::read(dir.join(n)).expect(n);
        let (ca, cert, key) = (read("ca.crt"), read("client.crt"), read("client.key"));

        let missing = zip_of(&[("ca.crt", &ca), ("client.crt", &cert)]);
        assert_eq!(
            from_zip(&missing).err().map(|e| e.to_string()),
            Some("the TLS bundle has no client.key".into())
        );
        // Another key (the server's) with the client certificate.
        let wrong_key = zip_of(&[
            ("ca.crt", &ca),
            ("client.crt", &cert),
            ("client.key", &read("redis.key")),
        ]);
        assert!(matches!(
            from_zip(&wrong_key),
            Err(BundleError::KeyMismatch)
        ));
        let not_pem = zip_of(&[
            ("ca.crt", b"hello"),
            ("client.crt", &cert),
            ("client.key", &key),
        ]);
        assert!(matches!(
            from_zip(&not_pem),
            Err(BundleError::Pem("ca.crt", _))
        ));
        assert!(matches!(from_zip(b"not a zip"), Err(BundleError::Zip(_))));
        assert!(from_paths(
            &dir.join("ca.crt"),
            &dir.join("client.crt"),
            &dir.join("client.key")
        )
        .is_ok());
        assert!(matches!(
            from_paths(
                &dir.join("nope.crt"),
                &dir.join("client.crt"),
                &dir.join("client.key")
            ),
            Err(BundleError::Read(..))
        ));
    }
}
