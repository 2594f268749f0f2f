//! Input the `poh-storage` binary reads (`save --tx`, `import`) that is refused before it
//! reaches the store: a tx that is a JSON array rather than an object, and an `import` line
//! longer than any tx the payload limit allows (refused while it is read, so memory stays
//! bounded whatever the line's length).

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::cli::{Scratch, assert_same_files, tx_json};

/// `poh-storage ARGS` with `stdin`; returns (exit code, stdout, stderr).
fn run(s: &Scratch, args: &[&str], stdin: &[u8]) -> (Option<i32>, String, String) {
    let out = s
        .cmd()
        .args(args)
        .write_stdin(stdin.to_vec())
        .output()
        .expect("run poh-storage");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_tx_given_as_a_json_array_is_refused_by_save_and_import() {
    let s = Scratch::new();
    s.save("kept", 1.0, b"kept");
    let before = s.snapshot();
    let array = r#"["id","h",1700000000,"aGk="]"#;

    let (code, stdout, stderr) = run(&s, &["save", "--tx", array], b"");
    assert_eq!(code, Some(2), "save --tx <array>: {stderr}");
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("invalid --tx") && stderr.contains("a transaction must be a JSON object"),
        "{stderr}"
    );
    assert_same_files(&before, &s.snapshot(), "save --tx <array>");

    let (code, _, stderr) = run(&s, &["save", "--tx", "-"], array.as_bytes());
    assert_eq!(code, Some(2), "save --tx - <array>: {stderr}");
    assert!(
        stderr.contains("a transaction must be a JSON object"),
        "{stderr}"
    );
    assert_same_files(&before, &s.snapshot(), "save --tx - <array>");

    // In an import, the array line stops it like any bad line: the lines before are saved.
    let input = format!(
        "{}\n{array}\n{}\n",
        tx_json("a1", 1.0, b"one"),
        tx_json("a3", 3.0, b"three")
    );
    let (code, stdout, stderr) = run(&s, &["import", "-"], input.as_bytes());
    assert_eq!(code, Some(2), "import: {stderr}");
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("stdin line 2")
            && stderr.contains("a transaction must be a JSON object, got an array"),
        "{stderr}"
    );
    assert_eq!(s.list(), ["a1", "kept"]);
}

/// The longest `import` line accepted with `--max-payload 16`: the base64 of 16 bytes (24
/// characters) plus 64 KiB for the other fields.
const LIMIT_16: usize = 24 + 64 * 1024;

/// A valid tx line padded with spaces (JSON allows them) to exactly `len` bytes, without
/// its newline.
fn padded_line(id: &str, ts: f64, payload: &[u8], len: usize) -> String {
    let doc = tx_json(id, ts, payload);
    assert!(doc.len() <= len, "{id}: document longer than {len}");
    format!("{doc}{}", " ".repeat(len - doc.len()))
}

#[test]
fn an_import_line_over_the_limit_stops_the_import_naming_the_line_and_the_limit() {
    let s = Scratch::new();
    s.save("kept", 1.0, b"kept");
    // Line 2 is exactly as long as allowed and is saved; line 3 is one byte longer.
    let input = format!(
        "{}\n{}\n{}\n{}\n",
        tx_json("a1", 1.0, b"one"),
        padded_line("a2", 2.0, b"two", LIMIT_16),
        padded_line("a3", 3.0, b"three", LIMIT_16 + 1),
        tx_json("a4", 4.0, b"four"),
    );
    let (code, stdout, stderr) = run(
        &s,
        &["--max-payload", "16", "import", "-"],
        input.as_bytes(),
    );
    assert_eq!(code, Some(2), "import: {stderr}");
    assert_eq!(stdout, "");
    for word in [
        "stdin line 3",
        &format!("longer than {LIMIT_16} bytes"),
        "--max-payload",
        "the 2 tx(s) before the error were saved",
    ] {
        assert!(
            stderr.contains(word),
            "stderr {stderr:?} should mention {word:?}"
        );
    }
    assert_eq!(s.list(), ["a1", "a2", "kept"]);
    s.ok(&["verify"]);

    // The same over-long line as the first line, without a newline at the end of the input:
    // nothing is saved and the store is left as it was.
    let before = s.snapshot();
    let line = padded_line("b1", 1.0, b"b", LIMIT_16 + 1);
    let (code, _, stderr) = run(&s, &["--max-payload", "16", "import", "-"], line.as_bytes());
    assert_eq!(code, Some(2), "import: {stderr}");
    assert!(stderr.contains("stdin line 1"), "{stderr}");
    assert_same_files(&before, &s.snapshot(), "an over-long first line");
    // Without a newline at the end, a line of exactly the limit is still read whole.
    let line = padded_line("b2", 1.0, b"b", LIMIT_16);
    s.cmd()
        .args(["--max-payload", "16", "import", "-"])
        .write_stdin(line)
        .assert()
        .success();
    assert!(s.list().contains(&"b2".to_owned()));
}

/// The exit status and peak resident memory (KiB) of the child `pid`, waited for here
/// (`std` gives no access to a child's resource usage).
#[allow(unsafe_code)]
fn wait_for_peak_rss_kib(pid: u32) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: `rusage` is plain data (all zeroes is a valid value) that wait4 fills in;
    // `pid` is our own child, not yet waited for, and both pointers are to live locals.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(
        r,
        pid as libc::pid_t,
        "wait4: {}",
        std::io::Error::last_os_error()
    );
    assert!(
        libc::WIFEXITED(status),
        "child did not exit normally: {status}"
    );
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

#[test]
// The child is reaped by `wait4` (which also reports its peak memory), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn an_endless_line_is_refused_after_reading_at_most_the_limit() {
    // A 64 MiB line streamed in 64 KiB pieces (the test never holds it), against a limit
    // of 64 KiB + 24 bytes: the reader stops at the limit, so the process never holds more
    // than that of the line, where reading the whole line first took its full size.
    const LINE: usize = 64 * 1024 * 1024;
    let s = Scratch::new();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("poh-storage"))
        .current_dir(s.path())
        .env_remove("POH_BASE")
        .env_remove("POH_DB")
        .env_remove("POH_MAX_PAYLOAD")
        .args(["--max-payload", "16", "import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start poh-storage");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'A'; 64 * 1024];
        let mut sent = 0;
        let _ = stdin.write_all(br#"{"tx_id":"big","holder_id":"h","timestamp":1,"payload":""#);
        while sent < LINE {
            // The reader stops early and exits: a broken pipe ends the writing.
            if stdin.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        let _ = stdin.write_all(b"\"}\n");
        sent
    });
    let (code, peak_kib) = wait_for_peak_rss_kib(child.id());
    let sent = writer.join().expect("writer thread");
    eprintln!(
        "peak RSS {peak_kib} KiB; {sent} bytes of the line written before the reader stopped"
    );
    assert_eq!(code, 2, "exit status");
    assert!(
        peak_kib < 32 * 1024,
        "peak RSS {peak_kib} KiB for a {} MiB line ({sent} bytes written before the reader stopped)",
        LINE >> 20
    );
    assert!(
        !s.base().exists(),
        "an import whose first line is bad creates no store"
    );
}
