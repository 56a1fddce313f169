//! API-key authentication and scopes.
//!
//! A caller sends its key as `authorization: Bearer <key>` or `x-api-key: <key>`. The layer
//! finds the key's holder, checks that the holder's scope covers the one the RPC declares in
//! the contract (`tickmesh.v1.required_scope`), and puts the [`Caller`] into the request's
//! extensions for the layers behind it (rate limits). Missing or unknown key:
//! UNAUTHENTICATED; scope too small: PERMISSION_DENIED. Health and reflection are open.
//! Keys are never logged: only holder names appear in logs and metrics.
//! Hand-written: neither tower nor tonic ships API keys with scopes.

use std::path::Path;
use std::sync::Arc;

use futures_util::future::{Either, Ready, ready};

use tickmesh_proto::v1::{AuthConfig, Scope};

use crate::layer::{GrpcService, Layered, OnCall};
use crate::methods::Entry;
pub use crate::methods::scope_name;
use crate::status::Refusal;

/// Who is calling, as the auth layer established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key holder's name (`anonymous` when auth is off).
    pub name: Arc<str>,
    /// The widest scope the holder has.
    pub scope: Scope,
}

impl Caller {
    /// Whether this is the one caller of a server with auth off (or of an open service).
    pub fn is_anonymous(&self) -> bool {
        Arc::ptr_eq(&self.name, &Self::anonymous().name)
    }

    /// The caller of a server with auth switched off.
    pub fn anonymous() -> Self {
        // One name for every anonymous call: a clone is a reference count, not an allocation.
        static NAME: std::sync::LazyLock<Arc<str>> =
            std::sync::LazyLock::new(|| Arc::from("anonymous"));
        Self {
            name: NAME.clone(),
            scope: Scope::Admin,
        }
    }
}

/// Why the API keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The keys file could not be read.
    #[error("auth.keys_file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the keys file is malformed.
    #[error("auth.keys_file {path} line {line}: {reason}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the key itself).
        reason: String,
    },
    /// A key in the configuration is malformed.
    #[error("auth.keys[{index}]: {reason}")]
    Config {
        /// Position in `auth.keys`.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// `auth.peer_key_name` names no usable key.
    #[error("auth.peer_key_name {name:?}: {reason}")]
    PeerKey {
        /// The name asked for.
        name: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// Auth is on and there is no key at all: nobody could call.
    #[error("auth.enabled is true but no API key is configured (auth.keys or auth.keys_file)")]
    NoKeys,
}

#[derive(Clone)]
struct Key {
    secret: Vec<u8>,
    caller: Caller,
}

/// The API keys a server accepts; `None` inside means auth is off.
#[derive(Clone)]
pub struct Keys {
    keys: Option<Arc<[Key]>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.keys {
            None => f.write_str("Keys(auth off)"),
            Some(keys) => f
                .debug_list()
                .entries(keys.iter().map(|k| &k.caller.name))
                .finish(),
        }
    }
}

/// The widest of a holder's scopes (`admin` covers `write`, `write` covers `read`).
fn widest(scopes: impl IntoIterator<Item = Scope>) -> Scope {
    scopes
        .into_iter()
        .max_by_key(|s| *s as i32)
        .unwrap_or(Scope::Unspecified)
}

fn parse_scope(word: &str) -> Option<Scope> {
    match word.trim().to_ascii_lowercase().as_str() {
        "read" => Some(Scope::Read),
        "write" => Some(Scope::Write),
        "admin" => Some(Scope::Admin),
        _ => None,
    }
}

impl Keys {
    /// Auth switched off: every caller is [`Caller::anonymous`].
    pub fn off() -> Self {
        Self { keys: None }
    }

    /// Whether auth is on.
    pub fn enabled(&self) -> bool {
        self.keys.is_some()
    }

