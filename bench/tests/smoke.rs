//! The load generator end to end: a few viewers of a real server (the debug build that
//! `scripts/test` makes), and the table row it prints for them.

use std::path::Path;
use std::process::Command;

#[test]
fn a_few_viewers_join_a_real_server_and_the_row_counts_them_all_with_no_loss() {
    let bench = Path::new(env!("CARGO_BIN_EXE_starling-bench"));
    let server = bench.with_file_name("starling");
    assert!(
        server.exists(),
        "{} is missing: build it first (cargo build --workspace --bins)",
        server.display()
    );
    let dir = std::env::temp_dir().join(format!("starling-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let recorded = dir.join("BENCHMARKS.md");
    std::fs::write(&recorded, RECORDED).unwrap();
    let out = Command::new(bench)
        .args(["--viewers", "4", "--seconds", "2", "--warmup-secs", "2"])
        .args([
            "--bitrate-kbps",
            "1000",
            "--gop-secs",
            "1",
            "--full-every",
            "2",
        ])
        .args(["--server-cpu", "none", "--server-bin"])
        .arg(&server)
        .arg("--record")
        .arg(&recorded)
        .output()
        .expect("starling-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| 4 |"))
        .unwrap_or_else(|| panic!("no row for 4 viewers in:\n{stdout}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // | viewers | connected | join | loss | late | e2e | server-added | CPU | memory | generator |
    assert_eq!(cells[2], "4", "all connected: {row}");
    let loss: f64 = cells[4]
        .split(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("loss in {row}"));
    assert!(loss < 1.0, "{row}");
    assert!(
        cells[3].ends_with("ms") && cells[9].ends_with("KiB"),
        "{row}"
    );
    assert!(!stdout.contains("first errors"), "{stdout}");

    // The table went into the file between the markers, with the command that measured it.
    let file = std::fs::read_to_string(&recorded).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let (before, rest) = file.split_once("<!-- starling-bench:begin -->\n").unwrap();
    let (section, after) = rest.split_once("<!-- starling-bench:end -->").unwrap();
    assert_eq!(before, "# Benchmarks\n\n");
    assert_eq!(after, "\n\nLater text.\n");
    assert!(!section.contains("an old table"), "{section}");
    assert!(section.contains(row), "{section}");
    assert!(
        section.contains("with `starling-bench --viewers 4 --seconds 2 --warmup-secs 2"),
        "{section}"
    );
}

const RECORDED: &str = "# Benchmarks\n\n<!-- starling-bench:begin -->\nan old table\n<!-- starling-bench:end -->\n\nLater text.\n";

#[test]
fn a_file_without_markers_is_refused_before_anything_runs() {
    let bench = Path::new(env!("CARGO_BIN_EXE_starling-bench"));
    let dir = std::env::temp_dir().join(format!("starling-bench-refused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("notes.md");
    std::fs::write(&file, "# Notes\n").unwrap();
    let out = Command::new(bench)
        .args(["--viewers", "4", "--server-bin", "/nonexistent", "--record"])
        .arg(&file)
        .output()
        .expect("starling-bench runs");
    let left = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // Refused at the start: a run would have failed on the missing server instead.
    assert!(stderr.contains("<!-- starling-bench:begin"), "{stderr}");
    assert_eq!(left, "# Notes\n", "the file was changed");
}
