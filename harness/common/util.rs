//! Small utilities every layer uses: atomic writes, timestamps and tails of long text. A leaf: it
//! imports no other meshcheck module.

use std::{io::Write, path::Path};

/// Writes a file atomically: a temp file in the same folder, then rename. Creates parent folders.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().map(|s| s.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_cut_at_char_boundaries() {
        let t = tail("ééééé", 3);
        assert!(t.ends_with('é'));
    }
}
