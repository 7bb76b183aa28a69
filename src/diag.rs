//! Problems in user input, reported the way a compiler would.
//!
//! A [`Diagnostic`] names the file (and line/column when known), says what is
//! wrong and what to do. Stages collect every problem they find into
//! [`Diagnostics`] before failing, so one run shows all of them. This module
//! only formats; it never decides what is an error.

use std::fmt;

/// Where a problem is: a path relative to the config repo root, at a revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// Path relative to the repository root, with `/` separators.
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
}

impl Location {
    /// A whole file, no line.
    pub fn file(path: impl Into<String>) -> Self {
        Location {
            path: path.into(),
            line: None,
            column: None,
        }
    }

    /// A position inside a file.
    pub fn at(path: impl Into<String>, line: Option<usize>, column: Option<usize>) -> Self {
        Location {
            path: path.into(),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        Ok(())
    }
}

/// One problem in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where, when it can be pinned to a file.
    pub location: Option<Location>,
    /// What is wrong, lowercase, without trailing period.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A problem in a file.
    pub fn new(location: Location, message: impl Into<String>) -> Self {
        Diagnostic {
            location: Some(location),
            message: message.into(),
            help: None,
        }
    }

    /// A problem that belongs to no single file.
    pub fn global(message: impl Into<String>) -> Self {
        Diagnostic {
            location: None,
            message: message.into(),
            help: None,
        }
    }

    /// Adds advice on how to fix it.
    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The GitHub Actions workflow command that turns this into an annotation
    /// on the file, as `::error file=…,line=…,col=…::message`.
    pub fn to_github_annotation(&self) -> String {
        self.to_github_command("error")
    }

    /// As [`Self::to_github_annotation`], at `level` (`error`, `warning`,
    /// `notice`).
    pub fn to_github_command(&self, level: &str) -> String {
        let mut props = Vec::new();
        if let Some(loc) = &self.location {
            props.push(format!("file={}", escape_property(&loc.path)));
            if let Some(line) = loc.line {
                props.push(format!("line={line}"));
            }
            if let Some(col) = loc.column {
                props.push(format!("col={col}"));
            }
        }
        let mut message = self.message.clone();
        if let Some(help) = &self.help {
            message.push_str("\nhelp: ");
            message.push_str(help);
        }
        let props = if props.is_empty() {
            String::new()
        } else {
            format!(" {}", props.join(","))
        };
        format!("::{level}{props}::{}", escape_data(&message))
    }
}

/// Escaping of workflow command data, as the runner's toolkit does it.
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escaping of workflow command properties (also `:` and `,`).
fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{loc}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Every problem found in one pass, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Records a problem.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sorts by location so output does not depend on thread scheduling.
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            let key = |d: &Diagnostic| {
                d.location
                    .as_ref()
                    .map(|l| (l.path.clone(), l.line, l.column))
            };
            key(a).cmp(&key(b)).then_with(|| a.message.cmp(&b.message))
        });
        self.0.dedup();
    }

    /// `Ok(value)` when empty, the problems otherwise.
    pub fn into_result<T>(mut self, value: T) -> Result<T, Diagnostics> {
        if self.is_empty() {
            Ok(value)
        } else {
            self.sort();
            Err(self)
        }
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl Extend<Diagnostic> for Diagnostics {
    fn extend<I: IntoIterator<Item = Diagnostic>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {d}")?;
        }
        if self.0.len() > 1 {
            write!(f, "\n{} problems found", self.0.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_line_and_help() {
        let d = Diagnostic::new(
            Location::at("services/api/config.yaml", Some(3), Some(5)),
            "invalid YAML",
        )
        .help("fix the indentation");
        assert_eq!(
            d.to_string(),
            "services/api/config.yaml:3:5: invalid YAML\n  help: fix the indentation"
        );
    }

    #[test]
    fn annotation_escapes_newlines_and_separators() {
        let d = Diagnostic::new(Location::at("a,b:c.yaml", Some(2), None), "bad\nvalue 100%");
        assert_eq!(
            d.to_github_annotation(),
            "::error file=a%2Cb%3Ac.yaml,line=2::bad%0Avalue 100%25"
        );
    }

    #[test]
    fn sorted_by_location() {
        let mut ds = Diagnostics::default();
        ds.push(Diagnostic::new(Location::file("b"), "x"));
        ds.push(Diagnostic::new(Location::file("a"), "y"));
        let err = ds.into_result(()).unwrap_err();
        assert_eq!(err.0[0].location.as_ref().unwrap().path, "a");
    }
}
