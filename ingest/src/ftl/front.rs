//! The FTL front (control TCP 8084 on the public name), so OBS <= 29 needs only the public
//! name. FTL's key proof is an HMAC of the server's challenge, and the channel id comes only
//! after the challenge, so the front holds the conversation itself up to `CONNECT`:
//! 1. it challenges the client and checks the HMAC under the channel's key (the front has the
//!    channels' keys, as every node does), refusing a wrong key with `405` at once;
//! 2. it finds the channel's ingest node (its origin, or the one placement picks), opens a
//!    control connection there and proves the same key to the node's own challenge;
//! 3. it passes the attribute lines on, and answers the node's `200 hi. Use UDP port N` with a
//!    port of its own range, whose datagrams it relays to the node's port N (and the node's
//!    NACKs and ping echoes back to the client);
//! 4. then it copies the control connection both ways (`PING`, `DISCONNECT`) until either
//!    side closes.
//!
//! Media reaches the node from the front's address, which is the address of the node's
//! control connection, so the node's "media only from the control peer" rule holds.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use admission::Admission;
use media::ChannelName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::timeout_at;
use tracing::{debug, info, warn};

use super::connection::{LineError, Lines};
use super::control::{code, hex, unhex, Action, Control, CHALLENGE_LEN};
use super::{FtlConfig, Ports};

/// Where a channel's publisher goes: the node's host and FTL control port.
pub type Pick = Arc<dyn Fn(&ChannelName) -> Option<(String, u16)> + Send + Sync>;

/// Largest datagram relayed (RTP on FTL stays under the path MTU).
const MAX_DATAGRAM: usize = 2048;

/// Accepts FTL control connections on `listener` and passes each to its channel's node,
/// until the task is dropped.
pub async fn serve_front(
    listener: TcpListener,
    config: FtlConfig,
    admission: Admission,
    pick: Pick,
) {
    let ports = Arc::new(Ports::new(config.media_port_first, config.media_port_count));
    let limit = usize::from(config.media_port_count) * 2;
    let per_ip = admission
        .limits()
        .per_ip("ftl", config.max_connections_per_ip);
    let config = Arc::new(config);
    admission::listen::accept_loop(listener, "ftl-front", limit, per_ip, move |stream, _| {
        let (config, admission, pick, ports) = (
            config.clone(),
            admission.clone(),
            pick.clone(),
            ports.clone(),
        );
        async move {
            match front(stream, &config, &admission, &pick, &ports).await {
                Ok(()) => info!("ftl front: publisher left"),
                Err(why) => warn!(reason = why, "ftl front: connection ended"),
            }
        }
    })
    .await;
}

/// Writes `line` and a bare `\n` to `write`.
async fn reply(write: &mut (impl AsyncWriteExt + Unpin), line: &str) -> Result<(), &'static str> {
    write
        .write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(|_| "client closed")
}

