//! The node's log: human-readable lines, coloured only on a terminal, or JSON objects (one a
//! line) for log shippers. `RUST_LOG` picks what is logged (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event; ANSI colours only when stdout is a terminal and
    /// `NO_COLOR` is unset.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`, `spans`.
    Json,
}

/// Installs the global subscriber.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => {
            let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .with_current_span(false)
            .with_span_list(true)
            .init(),
    }
}
