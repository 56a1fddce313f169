//! Opaque page tokens for keyset paging. A token carries the key of the last row of a page and
//! a fingerprint of the request it belongs to, so a token used with different filters is
//! refused instead of silently skipping or repeating rows.

use tonic::Status;

use crate::bad_field;

/// FNV-1a over the parts that define a query (everything but the token and the page size).
pub fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// A token for `fields` (the cursor) under `fingerprint`.
pub fn encode(fields: &[String], fingerprint: u64) -> String {
    let text = format!("1|{fingerprint:016x}|{}", fields.join("|"));
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The cursor fields of `token`, checked against the request's `fingerprint`.
pub fn decode(token: &str, fingerprint: u64, count: usize) -> Result<Vec<String>, Status> {
    let invalid = || bad_field("page_token", "not a page token of this query");
    if !token.len().is_multiple_of(2) || token.len() > 2048 {
        return Err(invalid());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut fields = text.splitn(count + 2, '|');
    if fields.next() != Some("1") {
        return Err(invalid());
    }
    if fields.next() != Some(format!("{fingerprint:016x}").as_str()) {
        return Err(bad_field(
            "page_token",
            "the token belongs to a query with other filters; start again without a token",
        ));
    }
    let fields: Vec<String> = fields.map(str::to_owned).collect();
    if fields.len() != count {
        return Err(invalid());
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_roundtrip_and_are_bound_to_their_query() {
        let f = fingerprint(&[b"BTC-USD", b"2"]);
        let token = encode(&["123".into(), "a|b".into()], f);
        assert_eq!(decode(&token, f, 2).unwrap(), vec!["123", "a|b"]);
        let other = fingerprint(&[b"ETH-USD", b"2"]);
        assert!(decode(&token, other, 2).is_err());
        assert!(decode("zz", f, 2).is_err());
        assert!(decode(&token, f, 4).is_err(), "a cursor of another shape");
        assert!(
            decode(&token[..token.len() - 1], f, 2).is_err(),
            "odd length"
        );
    }
}
