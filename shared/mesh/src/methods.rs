//! What the contracts say about each RPC, read once from the descriptors: the scope an API key
//! needs (the `tickmesh.v1.required_scope` method option), whether the call is unary, and
//! whether it may be retried (the standard `idempotency_level` option).
//!
//! Each request is classified once: [`ClassifyLayer`], the outermost layer of both stacks, looks
//! the path up and puts the request's [`Entry`] into its extensions; the layers behind it read
//! the entry ([`Entry::of`]) instead of looking the method up again.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, Value};

use crate::layer::{Layered, OnCall};
use tickmesh_proto::v1::Scope;

/// One RPC as the contract declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    /// Scope an API key needs; `None` for calls open to everyone (health, reflection).
    pub scope: Option<Scope>,
    /// Neither side streams.
    pub unary: bool,
    /// The server streams its answer (a live subscription, a watch, a replay's progress).
    pub server_streaming: bool,
    /// `NO_SIDE_EFFECTS` or `IDEMPOTENT`: a failed attempt may be sent again.
    pub idempotent: bool,
}

/// Every RPC served by tickmesh, by request path (`/tickmesh.v1.QueryService/GetCandles`).
#[derive(Debug)]
pub struct MethodTable {
    methods: HashMap<String, Method>,
}

/// Services that answer without an API key: probes and tooling must work before any key exists.
const OPEN_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

impl MethodTable {
    /// The table of the tickmesh contracts (built on first use).
    pub fn global() -> &'static MethodTable {
        static TABLE: OnceLock<MethodTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            Self::from_descriptors(tickmesh_proto::FILE_DESCRIPTOR_SET)
                .unwrap_or_else(|e| panic!("the compiled-in descriptors are invalid: {e}"))
        })
    }

    /// Reads the methods of every service in an encoded `FileDescriptorSet`.
    pub fn from_descriptors(bytes: &[u8]) -> Result<Self, prost_reflect::DescriptorError> {
        let pool = DescriptorPool::decode(bytes)?;
        let scope_option = pool.get_extension_by_name("tickmesh.v1.required_scope");
        let mut methods = HashMap::new();
        for service in pool.services() {
            for method in service.methods() {
                let options = method.options();
                let scope = scope_option
                    .as_ref()
                    .filter(|option| options.has_extension(option))
                    .and_then(|option| match options.get_extension(option).as_ref() {
                        Value::EnumNumber(n) => Scope::try_from(*n).ok(),
                        _ => None,
                    });
                let idempotent = matches!(
                    options.get_field_by_name("idempotency_level").as_deref(),
                    // NO_SIDE_EFFECTS = 1, IDEMPOTENT = 2.
                    Some(Value::EnumNumber(1 | 2))
                );
                methods.insert(
                    format!("/{}/{}", service.full_name(), method.name()),
                    Method {
                        scope,
                        unary: !method.is_client_streaming() && !method.is_server_streaming(),
                        server_streaming: method.is_server_streaming(),
                        idempotent,
                    },
                );
            }
        }
        Ok(Self { methods })
    }

    /// The method a request path names, if the contracts know it.
    pub fn get(&self, path: &str) -> Option<&Method> {
        self.methods.get(path)
    }

    /// Whether the path belongs to a service open to callers without a key.
    pub fn is_open(path: &str) -> bool {
        let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
        OPEN_SERVICES.contains(&service)
    }

    /// Every known path with its method, for tests and documentation.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Method)> {
        self.methods
            .iter()
            .map(|(path, method)| (path.as_str(), method))
    }
}

/// The lowercase name of a scope, as keys files and messages spell it.
pub fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Unspecified => "none",
        Scope::Read => "read",
        Scope::Write => "write",
        Scope::Admin => "admin",
    }
}

/// A request as classified by [`ClassifyLayer`]: its method's entry in the contracts and
/// whether it belongs to one of the services open without a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The method as the contracts declare it; `None` for a path they do not know (health,
    /// reflection, or a typo the router answers with UNIMPLEMENTED).
    pub method: Option<Method>,
    /// `grpc.health.v1.Health`: never shed (a busy pod is not a dead one).
    pub health: bool,
    /// Health or reflection: answered without a key, not rate-limited, not traced.
    pub open: bool,
}

impl Entry {
    /// Looks `path` up in the tickmesh contracts.
    pub fn classify(path: &str) -> Self {
        Self {
            method: MethodTable::global().get(path).copied(),
            health: path.starts_with("/grpc.health.v1.Health/"),
            open: MethodTable::is_open(path),
        }
    }

