//! Small utilities every layer uses: atomic writes, timestamps and tails of long text. A leaf: it
//! imports no other meshcheck module.

use std::{io::Write, path::Path};

/// Writes a file atomically: a temp file in the same folder, then rename. Creates parent folders.
///
/// The temp file has a random name and is created with `create_new` (`O_CREAT | O_EXCL`, which
/// refuses an existing path, a symlink included: open(2)): `judge` writes into run folders that
/// came from elsewhere, and a symlink planted under a predictable temp name would otherwise make
/// the write land outside the folder. The rename replaces a link at `path` itself, never its target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(
        ".{}.{:016x}.tmp",
        path.file_name().map(|s| s.to_string_lossy()).unwrap_or_default(),
        u64::from_le_bytes(nonce)
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Current time, RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The first line of a (possibly multi-line) message, for one-line summaries.
pub fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// The last `max` bytes of text, cut at a character boundary, marked when cut.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[… {start} bytes cut …]{}", &text[start..])
}

/// Reads a file of a run folder that may come from elsewhere (`judge`, `compare`): only a regular
/// file, not through a symlink (which could lead out of the folder), at most `max` bytes (a FIFO
/// would block for ever, `/dev/zero` or a huge file would fill memory). The errors say which.
pub fn read_run_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let refused = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Err(refused("a symlink; files of a run folder are read only as regular files".into()));
    }
    if !meta.is_file() {
        return Err(refused("not a regular file (a FIFO, socket or device)".into()));
    }
    if meta.len() > max {
        return Err(refused(format!("{} bytes, more than the {max} a run folder's file may have", meta.len())));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(refused(format!("more than the {max} bytes a run folder's file may have")));
    }
    Ok(bytes)
}

/// Most bytes of `run.json`, `junit.xml` or one evidence file read from a run folder: far above a
/// 1000-node run's largest (a Prometheus targets list of a few MiB).
pub const RUN_FILE_MAX: u64 = 256 << 20;

/// Text safe to print on a terminal: control characters other than newline and tab (ESC starts
/// terminal escape sequences, which a run folder from elsewhere may carry in its verdicts) and
/// C1 controls are written as `\u{..}`.
pub fn printable(text: &str) -> String {
    // `is_control` is Unicode's Cc: the C0 controls, DEL and the C1 controls.
    escaped_unless(text, |c| !c.is_control() || c == '\n' || c == '\t')
}

/// Text that XML 1.0 can hold: characters outside its `Char` production (C0 controls other than
/// tab, newline and carriage return, surrogates, U+FFFE and U+FFFF; XML 1.0 §2.2) are written as
/// `\u{..}`. Not even a character reference may stand for them, so a JUnit file with one is invalid.
pub fn xml_chars(text: &str) -> String {
    let allowed = |c: char| {
        matches!(c, '\t' | '\n' | '\r')
            || ('\u{20}'..='\u{d7ff}').contains(&c)
            || ('\u{e000}'..='\u{fffd}').contains(&c)
            || c >= '\u{10000}'
    };
    escaped_unless(text, allowed)
}

/// `text` with every character that `allowed` refuses written as `\u{..}`.
fn escaped_unless(text: &str, allowed: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if allowed(c) {
            out.push(c);
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_never_follows_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, "theirs").unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        // The old predictable temp name, and the file itself, both planted as links outside.
        std::os::unix::fs::symlink(&outside, run.join(format!(".summary.md.tmp{}", std::process::id()))).unwrap();
        std::os::unix::fs::symlink(&outside, run.join("summary.md")).unwrap();
        write_atomic(&run.join("summary.md"), b"ours").unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "theirs");
        assert_eq!(std::fs::read_to_string(run.join("summary.md")).unwrap(), "ours");
        assert!(!run.join("summary.md").is_symlink(), "the link itself was replaced");
    }

    #[test]
    fn tails_cut_at_char_boundaries() {
        let t = tail("ééééé", 3);
        assert!(t.ends_with('é'));
    }
}