    /// Number of keys accepted.
    pub fn len(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.len())
    }

    /// Whether no key is accepted (auth off, or on with none).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys of `auth`: inline keys plus the keys file.
    pub fn load(auth: &AuthConfig) -> Result<Self, KeysError> {
        if !auth.enabled {
            return Ok(Self::off());
        }
        let mut keys = Vec::new();
        for (index, key) in auth.keys.iter().enumerate() {
            let scopes = key
                .scopes
                .iter()
                .filter_map(|s| Scope::try_from(*s).ok())
                .filter(|s| *s != Scope::Unspecified);
            let scope = widest(scopes);
            check(&key.name, &key.key, scope)
                .map_err(|reason| KeysError::Config { index, reason })?;
            keys.push(Key {
                secret: key.key.as_bytes().to_vec(),
                caller: Caller {
                    name: Arc::from(key.name.as_str()),
                    scope,
                },
            });
        }
        if !auth.keys_file.is_empty() {
            keys.extend(read_keys_file(Path::new(&auth.keys_file))?);
        }
        if keys.is_empty() {
            return Err(KeysError::NoKeys);
        }
        Ok(Self {
            keys: Some(keys.into()),
        })
    }

    /// The secret of the key named `name`, if it has at least the `write` scope: what a process
    /// sends on its own calls to peers (`auth.peer_key_name`).
    pub fn peer_secret(&self, name: &str) -> Result<String, KeysError> {
        let key = self
            .keys
            .as_ref()
            .and_then(|keys| keys.iter().find(|k| &*k.caller.name == name))
            .ok_or_else(|| KeysError::PeerKey {
                name: name.to_owned(),
                reason: "no key of that name is configured",
            })?;
        if (key.caller.scope as i32) < (Scope::Write as i32) {
            return Err(KeysError::PeerKey {
                name: name.to_owned(),
                reason: "it needs the write scope",
            });
        }
        String::from_utf8(key.secret.clone()).map_err(|_| KeysError::PeerKey {
            name: name.to_owned(),
            reason: "the key is not text",
        })
    }

    /// The holder of `presented`, comparing against every key in constant time.
    fn find(&self, presented: &[u8]) -> Option<&Caller> {
        let keys = self.keys.as_ref()?;
        let mut found = None;
        for key in keys.iter() {
            if constant_time_eq(&key.secret, presented) {
                found = Some(&key.caller);
            }
        }
        found
    }
}

fn check(name: &str, key: &str, scope: Scope) -> Result<(), String> {
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err("a key needs a name without spaces".into());
    }
    if key.len() < 16 || key.chars().any(char::is_whitespace) {
        return Err(format!(
            "key of {name} must be at least 16 characters, no spaces"
        ));
    }
    if scope == Scope::Unspecified {
        return Err(format!("key of {name} has no scope (read, write or admin)"));
    }
    Ok(())
}

fn read_keys_file(path: &Path) -> Result<Vec<Key>, KeysError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| KeysError::Line {
            path: shown.clone(),
            line: n + 1,
            reason,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, scopes, key] = fields[..] else {
            return Err(bad(format!(
                "expected `<name> <scope>[,<scope>...] <key>`, found {} fields",
                fields.len()
            )));
        };
        let mut parsed = Vec::new();
        for word in scopes.split(',') {
            parsed.push(parse_scope(word).ok_or_else(|| bad(format!("unknown scope {word:?}")))?);
        }
        let scope = widest(parsed);
        check(name, key, scope).map_err(bad)?;
        keys.push(Key {
            secret: key.as_bytes().to_vec(),
            caller: Caller {
                name: Arc::from(name),
                scope,
            },
        });
    }
    Ok(keys)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The key a request presents, if any.
fn presented<B>(request: &http::Request<B>) -> Option<&[u8]> {
    let headers = request.headers();
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value.as_bytes();
        let prefix = b"Bearer ";
        return (value.len() > prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix))
            .then(|| &value[prefix.len()..]);
    }
    headers.get("x-api-key").map(|v| v.as_bytes())
}

/// Checks API keys and scopes.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    keys: Keys,
}

impl AuthLayer {
    /// A layer accepting `keys`.
    pub fn new(keys: Keys) -> Self {
        Self { keys }
    }