    /// The entry [`ClassifyLayer`] put into `request`; classified here when no such layer ran
    /// (a layer used on its own, as in tests).
    pub fn of<B>(request: &http::Request<B>) -> Self {
        request
            .extensions()
            .get::<Entry>()
            .copied()
            .unwrap_or_else(|| Self::classify(request.uri().path()))
    }

    /// A known method where neither side streams.
    pub fn unary(&self) -> bool {
        self.method.is_some_and(|m| m.unary)
    }

    /// A known method whose answer is a stream the server sends.
    pub fn server_streaming(&self) -> bool {
        self.method.is_some_and(|m| m.server_streaming)
    }

    /// A known unary method a failed attempt of which may be sent again.
    pub fn retryable(&self) -> bool {
        self.method.is_some_and(|m| m.unary && m.idempotent)
    }

    /// The scope an API key needs. Paths the contracts do not know get UNIMPLEMENTED from the
    /// router, which any valid key may learn; a known method without a declared scope needs
    /// admin.
    pub fn required_scope(&self) -> Scope {
        self.method
            .map_or(Scope::Read, |m| m.scope.unwrap_or(Scope::Admin))
    }
}

/// Classifies every request once and puts its [`Entry`] into the request's extensions.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClassifyLayer;

impl<S> tower::Layer<S> for ClassifyLayer {
    type Service = Layered<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(*self, inner)
    }
}

impl<S: tower::Service<http::Request<B>>, B> OnCall<S, B> for ClassifyLayer {
    type Future = S::Future;

    fn call(&self, inner: &mut S, mut request: http::Request<B>) -> Self::Future {
        let entry = Entry::classify(request.uri().path());
        request.extensions_mut().insert(entry);
        inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_tickmesh_rpc_declares_a_scope() {
        let table = MethodTable::global();
        let tickmesh: Vec<_> = table
            .iter()
            .filter(|(path, _)| path.starts_with("/tickmesh.v1."))
            .collect();
        assert!(
            tickmesh.len() >= 20,
            "only {} tickmesh methods",
            tickmesh.len()
        );
        for (path, method) in tickmesh {
            assert!(method.scope.is_some(), "{path} declares no required_scope");
        }
    }

    #[test]
    fn options_are_read_from_the_contract() {
        let table = MethodTable::global();
        let ingest = table
            .get("/tickmesh.v1.IngestionService/IngestTicks")
            .copied();
        assert_eq!(
            ingest,
            Some(Method {
                scope: Some(Scope::Write),
                unary: false,
                server_streaming: false,
                idempotent: false
            })
        );
        let batch = table
            .get("/tickmesh.v1.IngestionService/IngestTickBatch")
            .copied();
        assert_eq!(
            batch,
            Some(Method {
                scope: Some(Scope::Write),
                unary: true,
                server_streaming: false,
                idempotent: true
            })
        );
        let update = table
            .get("/tickmesh.v1.ConfigService/UpdateConfig")
            .copied();
        assert_eq!(
            update,
            Some(Method {
                scope: Some(Scope::Admin),
                unary: true,
                server_streaming: false,
                idempotent: false
            })
        );
        let candles = table.get("/tickmesh.v1.QueryService/GetCandles").copied();
        assert_eq!(
            candles,
            Some(Method {
                scope: Some(Scope::Read),
                unary: true,
                server_streaming: false,
                idempotent: true
            })
        );
        assert!(MethodTable::is_open("/grpc.health.v1.Health/Check"));
        assert!(!MethodTable::is_open(
            "/tickmesh.v1.QueryService/GetCandles"
        ));
    }

    #[tokio::test]
    async fn the_classify_layer_puts_the_entry_into_the_extensions() {
        use tower::{Layer, ServiceExt};
        let seen = tower::service_fn(|request: http::Request<()>| async move {
            Ok::<_, std::convert::Infallible>(request.extensions().get::<Entry>().copied())
        });
        let request = http::Request::builder()
            .uri("/tickmesh.v1.QueryService/GetCandles")
            .body(())
            .unwrap();
        let entry = ClassifyLayer.layer(seen).oneshot(request).await.unwrap();
        let candles = entry.unwrap_or_else(|| panic!("no entry in the extensions"));
        assert!(candles.retryable() && !candles.open && !candles.health);
        assert_eq!(candles.required_scope(), Scope::Read);
        let health = Entry::classify("/grpc.health.v1.Health/Check");
        assert!(health.open && health.health && health.method.is_none());
        let reflection =
            Entry::classify("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
        assert!(reflection.open && !reflection.health);
        let unknown = Entry::classify("/tickmesh.v1.QueryService/NoSuchMethod");
        assert_eq!(unknown.required_scope(), Scope::Read);
        assert!(!unknown.unary() && !unknown.open);
    }
}
