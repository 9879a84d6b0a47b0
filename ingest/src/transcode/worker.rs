//! AAC -> Opus on a thread of its own, one per transcoding publisher, so decoding and encoding
//! never run on the async workers: a publisher whose audio is costly to transcode slows its own
//! audio, not the node. Frames wait in a bounded queue; when it is full they are dropped.

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use media::{Frame, TrackProducer};
use tracing::{debug, warn};

use super::{AacToOpus, TranscodeError};

/// AAC frames waiting for the transcoder (about 1.4 s at 44.1 kHz).
const QUEUE: usize = 64;

/// One AAC frame to transcode.
struct Input {
    data: Bytes,
    timestamp_ms: u64,
    arrived: Instant,
}

/// A publisher's transcoder thread; the Opus it makes goes to its `audio.opus` track. Dropping
/// this ends the thread once it has finished the frames queued.
pub struct AacWorker {
    tx: SyncSender<Input>,
    describe: String,
    asc: Bytes,
    dropped: u64,
}

impl AacWorker {
    /// Sets the transcoder up from an AudioSpecificConfig (refused here, before any thread
    /// starts) and starts its thread.
    pub fn start(asc: &[u8], audio: Arc<TrackProducer>) -> Result<Self, TranscodeError> {
        let mut transcoder = AacToOpus::new(asc)?;
        let describe = transcoder.describe();
        let (tx, rx) = mpsc::sync_channel::<Input>(QUEUE);
        std::thread::Builder::new()
            .name("aac-to-opus".into())
            .spawn(move || {
                for input in rx {
                    match transcoder.push(&input.data, input.timestamp_ms) {
                        Ok(packets) => {
                            for p in packets {
                                audio.write(Frame::new(
                                    p.timestamp,
                                    p.group_start,
                                    p.data,
                                    input.arrived,
                                ));
                            }
                        }
                        Err(err) => debug!(%err, "dropping undecodable audio frame"),
                    }
                }
            })
            .map_err(|e| TranscodeError::Config(format!("no transcoder thread: {e}")))?;
        Ok(Self {
            tx,
            describe,
            asc: Bytes::copy_from_slice(asc),
            dropped: 0,
        })
    }

    /// Whether this transcoder was set up with `asc` (a repeated configuration changes nothing).
    pub fn is_for(&self, asc: &[u8]) -> bool {
        self.asc == asc
    }

    /// The input format, e.g. `AAC 44100 Hz 2 ch`.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Queues one raw AAC access unit; dropped if the transcoder is behind.
    pub fn push(&mut self, data: &[u8], timestamp_ms: u64, arrived: Instant) {
        let input = Input {
            data: Bytes::copy_from_slice(data),
            timestamp_ms,
            arrived,
        };
        match self.tx.try_send(input) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped += 1;
                if self.dropped.is_power_of_two() {
                    warn!(
                        dropped = self.dropped,
                        "audio transcoder behind; AAC frames dropped"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}
