//! Keys: what is accepted, how they are laid out in Redis, and glob matching with Redis's rules.

use crate::error::CacheError;

/// Longest key or pattern, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Longest namespace name, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 64;

/// Prefix of every cached value in Redis: `tickmesh:cache:{namespace}:{key}`.
pub(crate) const DATA_PREFIX: &str = "tickmesh:cache:";
/// Prefix of the stampede locks: `tickmesh:cache-lock:{namespace}:{key}`.
pub(crate) const LOCK_PREFIX: &str = "tickmesh:cache-lock:";

fn printable(field: &'static str, text: &str, max: usize) -> Result<(), CacheError> {
    if text.is_empty() || text.len() > max {
        return Err(CacheError::BadLength {
            field,
            len: text.len(),
            max,
        });
    }
    match text.bytes().position(|b| !(0x20..=0x7e).contains(&b)) {
        Some(offset) => Err(CacheError::NotPrintable {
            field,
            offset,
            byte: text.as_bytes()[offset],
        }),
        None => Ok(()),
    }
}

/// A key is 1-256 bytes of printable ASCII.
pub fn validate_key(key: &str) -> Result<(), CacheError> {
    printable("key", key, MAX_KEY_BYTES)
}

/// A pattern is 1-256 bytes of printable ASCII; `*`, `?`, `[...]` and `\` as in Redis.
pub fn validate_pattern(pattern: &str) -> Result<(), CacheError> {
    printable("pattern", pattern, MAX_KEY_BYTES)
}

/// A namespace name is 1-64 bytes of printable ASCII without `:`.
pub fn validate_namespace(namespace: &str) -> Result<(), CacheError> {
    printable("namespace", namespace, MAX_NAMESPACE_BYTES)?;
    if namespace.contains(':') {
        return Err(CacheError::NamespaceColon(namespace.to_owned()));
    }
    Ok(())
}

/// `tickmesh:cache:{namespace}:{key}`.
pub(crate) fn data_key(namespace: &str, key: &str) -> String {
    let mut out = String::with_capacity(DATA_PREFIX.len() + namespace.len() + 1 + key.len());
    out.push_str(DATA_PREFIX);
    out.push_str(namespace);
    out.push(':');
    out.push_str(key);
    out
}

/// `tickmesh:cache-lock:{namespace}:{key}`.
pub(crate) fn lock_key(namespace: &str, key: &str) -> String {
    format!("{LOCK_PREFIX}{namespace}:{key}")
}

/// The SCAN pattern of a glob over one namespace's keys (the namespace itself escaped).
pub(crate) fn data_pattern(namespace: &str, key_pattern: &str) -> String {
    let mut out = String::from(DATA_PREFIX);
    for c in namespace.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push(':');
    out.push_str(key_pattern);
    out
}

/// Whether `text` matches the glob `pattern` with Redis's `stringmatchlen` rules: `*` any run,
/// `?` one byte, `[abc]`, `[a-z]`, `[^a]` a class, `\x` the byte itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    matches(pattern.as_bytes(), text.as_bytes())
}

fn matches(p: &[u8], t: &[u8]) -> bool {
    // Iterative with one backtrack point for the last `*`: linear for ordinary patterns.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    while pi < p.len() && p[pi] == b'*' {
                        pi += 1;
                    }
                    if pi == p.len() {
                        return true;
                    }
                    star = Some((pi, ti));
                    continue;
                }
                b'?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                b'[' => {
                    if let Some((hit, next)) = class(p, pi, t[ti])
                        && hit
                    {
                        pi = next;
                        ti += 1;
                        continue;
                    }
                }
                b'\\' if pi + 1 < p.len() => {
                    if p[pi + 1] == t[ti] {
                        pi += 2;
                        ti += 1;
                        continue;
                    }
                }
                c => {
                    if c == t[ti] {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `p[start] == b'['`: whether it matched and where
/// the pattern continues. An unterminated class runs to the end of the pattern, as in Redis.
fn class(p: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = i < p.len() && p[i] == b'^';
    if negate {
        i += 1;
    }
    let mut hit = false;
    while i < p.len() && p[i] != b']' {
        if p[i] == b'\\' && i + 1 < p.len() {
            hit |= p[i + 1] == c;
            i += 2;
        } else if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            let (lo, hi) = (p[i].min(p[i + 2]), p[i].max(p[i + 2]));
            hit |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            hit |= p[i] == c;
            i += 1;
        }
    }
    let next = if i < p.len() { i + 1 } else { i };
    Some((hit != negate, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_256_printable_ascii_bytes() {
        assert!(validate_key("BTC-USD:1m").is_ok());
        assert!(validate_key("with space").is_ok());
        assert!(validate_key(&"k".repeat(256)).is_ok());
        assert!(matches!(
            validate_key(""),
            Err(CacheError::BadLength { len: 0, .. })
        ));
        assert!(matches!(
            validate_key(&"k".repeat(257)),
            Err(CacheError::BadLength { len: 257, .. })
        ));
        assert!(matches!(
            validate_key("tab\there"),
            Err(CacheError::NotPrintable {
                offset: 3,
                byte: b'\t',
                ..
            })
        ));
        assert!(matches!(
            validate_key("é"),
            Err(CacheError::NotPrintable { offset: 0, .. })
        ));
    }

    #[test]
    fn a_namespace_with_a_colon_is_refused() {
        assert!(validate_namespace("candles").is_ok());
        assert!(matches!(
            validate_namespace("a:b"),
            Err(CacheError::NamespaceColon(_))
        ));
    }

    #[test]
    fn globs_follow_redis_rules() {
        assert!(glob_match("BTC-*", "BTC-USD"));
        assert!(glob_match("BTC-*", "BTC-"));
        assert!(!glob_match("BTC-*", "ETH-USD"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*USD", "BTC-USD"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("h?llo", "hello"));
        assert!(!glob_match("h?llo", "hllo"));
        assert!(glob_match("h[ae]llo", "hallo"));
        assert!(!glob_match("h[ae]llo", "hillo"));
        assert!(glob_match("h[^e]llo", "hallo"));
        assert!(!glob_match("h[^e]llo", "hello"));
        assert!(glob_match("h[a-c]llo", "hbllo"));
        assert!(glob_match("a\\*b", "a*b"));
        assert!(!glob_match("a\\*b", "axb"));
        assert!(glob_match("**x", "abx"));
    }

    #[test]
    fn namespace_glob_characters_are_escaped_in_scan_patterns() {
        assert_eq!(data_pattern("odd*ns", "k*"), "tickmesh:cache:odd\\*ns:k*");
        assert_eq!(data_key("candles", "AAPL"), "tickmesh:cache:candles:AAPL");
    }
}
