//! One HTTP/1.1 request per connection, enough for WHIP and WHEP on loopback.

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Reply {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

/// `url` is `http://host:port/path`; `body` is SDP (or empty).
pub async fn send(method: &str, url: &str, body: &str) -> Result<Reply> {
    let rest = url.strip_prefix("http://").context("http:// URLs only")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = TcpStream::connect(host).await.context(host.to_owned())?;
    let request = format!(
        "{method} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        if path.is_empty() { "/" } else { path },
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.take(1 << 20).read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let location = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("location")
            .then(|| v.trim().to_owned())
    });
    Ok(Reply {
        status,
        location,
        body: body.to_owned(),
    })
}

/// `http://host:port` of a URL, to resolve a `Location` path against.
pub fn origin(url: &str) -> &str {
    let start = url.find("//").map_or(0, |i| i + 2);
    url[start..].find('/').map_or(url, |i| &url[..start + i])
}
