//! Certificates made at test time: a CA, a server certificate for `localhost` and 127.0.0.1, and
//! a client certificate, all as PEM files in a throwaway directory.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// PEM files of a throwaway PKI.
#[derive(Debug)]
pub struct TlsFiles {
    _dir: tempfile::TempDir,
    /// The CA certificate that signed the other two.
    pub ca: PathBuf,
    /// Server certificate (SANs `localhost`, `127.0.0.1`) and key.
    pub server_cert: PathBuf,
    /// Server private key.
    pub server_key: PathBuf,
    /// Client certificate and key (for mTLS).
    pub client_cert: PathBuf,
    /// Client private key.
    pub client_key: PathBuf,
}

fn write(dir: &Path, name: &str, pem: &str) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, pem)?;
    Ok(path)
}

impl TlsFiles {
    /// Makes a CA and two certificates it signs.
    pub fn generate() -> Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let server_key = KeyPair::generate()?;
        let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
            .signed_by(&server_key, &ca)?;
        let client_key = KeyPair::generate()?;
        let client = CertificateParams::new(vec!["tickmesh-test-client".to_owned()])?
            .signed_by(&client_key, &ca)?;

        Ok(Self {
            ca: write(dir.path(), "ca.pem", &ca.pem())?,
            server_cert: write(dir.path(), "server.pem", &server.pem())?,
            server_key: write(dir.path(), "server.key", &server_key.serialize_pem())?,
            client_cert: write(dir.path(), "client.pem", &client.pem())?,
            client_key: write(dir.path(), "client.key", &client_key.serialize_pem())?,
            _dir: dir,
        })
    }
}
