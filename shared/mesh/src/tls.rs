//! TLS from the `tls` settings, for both stacks: the server's identity (and client CA for mTLS),
//! and the client's trust root (and identity for mTLS). Plaintext when the files are not set.

use tickmesh_proto::v1::TlsConfig;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::ServeError;

/// Reads a PEM file named by a `tls.*` setting.
fn read_pem(setting: &str, path: &str) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|e| ServeError::Tls(format!("{setting} {path}: {e}")))
}

/// The server side of `tls`: `None` (plaintext) unless `cert_file` and `key_file` are set;
/// client certificates are required when `client_ca_file` is set (mTLS).
pub fn server_config(tls: &TlsConfig) -> Result<Option<ServerTlsConfig>, ServeError> {
    match (tls.cert_file.is_empty(), tls.key_file.is_empty()) {
        (true, true) => return Ok(None),
        (false, false) => {}
        _ => {
            return Err(ServeError::Tls(
                "tls.cert_file and tls.key_file go together".into(),
            ));
        }
    }
    let identity = Identity::from_pem(
        read_pem("tls.cert_file", &tls.cert_file)?,
        read_pem("tls.key_file", &tls.key_file)?,
    );
    let mut config = ServerTlsConfig::new().identity(identity);
    if !tls.client_ca_file.is_empty() {
        config = config.client_ca_root(Certificate::from_pem(read_pem(
            "tls.client_ca_file",
            &tls.client_ca_file,
        )?));
    }
    Ok(Some(config))
}

/// The client side of `tls`: `None` (plaintext) unless `ca_file` is set; the peer's certificate
/// must name `server_name` (default: `tls.server_name`, else `localhost`); this process's
/// certificate goes along when `cert_file` and `key_file` are set (mTLS).
pub fn client_config(
    tls: &TlsConfig,
    server_name: Option<&str>,
) -> Result<Option<ClientTlsConfig>, ServeError> {
    if tls.ca_file.is_empty() {
        return Ok(None);
    }
    let name = server_name
        .map(str::to_owned)
        .or_else(|| (!tls.server_name.is_empty()).then(|| tls.server_name.clone()))
        .unwrap_or_else(|| "localhost".to_owned());
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read_pem(
            "tls.ca_file",
            &tls.ca_file,
        )?))
        .domain_name(name);
    if !tls.cert_file.is_empty() && !tls.key_file.is_empty() {
        config = config.identity(Identity::from_pem(
            read_pem("tls.cert_file", &tls.cert_file)?,
            read_pem("tls.key_file", &tls.key_file)?,
        ));
    }
    Ok(Some(config))
}
