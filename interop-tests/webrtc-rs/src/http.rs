//! Just enough HTTP/1.1 for WHIP and WHEP against a loopback server: one request per
//! connection, `Connection: close`, the body read to the end.

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response we read (an SDP answer is a few KiB).
const MAX_RESPONSE: u64 = 1 << 20;

pub struct Response {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

/// An `http://host:port/path` URL split into its authority and path.
pub struct Url {
    authority: String,
    path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("{url}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        Ok(Self {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    /// This host's address on the route to the server (loopback for a loopback server, the
    /// veth address for a server in another network namespace).
    pub fn local_ip(&self) -> Result<std::net::IpAddr> {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        socket
            .connect(&self.authority)
            .with_context(|| format!("no route to {}", self.authority))?;
        Ok(socket.local_addr()?.ip())
    }

    /// The URL of a resource the server named in `Location` (absolute path or full URL).
    pub fn join(&self, location: &str) -> Result<Self> {
        if location.starts_with("http://") {
            Self::parse(location)
        } else if location.starts_with('/') {
            Ok(Self {
                authority: self.authority.clone(),
                path: location.to_owned(),
            })
        } else {
            bail!("unexpected Location {location:?}")
        }
    }
}

pub async fn request(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Response> {
    let mut stream = TcpStream::connect(&url.authority)
        .await
        .with_context(|| format!("connect {}", url.authority))?;
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        url.path,
        url.authority,
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;

    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut raw).await?;
    let text = String::from_utf8(raw).context("response is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("response has no header end")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .context("response has no status line")?;
    let location = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("location")
            .then(|| value.trim().to_owned())
    });
    Ok(Response {
        status,
        location,
        body: body.to_owned(),
    })
}
