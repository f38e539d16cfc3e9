//! [`Remote`]: a value from the wire, escaped and cut for a log line.

use std::fmt::{self, Write as _};

/// Most bytes of a [`Remote`] value written to a log (escapes included);
/// what is past it is cut and replaced by `...[N more bytes]`, `N` counting
/// the bytes of the original text left out.
pub const MAX_FIELD_BYTES: usize = 256;

/// A value sent by a remote (a peer or room id, a method name, a close
/// reason, a query string, a header, an error quoting the remote's text),
/// made safe for a log line: control characters and other non-printable
/// ones are escaped (`\n`, `\r`, `\0`, `\u{1b}`, ...), as are backslashes,
/// and the output is cut at [`MAX_FIELD_BYTES`] with a marker of how much
/// was left out.
///
/// Log such a value as `field = %Remote(&value)` (or `?Remote(..)`, which
/// adds quotes): a remote cannot start a line of its own, write terminal
/// escapes or grow the log by more than the cap per field, whatever format
/// the subscriber uses (text or JSON).
///
/// ```
/// use protoo_transport::log::Remote;
///
/// assert_eq!(Remote("alice").to_string(), "alice");
/// assert_eq!(Remote("a\nWARN b\u{1b}[31m").to_string(), r"a\nWARN b\u{1b}[31m");
/// assert_eq!(format!("{:?}", Remote("say \"hi\"")), r#""say \"hi\"""#);
/// let long = "x".repeat(300);
/// assert_eq!(Remote(&long).to_string(), format!("{}...[44 more bytes]", "x".repeat(256)));
/// ```
#[derive(Clone, Copy)]
pub struct Remote<T>(pub T);

impl<T: fmt::Display> fmt::Display for Remote<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, &self.0, false)
    }
}

impl<T: fmt::Display> fmt::Debug for Remote<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        write_escaped(f, &self.0, true)?;
        f.write_char('"')
    }
}

fn write_escaped(
    f: &mut fmt::Formatter<'_>,
    value: &dyn fmt::Display,
    quoted: bool,
) -> fmt::Result {
    let mut out = Escaper {
        out: f,
        written: 0,
        cut: 0,
        quoted,
    };
    write!(out, "{value}")?;
    if out.cut > 0 {
        write!(out.out, "...[{} more bytes]", out.cut)?;
    }
    Ok(())
}

/// Escapes what goes through it, up to [`MAX_FIELD_BYTES`], and counts the
/// bytes past it.
struct Escaper<'a, 'b> {
    out: &'a mut fmt::Formatter<'b>,
    /// Bytes written so far.
    written: usize,
    /// Bytes of the value left out.
    cut: usize,
    /// Escape `"` too (the quoted form).
    quoted: bool,
}

impl Escaper<'_, '_> {
    /// Whether `c` is written as an escape sequence.
    fn escaped(&self, c: char) -> bool {
        match c {
            '\\' => true,
            '"' => self.quoted,
            '\'' => false,
            c => c.escape_debug().len() > 1,
        }
    }
}

impl fmt::Write for Escaper<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut > 0 {
            self.cut += s.len();
            return Ok(());
        }
        // Runs of plain characters are written as they are, in one piece.
        let mut run = 0;
        for (i, c) in s.char_indices() {
            let escaped = self.escaped(c);
            let len = if escaped {
                c.escape_debug().len()
            } else {
                c.len_utf8()
            };
            if self.written + len > MAX_FIELD_BYTES {
                self.out.write_str(&s[run..i])?;
                self.cut = s.len() - i;
                return Ok(());
            }
            self.written += len;
            if escaped {
                self.out.write_str(&s[run..i])?;
                write!(self.out, "{}", c.escape_debug())?;
                run = i + c.len_utf8();
            }
        }
        self.out.write_str(&s[run..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let text = Remote("a\r\n\0\u{1b}[2J\u{7f}\u{202e}b\\n").to_string();
        assert_eq!(text, r"a\r\n\0\u{1b}[2J\u{7f}\u{202e}b\\n");
        assert!(!text.chars().any(char::is_control));
    }

    #[test]
    fn printable_text_is_kept() {
        assert_eq!(
            Remote("Zoë 'x' \"y\" 日本").to_string(),
            "Zoë 'x' \"y\" 日本"
        );
        assert_eq!(format!("{:?}", Remote("\"y\"")), r#""\"y\"""#);
    }

    #[test]
    fn long_values_are_cut_with_a_marker() {
        let long = "é".repeat(200); // 400 bytes
        let text = Remote(&long).to_string();
        assert_eq!(text, format!("{}...[144 more bytes]", "é".repeat(128)));
        // Escapes count in the cap; the cut is between characters.
        let controls = "\u{1}".repeat(100);
        let text = Remote(&controls).to_string();
        assert_eq!(text, format!("{}...[49 more bytes]", r"\u{1}".repeat(51)));
        // Exactly at the cap: nothing cut.
        let exact = "y".repeat(MAX_FIELD_BYTES);
        assert_eq!(Remote(&exact).to_string(), exact);
    }

    #[test]
    fn any_display_value() {
        let error = std::io::Error::other("bad\nline");
        assert_eq!(Remote(&error).to_string(), r"bad\nline");
        assert_eq!(Remote(42).to_string(), "42");
    }
}
