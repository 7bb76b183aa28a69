//! Workflow commands: nothing kdeploy prints can be read by the GitHub
//! Actions runner as a command unless kdeploy meant it.
//!
//! The runner reads every line a step prints (lines end at `\n`, `\r\n`
//! or a lone `\r`, as .NET's `ReadLine` splits them) and runs it as a
//! command when, after leading white space, it starts with `::` (the
//! current syntax) or when it contains `##[` anywhere (the old one, still
//! parsed). Repository text (a ConfigMap value, a file name in an error, a
//! diff line) must never do that: `::add-mask::` would hide the log,
//! `::stop-commands::` would switch off kdeploy's own annotations, and
//! `::error file=…` would forge findings.
//!
//! [`neutralize`] breaks such lines with a zero-width space between the two
//! characters the runner looks for (the log still reads `::` and `##[`);
//! [`Guard`] does it for everything written through it, and lets kdeploy's
//! own commands through only by [`Guard::command`]. It must not decide by
//! content which lines are kdeploy's: content is what an attacker writes.

use std::borrow::Cow;
use std::io::{self, Write};

/// Inserted between the characters of a command prefix; not white space
/// for the runner's `TrimStart`, invisible in the log.
const BREAK: char = '\u{200B}';

/// `text` with every line that the runner would read as a workflow command
/// broken so that it is plain text. Borrowed when nothing needed breaking.
pub fn neutralize(text: &str) -> Cow<'_, str> {
    if !needs_breaking(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut at_line_start = true;
    for (i, c) in text.char_indices() {
        if c == '\n' || c == '\r' {
            out.push(c);
            at_line_start = true;
            continue;
        }
        if at_line_start && c.is_whitespace() {
            out.push(c);
            continue;
        }
        if at_line_start && c == ':' && text[i + 1..].starts_with(':') {
            out.push(':');
            out.push(BREAK);
            at_line_start = false;
            continue;
        }
        at_line_start = false;
        if c == '#' && text[i + 1..].starts_with("#[") {
            out.push('#');
            out.push(BREAK);
            continue;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// Cheap test first: most text holds neither `::` nor `##[`.
fn needs_breaking(text: &str) -> bool {
    let bytes = text.as_bytes();
    if memchr::memmem::find(bytes, b"##[").is_some() {
        return true;
    }
    memchr::memmem::find_iter(bytes, b"::").any(|at| {
        text[..at]
            .rsplit(['\n', '\r'])
            .next()
            .is_some_and(|before| before.chars().all(char::is_whitespace))
    })
}

/// A writer that neutralizes every line written through it, whole lines at
/// a time (a prefix split over two writes is still seen); its owner prints
/// its own workflow commands with [`Guard::command`].
pub struct Guard<W: Write> {
    inner: W,
    pending: Vec<u8>,
}

impl<W: Write> Guard<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Guard {
            inner,
            pending: Vec::new(),
        }
    }

    /// Prints one workflow command of kdeploy's own, on a line of its own.
    /// Its data must already be escaped (`%`, `\r`, `\n`) by the caller:
    /// a line break in it ends the command and what follows is neutralized.
    ///
    /// # Errors
    /// Writing to the inner writer.
    pub fn command(&mut self, line: &str) -> io::Result<()> {
        self.finish_line()?;
        let (own, rest) = line.split_once(['\n', '\r']).unwrap_or((line, ""));
        self.inner.write_all(own.as_bytes())?;
        self.inner.write_all(b"\n")?;
        if !rest.is_empty() {
            writeln!(self, "{rest}")?;
        }
        Ok(())
    }

    /// Ends a partial line so that a command starts on a line of its own.
    fn finish_line(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.pending.push(b'\n');
            self.emit_pending()?;
        }
        Ok(())
    }

    fn emit_pending(&mut self) -> io::Result<()> {
        let chunk = std::mem::take(&mut self.pending);
        let text = String::from_utf8_lossy(&chunk);
        self.inner.write_all(neutralize(&text).as_bytes())
    }
}

impl<W: Write> Write for Guard<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match buf.iter().rposition(|b| *b == b'\n' || *b == b'\r') {
            None => self.pending.extend_from_slice(buf),
            Some(last) if self.pending.is_empty() => {
                let whole = String::from_utf8_lossy(&buf[..=last]);
                self.inner.write_all(neutralize(&whole).as_bytes())?;
                self.pending.extend_from_slice(&buf[last + 1..]);
            }
            Some(last) => {
                self.pending.extend_from_slice(&buf[..=last]);
                self.emit_pending()?;
                self.pending.extend_from_slice(&buf[last + 1..]);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.emit_pending()?;
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for Guard<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Whether the runner would read `line` as a workflow command: after
/// leading white space it starts with `::`, or it holds `##[`.
pub fn is_command(line: &str) -> bool {
    line.trim_start().starts_with("::") || line.contains("##[")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_line_of_neutralized_text_is_a_command() {
        let hostile = "ok\n::add-mask::x\n  ::error file=a::forged\r::stop-commands::t\r\nkey: ##[set-output name=a;]b\n\u{a0}::warning::w";
        let out = neutralize(hostile);
        for line in out.split(['\n', '\r']) {
            assert!(!is_command(line), "still a command: {line:?}");
        }
        // What a reader sees is unchanged but for the invisible break.
        assert_eq!(out.replace(BREAK, ""), hostile);
        assert!(matches!(neutralize("a: b::c\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_prefix_split_over_writes_is_still_seen_and_own_commands_pass() {
        let mut out = Vec::new();
        {
            let mut g = Guard::new(&mut out);
            g.write_all(b"first\n:").unwrap();
            g.write_all(b":add-mask::secret\n").unwrap();
            g.command("::group::Plan").unwrap();
            g.write_all(b"tail without newline").unwrap();
            g.command("::endgroup::\n::add-mask::smuggled").unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let commands: Vec<&str> = text.lines().filter(|l| is_command(l)).collect();
        assert_eq!(commands, ["::group::Plan", "::endgroup::"], "{text}");
        assert!(text.contains("tail without newline\n"));
    }
}
