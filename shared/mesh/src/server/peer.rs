//! Who a call comes from, for the limits that are per caller: the API key's holder, or the
//! client's connection when the call has no key (auth off: every call is then the same
//! anonymous caller, and a process with auth off listens on loopback only, so its callers
//! are local programs, each with its own connections).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::auth::Caller;

/// The IP address of the client that sent `request`, if the transport says.
pub fn peer_ip<B>(request: &http::Request<B>) -> Option<IpAddr> {
    peer_addr(request).map(|addr| addr.ip())
}

/// The address (IP and port: the connection) of the client that sent `request`.
pub fn peer_addr<B>(request: &http::Request<B>) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|tls| tls.get_ref().remote_addr())
        })
}

/// Whom the per-caller limits count a call under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallerKey {
    /// The holder of the API key the call presented.
    Key(Arc<str>),
    /// The client's connection, for a call without a key (auth off, or an open service).
    Connection(SocketAddr),
    /// The client's IP address (for limits on calls that need no key).
    Address(IpAddr),
    /// Neither is known (a transport that gives no address).
    Unknown,
}

impl std::fmt::Display for CallerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallerKey::Key(name) => f.write_str(name),
            CallerKey::Connection(addr) => write!(f, "on connection {addr}"),
            CallerKey::Address(ip) => write!(f, "at {ip}"),
            CallerKey::Unknown => f.write_str("anonymous"),
        }
    }
}

/// The key holder's name, or the client's connection for an anonymous call. Allocates
/// nothing.
pub fn caller_key<B>(request: &http::Request<B>) -> CallerKey {
    match request.extensions().get::<Caller>() {
        Some(caller) if !caller.is_anonymous() => CallerKey::Key(caller.name.clone()),
        _ => peer_addr(request).map_or(CallerKey::Unknown, CallerKey::Connection),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holder_is_counted_by_name_and_an_anonymous_caller_by_address() {
        let mut request = http::Request::new(());
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some("198.18.0.7:4000".parse().unwrap()),
        });
        let connection = CallerKey::Connection("198.18.0.7:4000".parse().unwrap());
        assert_eq!(caller_key(&request), connection);
        request.extensions_mut().insert(Caller::anonymous());
        assert_eq!(caller_key(&request), connection);
        request.extensions_mut().insert(Caller {
            name: Arc::from("desk-7"),
            scope: tickmesh_proto::v1::Scope::Read,
        });
        assert_eq!(caller_key(&request), CallerKey::Key(Arc::from("desk-7")));
        assert_eq!(caller_key(&http::Request::new(())), CallerKey::Unknown);
        assert_eq!(connection.to_string(), "on connection 198.18.0.7:4000");
        assert_eq!(peer_ip(&request), Some("198.18.0.7".parse().unwrap()));
    }
}
