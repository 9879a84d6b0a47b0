//! A bounded, iterative walk over AMF0 values, run on every AMF message before rml_amf0 parses
//! it. rml_amf0 recurses once per nested object or array with no limit: one 2 MB message of
//! nested strict arrays overflowed a worker thread's stack and aborted the process. This walk
//! follows rml_amf0's grammar exactly (the same markers, the same short reads), keeps its own
//! stack, and refuses a message nested deeper than a limit. Pure; allocates only its stack.

/// Nesting depth allowed. OBS and ffmpeg send objects two deep (`connect`'s command object,
/// `onMetaData`'s ECMA array); rml_amf0 uses a few hundred bytes of stack per level.
pub(crate) const MAX_DEPTH: usize = 16;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0a;

/// Why an AMF0 message was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Amf0Error {
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("AMF0 nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Not AMF0 that rml_amf0 would accept.
    #[error("malformed AMF0")]
    Malformed,
}

/// What a value being read is inside of.
enum Open {
    /// An object or ECMA array: properties until the end marker.
    Object,
    /// A strict array with this many values still to come.
    Array(u32),
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Amf0Error> {
        if self.bytes.len() < n {
            return Err(Amf0Error::Malformed);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Amf0Error> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<usize, Amf0Error> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u32(&mut self) -> Result<u32, Amf0Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Up to `n` bytes of UTF-8: rml_amf0 reads strings with one `read`, which takes what is
    /// left at the end of the message without an error.
    fn text(&mut self, n: usize) -> Result<(), Amf0Error> {
        let n = n.min(self.bytes.len());
        let text = self.take(n)?;
        std::str::from_utf8(text).map_err(|_| Amf0Error::Malformed)?;
        Ok(())
    }
}

/// What reading one value found.
enum Value {
    /// The end of the input, or an object-end marker where a value could start.
    End,
    /// A whole value with nothing inside.
    Flat,
    /// The start of a value that holds others.
    Opens(Open),
}

fn value(r: &mut Reader<'_>) -> Result<Value, Amf0Error> {
    let Ok(marker) = r.u8() else {
        return Ok(Value::End);
    };
    Ok(match marker {
        OBJECT_END => Value::End,
        NUMBER => {
            r.take(8)?;
            Value::Flat
        }
        BOOLEAN => {
            r.take(1)?;
            Value::Flat
        }
        NULL | UNDEFINED => Value::Flat,
        STRING => {
            let len = r.u16()?;
            r.text(len)?;
            Value::Flat
        }
        OBJECT => Value::Opens(Open::Object),
        ECMA_ARRAY => {
            r.u32()?;
            Value::Opens(Open::Object)
        }
        STRICT_ARRAY => Value::Opens(Open::Array(r.u32()?)),
        _ => return Err(Amf0Error::Malformed),
    })
}

/// Checks the AMF0 values of one message (a command or data message's body): refused if
/// nested deeper than [`MAX_DEPTH`] or if rml_amf0 would refuse it; else how many values it
/// has at the top level.
pub(crate) fn check(bytes: &[u8]) -> Result<usize, Amf0Error> {
    let mut r = Reader { bytes };
    let mut stack: Vec<Open> = Vec::new();
    let mut values = 0;
    loop {
        let found = match stack.last_mut() {
            // The top level: values until the input (or an object-end marker) ends them.
            None => match value(&mut r)? {
                Value::End => return Ok(values),
                found => {
                    values += 1;
                    found
                }
            },
            Some(Open::Array(0)) => {
                stack.pop();
                continue;
            }
            Some(Open::Array(left)) => {
                *left -= 1;
                match value(&mut r)? {
                    // An end marker (or the end of input) ends the array early.
                    Value::End => {
                        stack.pop();
                        continue;
                    }
                    found => found,
                }
            }
            Some(Open::Object) => {
                let label = r.u16()?;
                if label == 0 {
                    if r.u8()? != OBJECT_END {
                        return Err(Amf0Error::Malformed);
                    }
                    stack.pop();
                    continue;
                }
                r.text(label)?;
                match value(&mut r)? {
                    Value::End => return Err(Amf0Error::Malformed),
                    found => found,
                }
            }
        };
        if let Value::Opens(open) = found {
            if stack.len() == MAX_DEPTH {
                return Err(Amf0Error::TooDeep);
            }
            stack.push(open);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::rml_amf0::{self, Amf0Value};
    use std::collections::HashMap;

    fn nested_arrays(depth: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        for _ in 0..depth {
            bytes.extend_from_slice(&[STRICT_ARRAY, 0, 0, 0, 1]);
        }
        bytes.push(NULL);
        bytes
    }

    #[test]
    fn what_obs_sends_passes() {
        let mut object = HashMap::new();
        object.insert("app".to_owned(), Amf0Value::Utf8String("live".into()));
        object.insert(
            "tcUrl".to_owned(),
            Amf0Value::Utf8String("rtmp://h/live".into()),
        );
        let mut meta = HashMap::new();
        meta.insert("width".to_owned(), Amf0Value::Number(1280.0));
        meta.insert("encoder".to_owned(), Amf0Value::Utf8String("obs".into()));
        let values = vec![
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Object(object),
            Amf0Value::Null,
            Amf0Value::Boolean(true),
            Amf0Value::StrictArray(vec![Amf0Value::Number(1.0), Amf0Value::Object(meta)]),
        ];
        let bytes = rml_amf0::serialize(&values).expect("serialize");
        assert_eq!(check(&bytes), Ok(6));
    }

    #[test]
    fn nesting_is_limited_without_recursion() {
        assert_eq!(check(&nested_arrays(MAX_DEPTH)), Ok(1));
        assert_eq!(
            check(&nested_arrays(MAX_DEPTH + 1)),
            Err(Amf0Error::TooDeep)
        );
        // The message that aborted the process: ~2 MB of nested strict arrays.
        assert_eq!(check(&nested_arrays(400_000)), Err(Amf0Error::TooDeep));
        let objects: Vec<u8> = std::iter::repeat_n([OBJECT, 0, 1, b'a'], 1000)
            .flatten()
            .collect();
        assert_eq!(check(&objects), Err(Amf0Error::TooDeep));
    }

    #[test]
    fn whatever_passes_rml_amf0_also_parses() {
        // Random byte soups: every one the check passes, rml_amf0 parses (shallowly) or
        // refuses; it never recurses past the limit because the check counted the same levels.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut passed = 0;
        for _ in 0..20_000 {
            let len = (seed % 48) as usize;
            let mut bytes = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push([0u8, 1, 2, 3, 5, 8, 9, 10, 0, 1, 0x41, 0xff][(seed % 12) as usize]);
            }
            if check(&bytes).is_ok() {
                passed += 1;
                let _ = rml_amf0::deserialize(&mut std::io::Cursor::new(&bytes));
            }
        }
        assert!(passed > 1000, "the soup is not all refused: {passed}");
    }
}
