use std::fmt;

/// A channel's name, e.g. `alice`: 1 to 64 characters of `A-Z a-z 0-9 _ - .`, not starting
/// with `.`, so it is safe in URLs, paths and log lines.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ChannelName(String);

/// The reason a string is not a valid [`ChannelName`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid channel name: use 1-64 characters of A-Z a-z 0-9 _ - . (not starting with .)")]
pub struct InvalidName;

impl ChannelName {
    /// Maximum length in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, InvalidName> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if name.is_empty()
            || name.len() > Self::MAX_LEN
            || name.starts_with('.')
            || !name.chars().all(ok_char)
        {
            return Err(InvalidName);
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ChannelName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for n in ["alice", "a", "Bob_2", "x-y.z", &"a".repeat(64)] {
            assert_eq!(ChannelName::new(n).unwrap().as_str(), n);
        }
    }

    #[test]
    fn rejects_unsafe_names() {
        for n in [
            "",
            ".hidden",
            "a/b",
            "a b",
            "ä",
            "a?key=1",
            &"a".repeat(65),
            "../x",
        ] {
            assert_eq!(ChannelName::new(n), Err(InvalidName), "{n:?}");
        }
    }
}
