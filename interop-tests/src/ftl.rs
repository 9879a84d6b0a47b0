//! An FTL client written from the protocol (ftl-sdk's control conversation), and ffmpeg
//! sending its media as RTP.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use aws_lc_rs::hmac;

use crate::FAST_X264;

/// The control side of an FTL client, as ftl-sdk speaks it.
pub struct Control {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Control {
    pub fn connect(server: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(server)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Self { stream, reader })
    }

    pub fn send(&mut self, command: &str) -> Result<()> {
        Ok(self
            .stream
            .write_all(format!("{command}\r\n\r\n").as_bytes())?)
    }

    /// One reply line; empty when the server closed the connection.
    pub fn reply(&mut self) -> Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        Ok(line)
    }

    /// HMAC, CONNECT, attributes, `.`: the reply to the step that ended it, and the media port
    /// when all went well.
    pub fn handshake(&mut self, channel_id: u32, key: &str) -> Result<(String, Option<u16>)> {
        self.send("HMAC")?;
        let challenge = self.reply()?;
        let hex = challenge
            .strip_prefix("200 ")
            .and_then(|h| h.strip_suffix('\n'))
            .context("challenge line")?;
        ensure!(
            hex.len() % 2 == 0,
            "ftl-sdk needs an even-length challenge: {challenge:?}"
        );
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<_, _>>()?;
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA512, key.as_bytes()), &bytes);
        let tag: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        self.send(&format!("CONNECT {channel_id} ${tag}"))?;
        let connected = self.reply()?;
        if connected != "200\n" {
            return Ok((connected, None));
        }
        for attribute in [
            "ProtocolVersion: 0.9".to_owned(),
            "VendorName: starling-interop".to_owned(),
            "VendorVersion: 1".to_owned(),
            "Video: true".to_owned(),
            "VideoCodec: H264".to_owned(),
            "VideoHeight: 360".to_owned(),
            "VideoWidth: 640".to_owned(),
            "VideoPayloadType: 96".to_owned(),
            format!("VideoIngestSSRC: {}", channel_id + 1),
            "Audio: true".to_owned(),
            "AudioCodec: OPUS".to_owned(),
            "AudioPayloadType: 97".to_owned(),
            format!("AudioIngestSSRC: {channel_id}"),
        ] {
            self.send(&attribute)?;
        }
        self.send(".")?;
        let ready = self.reply()?;
        // ftl-sdk: sscanf(reply, "%*[^.]. Use UDP port %d\n", &port)
        let port = ready
            .split_once(". Use UDP port ")
            .and_then(|(_, p)| p.trim_end().parse().ok());
        Ok((ready, port))
    }
}

/// ffmpeg sending H.264 and Opus as RTP to `to` (`host:port`) with FTL's payload types and
/// SSRCs of `channel_id` (video `channel_id + 1`, audio `channel_id`, as ftl-sdk does).
pub fn ffmpeg_rtp(to: &str, channel_id: u32) -> Result<Child> {
    let to = format!("rtp://{to}");
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t", "60", "-map", "0:v", "-c:v", "libx264", "-pix_fmt", "yuv420p",
        ])
        .args(FAST_X264)
        // OBS sends SPS and PPS before every keyframe.
        .args(["-bsf:v", "dump_extra=freq=keyframe"])
        .args([
            "-f",
            "rtp",
            "-payload_type",
            "96",
            "-ssrc",
            &(channel_id + 1).to_string(),
        ])
        .arg(format!("{to}?pkt_size=1200"))
        .args(["-map", "1:a", "-c:a", "libopus", "-b:a", "64k"])
        .args([
            "-f",
            "rtp",
            "-payload_type",
            "97",
            "-ssrc",
            &channel_id.to_string(),
        ])
        .arg(&to)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn ffmpeg (scripts/test installs it)")
}
