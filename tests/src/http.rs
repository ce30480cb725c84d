//! Plain HTTP over TCP to 127.0.0.1, enough for the daemon's metrics endpoint and a Prometheus
//! server's API: no client library, so that a test sees exactly what the server sends.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long a read may wait for the server.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP/1.0 GET of 127.0.0.1:port (1.0, so that no server answers in chunks): the status
/// line, the headers (lowercased) and the body; None if nothing answers.
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> Option<(String, String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{accept}\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Some((
        status.to_string(),
        headers.to_ascii_lowercase(),
        body.to_string(),
    ))
}

/// Sends `request` as it is to 127.0.0.1:port and returns the whole answer (panics if the
/// connection cannot be made): for requests [`http_get`] would not send.
pub fn http_request(port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("set a read timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// The value of the sample whose line starts with `series` (name and labels, exactly) in a
/// metrics endpoint's text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
