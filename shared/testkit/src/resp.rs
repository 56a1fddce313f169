//! Just enough RESP2 to drive a Redis from tests without a client crate.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::{Error, Result};

/// How long one command may take before the testkit gives up on it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One decoded reply.
#[derive(Debug, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// Sends one command to the Redis on 127.0.0.1:`port` and renders its reply as text.
pub(crate) fn command(port: u16, args: &[&str]) -> Result<String> {
    let io = |what: &str| Error::io(format!("{what} redis on 127.0.0.1:{port}"));
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(io("connecting to"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(io("configuring the connection to"))?;
    stream.write_all(&encode(args)).map_err(io("writing to"))?;
    let reply = read_reply(&mut BufReader::new(stream))?;
    render(reply)
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(reader: &mut impl BufRead) -> Result<Reply> {
    let line = read_line(reader)?;
    let (kind, rest) = line
        .split_at_checked(1)
        .ok_or_else(|| Error::RedisProtocol("empty line".to_owned()))?;
    let length = || -> Result<Option<usize>> {
        let n: i64 = parse(rest)?;
        Ok(usize::try_from(n).ok())
    };
    Ok(match kind {
        "+" => Reply::Simple(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Integer(parse(rest)?),
        "$" => match length()? {
            None => Reply::Bulk(None),
            Some(len) => {
                let mut bytes = vec![0; len + 2];
                reader
                    .read_exact(&mut bytes)
                    .map_err(Error::io("reading a redis bulk string"))?;
                if !bytes.ends_with(b"\r\n") {
                    return Err(Error::RedisProtocol(
                        "bulk string not ended by CRLF".to_owned(),
                    ));
                }
                bytes.truncate(len);
                Reply::Bulk(Some(bytes))
            }
        },
        "*" => match length()? {
            None => Reply::Array(None),
            Some(len) => Reply::Array(Some(
                (0..len)
                    .map(|_| read_reply(reader))
                    .collect::<Result<_>>()?,
            )),
        },
        _ => return Err(Error::RedisProtocol(format!("unknown reply {line:?}"))),
    })
}

fn read_line(reader: &mut impl BufRead) -> Result<String> {
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .map_err(Error::io("reading a redis reply"))?;
    if !line.ends_with(b"\r\n") {
        return Err(Error::RedisProtocol(if line.is_empty() {
            "connection closed".to_owned()
        } else {
            format!(
                "line not ended by CRLF: {:?}",
                String::from_utf8_lossy(&line)
            )
        }));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|err| Error::RedisProtocol(err.to_string()))
}

fn parse<T: std::str::FromStr>(text: &str) -> Result<T> {
    text.parse()
        .map_err(|_| Error::RedisProtocol(format!("not a number: {text:?}")))
}

/// Text a test can compare: nil is `(nil)` as in redis-cli, array elements go one per line,
/// and a top-level error reply is an [`Error::RedisReply`].
fn render(reply: Reply) -> Result<String> {
    match reply {
        Reply::Error(message) => Err(Error::RedisReply(message)),
        other => Ok(render_value(other)),
    }
}

fn render_value(reply: Reply) -> String {
    match reply {
        Reply::Simple(text) => text,
        Reply::Error(message) => format!("(error) {message}"),
        Reply::Integer(n) => n.to_string(),
        Reply::Bulk(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Reply::Bulk(None) | Reply::Array(None) => "(nil)".to_owned(),
        Reply::Array(Some(items)) => items
            .into_iter()
            .map(render_value)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<String> {
        render(read_reply(&mut &bytes[..])?)
    }

    #[test]
    fn a_command_is_an_array_of_bulk_strings() {
        assert_eq!(
            encode(&["SET", "k", ""]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn every_reply_kind_renders_as_text() {
        assert_eq!(decode(b"+OK\r\n").unwrap(), "OK");
        assert_eq!(decode(b":42\r\n").unwrap(), "42");
        assert_eq!(decode(b"$5\r\nhe\r\nl\r\n").unwrap(), "he\r\nl");
        assert_eq!(decode(b"$-1\r\n").unwrap(), "(nil)");
        assert_eq!(decode(b"*2\r\n$1\r\na\r\n:1\r\n").unwrap(), "a\n1");
        assert_eq!(decode(b"*-1\r\n").unwrap(), "(nil)");
    }

    #[test]
    fn an_error_reply_is_an_error() {
        let err = decode(b"-ERR unknown command\r\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "redis replied with an error: ERR unknown command"
        );
    }

    #[test]
    fn a_truncated_reply_is_a_protocol_error() {
        assert!(matches!(decode(b""), Err(Error::RedisProtocol(_))));
        assert!(matches!(decode(b"$5\r\nab"), Err(Error::Io { .. })));
        assert!(matches!(decode(b"?\r\n"), Err(Error::RedisProtocol(_))));
    }
}