    /// Who the request comes from, or why it is refused.
    fn authorize<B>(&self, request: &http::Request<B>) -> Result<Caller, Refusal> {
        let entry = Entry::of(request);
        if !self.keys.enabled() || entry.open {
            return Ok(Caller::anonymous());
        }
        let key = presented(request).ok_or(Refusal::MissingKey)?;
        let caller = self.keys.find(key).ok_or(Refusal::UnknownKey)?;
        let needed = entry.required_scope();
        if (caller.scope as i32) < (needed as i32) {
            return Err(Refusal::PermissionDenied {
                caller: caller.name.clone(),
                has: caller.scope,
                method: request.uri().path().trim_start_matches('/').to_owned(),
                needs: needed,
            });
        }
        Ok(caller.clone())
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Layered<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(self.clone(), inner)
    }
}

impl<S: GrpcService<B>, B> OnCall<S, B> for AuthLayer {
    // No box of its own: the inner call, or the refusal.
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn call(&self, inner: &mut S, mut request: http::Request<B>) -> Self::Future {
        match self.authorize(&request) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Left(inner.call(request))
            }
            Err(refusal) => Either::Right(ready(Ok(refusal.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;
    use tickmesh_proto::v1::ApiKey;

    fn config(keys: Vec<ApiKey>, file: &str) -> AuthConfig {
        AuthConfig {
            enabled: true,
            keys_file: file.into(),
            keys,
            peer_key_name: String::new(),
        }
    }

    #[test]
    fn a_peer_key_is_found_by_name_and_needs_the_write_scope() {
        let key = |name: &str, scope: Scope| ApiKey {
            name: name.into(),
            key: format!("{name}-secret-0123456789"),
            scopes: vec![scope as i32],
        };
        let keys = Keys::load(&config(
            vec![key("computation", Scope::Write), key("viewer", Scope::Read)],
            "",
        ))
        .unwrap();
        assert_eq!(
            keys.peer_secret("computation").unwrap(),
            "computation-secret-0123456789"
        );
        let read_only = keys.peer_secret("viewer").unwrap_err().to_string();
        assert!(read_only.contains("write scope"), "{read_only}");
        let missing = keys.peer_secret("nobody").unwrap_err().to_string();
        assert!(
            missing.contains("auth.peer_key_name \"nobody\""),
            "{missing}"
        );
    }

    #[test]
    fn keys_come_from_config_and_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "# comment\n\nfeed write abcdefghijklmnop0001\nops read,admin abcdefghijklmnop0002"
        )
        .unwrap();
        let keys = Keys::load(&config(
            vec![ApiKey {
                name: "dash".into(),
                key: "abcdefghijklmnop0003".into(),
                scopes: vec![Scope::Read as i32],
            }],
            file.path().to_str().unwrap(),
        ))
        .unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(
            keys.find(b"abcdefghijklmnop0001").unwrap().scope,
            Scope::Write
        );
        assert_eq!(
            keys.find(b"abcdefghijklmnop0002").unwrap().scope,
            Scope::Admin
        );
        assert_eq!(&*keys.find(b"abcdefghijklmnop0003").unwrap().name, "dash");
        assert!(keys.find(b"abcdefghijklmnop0004").is_none());
        assert!(keys.find(b"").is_none());
    }

    #[test]
    fn bad_keys_are_refused_without_showing_them() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "feed sudo abcdefghijklmnop0001").unwrap();
        let err = Keys::load(&config(vec![], file.path().to_str().unwrap())).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("line 1") && text.contains("sudo"), "{text}");
        assert!(!text.contains("abcdefghijklmnop0001"), "{text}");

        let err = Keys::load(&config(
            vec![ApiKey {
                name: "x".into(),
                key: "short".into(),
                scopes: vec![1],
            }],
            "",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("at least 16"), "{err}");
        assert!(matches!(
            Keys::load(&config(vec![], "")),
            Err(KeysError::NoKeys)
        ));
        assert!(!Keys::load(&AuthConfig::default()).unwrap().enabled());
    }
}
