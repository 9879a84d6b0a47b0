//! A second, independent WebRTC stack for Starling's interop tests: webrtc-rs as a WHIP
//! publisher (VP8 + Opus from files) or a WHEP viewer (counts what arrives). Prints one JSON
//! line with the outcome and exits non-zero on failure.
//!
//! ```text
//! starling-webrtc-rs publish URL --ivf FILE [--ogg FILE] [--seconds N] [DTLS]
//! starling-webrtc-rs view URL [--seconds N] [DTLS]
//! DTLS: [--rsa-key PKCS8.pem] [--ecdsa-only]
//! ```
//! The WHIP bearer key comes from `$STARLING_KEY`, never from the command line.

mod http;
mod keyframe;
mod peer;
mod publish;
mod view;

use std::time::Duration;

use anyhow::{Context, Result, bail};

pub struct Args {
    url: String,
    key: Option<String>,
    ivf: Option<String>,
    ogg: Option<String>,
    duration: Duration,
    dtls: peer::Dtls,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<(String, Args)> {
    let mode = argv
        .next()
        .context("usage: starling-webrtc-rs publish|view URL ...")?;
    let url = argv.next().context("missing URL")?;
    let mut args = Args {
        url,
        key: std::env::var("STARLING_KEY").ok(),
        ivf: None,
        ogg: None,
        duration: Duration::from_secs(5),
        dtls: peer::Dtls::default(),
    };
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--ivf" => args.ivf = Some(value()?),
            "--ogg" => args.ogg = Some(value()?),
            "--seconds" => args.duration = Duration::from_secs_f64(value()?.parse()?),
            "--rsa-key" => args.dtls.rsa_key = Some(value()?),
            "--ecdsa-only" => args.dtls.ecdsa_only = true,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok((mode, args))
}

#[tokio::main]
async fn main() -> Result<()> {
    let (mode, args) = parse(std::env::args().skip(1))?;
    match mode.as_str() {
        "publish" => publish::run(&args).await,
        "view" => view::run(&args).await,
        other => bail!("unknown mode {other}: publish or view"),
    }
}