async fn front(
    stream: TcpStream,
    config: &FtlConfig,
    admission: &Admission,
    pick: &Pick,
    ports: &Arc<Ports>,
) -> Result<(), &'static str> {
    let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
        return Err("no addresses");
    };
    let deadline = tokio::time::Instant::now() + config.handshake_timeout();
    let mut challenge = [0u8; CHALLENGE_LEN];
    aws_lc_rs::rand::fill(&mut challenge).map_err(|_| "no randomness")?;
    let (read, mut write) = stream.into_split();
    let mut lines = Lines {
        read,
        buf: Vec::new(),
    };
    let mut control = Control::new(challenge);

    // 1. The client's key, checked here.
    let (channel_id, name) = loop {
        let line = timeout_at(deadline, lines.next())
            .await
            .map_err(|_| "handshake timed out")?
            .map_err(|e| match e {
                LineError::Closed => "closed during the handshake",
                LineError::TooLong => "control line too long",
            })?;
        match control.on_line(&line) {
            Action::Reply(r) => write.write_all(r.as_bytes()).await.map_err(|_| "closed")?,
            Action::Authenticate { channel_id, tag } => {
                let name = config.channel_name(channel_id);
                match admission
                    .publishers()
                    .authorize_hmac(&name, control.challenge(), &tag)
                {
                    Ok(name) => break (channel_id, name),
                    Err(err) => {
                        debug!(%err, "ftl front: key check");
                        reply(&mut write, &code::INVALID_STREAM_KEY.to_string()).await?;
                        return Err("wrong key or unknown channel (405)");
                    }
                }
            }
            Action::Refuse(r) => {
                let _ = write.write_all(r.as_bytes()).await;
                return Err("bad request");
            }
            Action::Disconnect => return Err("disconnected during the handshake"),
            Action::Nothing | Action::StartMedia(_) => {}
        }
    };

    // 2. The node, and the same key proven to it.
    let Some((host, port)) = pick(&name) else {
        reply(&mut write, &code::INTERNAL_SERVER_ERROR.to_string()).await?;
        return Err("no ingest node for the channel");
    };
    let node = timeout_at(deadline, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| "node did not answer")?
        .map_err(|_| "node unreachable")?;
    let _ = node.set_nodelay(true);
    let node_ip = node.peer_addr().map_err(|_| "node gone")?.ip();
    let (node_read, mut node_write) = node.into_split();
    let mut node_lines = Lines {
        read: node_read,
        buf: Vec::new(),
    };
    ask(&mut node_write, "HMAC").await?;
    let said = next_from_node(&mut node_lines, deadline).await?;
    let node_challenge = said
        .strip_prefix("200 ")
        .and_then(|h| unhex(h.trim()))
        .filter(|c| c.len() <= 1024)
        .ok_or("node sent no challenge")?;
    let tag = match admission.publishers().key(&name) {
        Some(key) => key.hmac_sha512(&node_challenge),
        None => vec![0; 64], // open node: any proof passes
    };
    ask(
        &mut node_write,
        &format!("CONNECT {channel_id} ${}", hex(&tag)),
    )
    .await?;
    let said = next_from_node(&mut node_lines, deadline).await?;
    if said.trim() != "200" {
        reply(&mut write, said.trim()).await?;
        return Err("the node refused the publisher");
    }
    control.authenticated(Ok(()));
    reply(&mut write, "200").await?;

    // 3. Attributes on to the node, then media through a port of ours.
    loop {
        let line = timeout_at(deadline, lines.next())
            .await
            .map_err(|_| "handshake timed out")?
            .map_err(|_| "closed during the handshake")?;
        let done = line.trim() == ".";
        if !line.trim().is_empty() {
            ask(&mut node_write, line.trim()).await?;
        }
        if done {
            break;
        }
    }
    let said = next_from_node(&mut node_lines, deadline).await?;
    let Some(node_port) = said
        .strip_prefix("200 hi. Use UDP port ")
        .and_then(|p| p.trim().parse::<u16>().ok())
    else {
        reply(&mut write, said.trim()).await?;
        return Err("the node refused the media");
    };
    let Some(lease) = ports.lease(local.ip()).await else {
        reply(&mut write, &code::INTERNAL_SERVER_ERROR.to_string()).await?;
        return Err("no free media port on the front");
    };
    let to_node = UdpSocket::bind(SocketAddr::new(unspecified(node_ip), 0))
        .await
        .map_err(|_| "no socket towards the node")?;
    to_node
        .connect((node_ip, node_port))
        .await
        .map_err(|_| "no route to the node's media port")?;
    reply(&mut write, &format!("200 hi. Use UDP port {}", lease.port)).await?;
    info!(channel = %name, node = %host, front_port = lease.port, node_port, "ftl front: publisher passed to its node");

    // 4. Media relayed and control copied, until either side ends.
    let relay = relay_media(&lease.socket, &to_node, peer.ip());
    let up = async {
        write_all(&mut node_write, &std::mem::take(&mut lines.buf)).await?;
        tokio::io::copy(&mut lines.read, &mut node_write).await
    };
    let down = async {
        write_all(&mut write, &std::mem::take(&mut node_lines.buf)).await?;
        tokio::io::copy(&mut node_lines.read, &mut write).await
    };
    tokio::select! {
        _ = relay => {}
        _ = up => {}
        _ = down => {}
    }
    let _ = node_write.shutdown().await;
    let _ = write.shutdown().await;
    Ok(())
}

/// One control line to the node, ended as ftl-sdk ends them.
async fn ask(node: &mut (impl AsyncWriteExt + Unpin), line: &str) -> Result<(), &'static str> {
    node.write_all(format!("{line}\r\n\r\n").as_bytes())
        .await
        .map_err(|_| "node closed")
}

fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
        IpAddr::V6(_) => IpAddr::from([0u16; 8]),
    }
}

async fn write_all(write: &mut (impl AsyncWriteExt + Unpin), bytes: &[u8]) -> std::io::Result<u64> {
    write.write_all(bytes).await.map(|()| bytes.len() as u64)
}

async fn next_from_node(
    lines: &mut Lines,
    deadline: tokio::time::Instant,
) -> Result<String, &'static str> {
    timeout_at(deadline, lines.next())
        .await
        .map_err(|_| "node did not answer in time")?
        .map_err(|_| "node closed")
}

/// Datagrams from the publisher's address to the node, and the node's back to the publisher.
async fn relay_media(from_client: &UdpSocket, to_node: &UdpSocket, client_ip: IpAddr) {
    let mut up = vec![0u8; MAX_DATAGRAM];
    let mut down = vec![0u8; MAX_DATAGRAM];
    let mut client: Option<SocketAddr> = None;
    loop {
        tokio::select! {
            got = from_client.recv_from(&mut up) => {
                let Ok((n, from)) = got else { continue };
                // Only the publisher's address, as the node itself would.
                if from.ip().to_canonical() != client_ip.to_canonical() {
                    continue;
                }
                client = Some(from);
                let _ = to_node.send(&up[..n]).await;
            }
            got = to_node.recv(&mut down) => {
                let Ok(n) = got else { continue };
                if let Some(client) = client {
                    let _ = from_client.send_to(&down[..n], client).await;
                }
            }
        }
    }
}
