//! What the contracts say about each RPC, read once from the descriptors: the scope an API key
//! needs (the `tickmesh.v1.required_scope` method option), whether the call is unary, and
//! whether it may be retried (the standard `idempotency_level` option).

use std::collections::HashMap;
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, Value};
use tickmesh_proto::v1::Scope;

/// One RPC as the contract declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    /// Scope an API key needs; `None` for calls open to everyone (health, reflection).
    pub scope: Option<Scope>,
    /// Neither side streams.
    pub unary: bool,
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

#[cfg(test)]
mod tests {
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
                idempotent: false
            })
        );
        let candles = table.get("/tickmesh.v1.QueryService/GetCandles").copied();
        assert_eq!(
            candles,
            Some(Method {
                scope: Some(Scope::Read),
                unary: true,
                idempotent: true
            })
        );
        assert!(MethodTable::is_open("/grpc.health.v1.Health/Check"));
        assert!(!MethodTable::is_open(
            "/tickmesh.v1.QueryService/GetCandles"
        ));
    }
}
