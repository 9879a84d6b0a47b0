//! WHIP publisher: VP8 from an IVF file and Opus from an Ogg file, looped and paced in real
//! time until the run's duration is over.

use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rtc::media::Sample;
use rtc::media::io::ivf_reader::IVFReader;
use rtc::media::io::ogg_reader::OggReader;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{PayloadType, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::json;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;

use crate::Args;
use crate::peer::Peer;

/// Opus pages in an ffmpeg-made Ogg file carry 20 ms each.
const OGG_PAGE: Duration = Duration::from_millis(20);

pub async fn run(args: &Args) -> Result<()> {
    let ivf = args.ivf.as_deref().context("publish needs --ivf FILE")?;
    let video = codec(MIME_TYPE_VP8, 90_000, 0, 96);
    let audio = codec(MIME_TYPE_OPUS, 48_000, 2, 111);
    let mut media = MediaEngine::default();
    media.register_codec(video.clone(), RtpCodecKind::Video)?;
    media.register_codec(audio.clone(), RtpCodecKind::Audio)?;
    let mut peer = Peer::new(media, &args.dtls, &args.url).await?;

    let video_track = add_track(&peer, RtpCodecKind::Video, &video).await?;
    let audio_track = match &args.ogg {
        Some(_) => Some(add_track(&peer, RtpCodecKind::Audio, &audio).await?),
        None => None,
    };

    let started = Instant::now();
    let resource = peer.negotiate(&args.url, args.key.as_deref()).await?;
    let connect_ms = started.elapsed().as_millis();
    eprintln!(
        "webrtc-rs: publishing to {} after {connect_ms} ms",
        args.url
    );

    let until = Instant::now() + args.duration;
    let audio_task = match (&args.ogg, audio_track) {
        (Some(path), Some(track)) => Some(tokio::spawn(send_ogg(path.clone(), track, until))),
        _ => None,
    };
    let frames = send_ivf(ivf, video_track, until, &peer).await?;
    let audio_pages = match audio_task {
        Some(task) => task.await??,
        None => 0,
    };
    let delete = peer.hang_up(&resource, args.key.as_deref()).await?;
    println!(
        "{}",
        json!({
            "connect_ms": connect_ms,
            "video_frames": frames,
            "audio_pages": audio_pages,
            "delete_status": delete,
        })
    );
    Ok(())
}

fn codec(mime: &str, clock_rate: u32, channels: u16, payload_type: u8) -> RTCRtpCodecParameters {
    let feedback = if channels == 0 {
        ["nack", "nack pli", "ccm fir"]
            .iter()
            .map(|fb| {
                let (typ, parameter) = fb.split_once(' ').unwrap_or((fb, ""));
                RTCPFeedback {
                    typ: typ.to_owned(),
                    parameter: parameter.to_owned(),
                }
            })
            .collect()
    } else {
        vec![]
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate,
            channels,
            sdp_fmtp_line: if channels == 2 {
                "minptime=10;useinbandfec=1".to_owned()
            } else {
                String::new()
            },
            rtcp_feedback: feedback,
        },
        payload_type,
    }
}

struct Outgoing {
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    payload_type: PayloadType,
}

async fn add_track(
    peer: &Peer,
    kind: RtpCodecKind,
    codec: &RTCRtpCodecParameters,
) -> Result<Outgoing> {
    let ssrc = rand_ssrc(kind);
    let track = Arc::new(TrackLocalStaticSample::new(
        Instant::now(),
        MediaStreamTrack::new(
            "webrtc-rs".to_owned(),
            format!("webrtc-rs-{kind}"),
            format!("webrtc-rs {kind}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec.rtp_codec.clone(),
                ..Default::default()
            }],
        ),
    )?);
    peer.pc
        .add_transceiver_from_track(
            Arc::clone(&track) as Arc<dyn TrackLocal>,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                ..Default::default()
            }),
        )
        .await?;
    Ok(Outgoing {
        track,
        ssrc,
        payload_type: codec.payload_type,
    })
}

/// Distinct SSRCs per run without a random-number crate: the clock's nanoseconds.
fn rand_ssrc(kind: RtpCodecKind) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(1);
    nanos
        ^ if kind == RtpCodecKind::Video {
            0x5a5a_0000
        } else {
            0xa5a5
        }
}

/// Sends the IVF file's frames at its frame rate, from the start again at its end.
async fn send_ivf(path: &str, out: Outgoing, until: Instant, peer: &Peer) -> Result<u64> {
    let mut frames = 0;
    while Instant::now() < until {
        let (mut ivf, header) = IVFReader::new(BufReader::new(
            File::open(path).with_context(|| path.to_owned())?,
        ))?;
        let frame_time = Duration::from_secs_f64(
            f64::from(header.timebase_numerator) / f64::from(header.timebase_denominator),
        );
        let mut tick = tokio::time::interval(frame_time);
        while let Ok((frame, _)) = ivf.parse_next_frame() {
            tick.tick().await;
            if Instant::now() >= until || !peer.is_connected() {
                return Ok(frames);
            }
            let sample = Sample {
                data: frame.freeze(),
                duration: frame_time,
                ..Sample::new(Instant::now())
            };
            out.track
                .sample_writer(out.ssrc, out.payload_type)
                .write_sample(&sample)
                .await?;
            frames += 1;
        }
    }
    Ok(frames)
}

/// Sends the Ogg file's Opus pages every 20 ms, from the start again at its end.
async fn send_ogg(path: String, out: Outgoing, until: Instant) -> Result<u64> {
    let mut pages = 0;
    let mut tick = tokio::time::interval(OGG_PAGE);
    while Instant::now() < until {
        let file = File::open(&path).with_context(|| path.clone())?;
        let (mut ogg, _) = OggReader::new(BufReader::new(file), true)?;
        let mut last_granule = 0;
        while let Ok((page, header)) = ogg.parse_next_page() {
            let samples = header.granule_position.saturating_sub(last_granule);
            last_granule = header.granule_position;
            if samples == 0 {
                continue; // the Opus header pages
            }
            tick.tick().await;
            if Instant::now() >= until {
                return Ok(pages);
            }
            let sample = Sample {
                data: page.freeze(),
                duration: Duration::from_micros(samples * 1_000_000 / 48_000),
                ..Sample::new(Instant::now())
            };
            out.track
                .sample_writer(out.ssrc, out.payload_type)
                .write_sample(&sample)
                .await?;
            pages += 1;
        }
    }
    Ok(pages)
}
