//! Invalidation messages between processes sharing one Redis.
//!
//! A write or invalidation publishes `v1\n{origin}\n{kind}\n{namespace}\n{argument}` on
//! [`CHANNEL`]; every other process drops its L1 copies. The origin lets a process skip its own
//! messages. Keys and namespaces are printable ASCII, so a newline never occurs inside a field.

/// The Redis pub/sub channel of cache invalidations.
pub const CHANNEL: &str = "tickmesh:cache:invalidate";

const VERSION: &str = "v1";

/// What an invalidation drops.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Target {
    /// One key.
    Key(String),
    /// Keys matching a glob.
    Pattern(String),
    /// The whole namespace.
    Namespace,
}

/// A decoded invalidation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub origin: String,
    pub namespace: String,
    pub target: Target,
}

pub(crate) fn encode(origin: &str, namespace: &str, target: &Target) -> String {
    let (kind, arg) = match target {
        Target::Key(key) => ("key", key.as_str()),
        Target::Pattern(pattern) => ("pattern", pattern.as_str()),
        Target::Namespace => ("namespace", ""),
    };
    format!("{VERSION}\n{origin}\n{kind}\n{namespace}\n{arg}")
}

pub(crate) fn decode(payload: &[u8]) -> Option<Message> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(5, '\n');
    if parts.next()? != VERSION {
        return None;
    }
    let origin = parts.next()?.to_owned();
    let kind = parts.next()?;
    let namespace = parts.next()?.to_owned();
    let arg = parts.next()?.to_owned();
    let target = match kind {
        "key" => Target::Key(arg),
        "pattern" => Target::Pattern(arg),
        "namespace" => Target::Namespace,
        _ => return None,
    };
    Some(Message {
        origin,
        namespace,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_roundtrip_and_garbage_is_ignored() {
        for target in [
            Target::Key("BTC-USD".into()),
            Target::Pattern("BTC-*".into()),
            Target::Namespace,
        ] {
            let text = encode("pod-a", "prices", &target);
            assert_eq!(
                decode(text.as_bytes()),
                Some(Message {
                    origin: "pod-a".into(),
                    namespace: "prices".into(),
                    target,
                })
            );
        }
        assert_eq!(decode(b"v2\na\nkey\nns\nk"), None);
        assert_eq!(decode(b"v1\na\nwhat\nns\nk"), None);
        assert_eq!(decode(b"v1\na"), None);
        assert_eq!(decode(&[0xff, 0xfe]), None);
    }
}
