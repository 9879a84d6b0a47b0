//! Tells keyframes from the RTP payloads of one frame: VP8 (RFC 7741) and H.264 (RFC 6184).

pub struct Detector {
    codec: Codec,
    key: bool,
}

enum Codec {
    Vp8,
    H264,
    Other,
}

impl Detector {
    pub fn new(mime: &str) -> Self {
        let codec = match mime.to_ascii_lowercase().as_str() {
            "video/vp8" => Codec::Vp8,
            "video/h264" => Codec::H264,
            _ => Codec::Other,
        };
        Self { codec, key: false }
    }

    pub fn packet(&mut self, payload: &[u8]) {
        self.key |= match self.codec {
            Codec::Vp8 => vp8_starts_keyframe(payload),
            Codec::H264 => h264_has_idr(payload),
            Codec::Other => false,
        };
    }

    /// Whether the frame that just ended (marker bit) was a keyframe; starts the next frame.
    pub fn end_of_frame(&mut self) -> bool {
        std::mem::take(&mut self.key)
    }
}

fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let start_of_partition = first & 0x10 != 0;
    let partition_zero = first & 0x07 == 0;
    if !start_of_partition || !partition_zero {
        return false;
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        let Some(&ext) = payload.get(1) else {
            return false;
        };
        at = 2;
        if ext & 0x80 != 0 {
            let long_picture_id = payload.get(at).is_some_and(|b| b & 0x80 != 0);
            at += if long_picture_id { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1;
        }
        if ext & 0x30 != 0 {
            at += 1;
        }
    }
    // The VP8 payload header's P bit is 0 on a keyframe.
    payload.get(at).is_some_and(|b| b & 0x01 == 0)
}

fn h264_has_idr(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    match payload.first().map(|b| b & 0x1f) {
        Some(IDR) => true,
        Some(24) => {
            // STAP-A: 16-bit sizes, each followed by a NAL unit.
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                if rest.get(2).is_some_and(|b| b & 0x1f == IDR) {
                    return true;
                }
                rest = rest.get(2 + size..).unwrap_or_default();
            }
            false
        }
        // FU-A: the start fragment of an IDR slice.
        Some(28) => payload
            .get(1)
            .is_some_and(|b| b & 0x80 != 0 && b & 0x1f == IDR),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_with_extended_descriptor() {
        // X=1 S=1 PID=0; I=1 with a 15-bit picture id; payload header P=0.
        let mut detector = Detector::new("video/VP8");
        detector.packet(&[0x90, 0x80, 0x81, 0x23, 0x10]);
        assert!(detector.end_of_frame());
        detector.packet(&[0x90, 0x80, 0x81, 0x24, 0x11]);
        assert!(!detector.end_of_frame());
    }

    #[test]
    fn h264_idr_in_fu_a_and_stap_a() {
        let mut detector = Detector::new("video/H264");
        detector.packet(&[0x7c, 0x85, 0xaa]);
        assert!(detector.end_of_frame());
        detector.packet(&[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x65]);
        assert!(detector.end_of_frame());
        detector.packet(&[0x7c, 0x81, 0xaa]);
        assert!(!detector.end_of_frame());
    }
}
