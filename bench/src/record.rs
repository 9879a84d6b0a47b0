//! `--record FILE`: writes the run's table into a file (BENCHMARKS.md) between two marker lines,
//! with the command and machine that measured it, so the table there is the one the command
//! printed and not a copy edited by hand.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// The line that starts the recorded section (the rest of that line is kept as written).
pub const BEGIN: &str = "<!-- starling-bench:begin";
/// The line that ends it.
pub const END: &str = "<!-- starling-bench:end -->";

/// `text` with everything between the begin marker's line and the end marker replaced by
/// `section`. Exactly one section must be there, begin before end.
pub fn replace_section(text: &str, section: &str) -> Result<String> {
    let begin = text
        .find(BEGIN)
        .with_context(|| format!("no line starting `{BEGIN}` to record the table after"))?;
    let body = begin
        + text[begin..]
            .find('\n')
            .context("nothing after the begin marker's line")?
        + 1;
    let end = body
        + text[body..]
            .find(END)
            .with_context(|| format!("no `{END}` after the begin marker"))?;
    if text[body..].contains(BEGIN) || text[end + END.len()..].contains(END) {
        bail!("more than one recorded section; keep one pair of markers");
    }
    Ok(format!(
        "{}{}\n{}",
        &text[..body],
        section.trim_end(),
        &text[end..]
    ))
}

/// Checks now that `path` can take a section, so a long run does not end in an error.
pub fn check(path: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    replace_section(&text, "").with_context(|| format!("in {}", path.display()))?;
    Ok(())
}

/// Replaces the recorded section of `path` with `section` (through a temporary file, so an
/// interrupted write leaves the old file).
pub fn write(path: &Path, section: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let new = replace_section(&text, section).with_context(|| format!("in {}", path.display()))?;
    let tmp = path.with_extension("recording");
    std::fs::write(&tmp, new).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Today's date in UTC, `YYYY-MM-DD`.
pub fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    date(secs)
}

/// The UTC date of a Unix time (days to civil date, after Howard Hinnant's algorithm).
fn date(unix_secs: u64) -> String {
    let z = (unix_secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# Benchmarks\n\nintro\n\n<!-- starling-bench:begin: written by bench/run -->\nold table\nold note\n<!-- starling-bench:end -->\n\nlater text\n";

    #[test]
    fn the_section_is_replaced_and_everything_around_it_kept() {
        let new = replace_section(FILE, "| new |\n").unwrap();
        assert_eq!(
            new,
            "# Benchmarks\n\nintro\n\n<!-- starling-bench:begin: written by bench/run -->\n| new |\n<!-- starling-bench:end -->\n\nlater text\n"
        );
        assert_eq!(
            replace_section(&new, "| newer |")
                .unwrap()
                .matches("| new")
                .count(),
            1
        );
    }

    #[test]
    fn missing_misplaced_or_doubled_markers_are_refused() {
        let no_begin = FILE.replace(BEGIN, "<!-- other");
        let no_end = FILE.replace(END, "");
        let end_first = format!("{END}\n{}", FILE.replace(END, ""));
        let doubled = format!("{FILE}{FILE}");
        for text in [&no_begin, &no_end, &end_first, &doubled] {
            assert!(replace_section(text, "x").is_err(), "{text}");
        }
        let err = replace_section(&no_begin, "x").unwrap_err().to_string();
        assert!(err.contains(BEGIN), "{err}");
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_795_478_400 + 86_399), "2026-11-24");
        assert_eq!(date(1_795_478_400 + 86_400), "2026-11-25");
    }
}
