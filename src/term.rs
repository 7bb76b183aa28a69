//! The terminal: whether to colour what kdeploy prints. Shared by the CLI
//! and the action (whose log GitHub renders with ANSI colour), owned by
//! neither.

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    /// A terminal or GitHub Actions, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl Color {
    /// Whether to colour, given the environment and whether stdout is a terminal.
    pub fn enabled(self, var: impl Fn(&str) -> Option<String>, terminal: bool) -> bool {
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                var("NO_COLOR").is_none_or(|v| v.is_empty())
                    && (terminal || var("GITHUB_ACTIONS").as_deref() == Some("true"))
            }
        }
    }

    /// [`Color::enabled`] for this process's stdout.
    pub fn for_stdout(self) -> bool {
        use std::io::IsTerminal as _;
        self.enabled(|k| std::env::var(k).ok(), std::io::stdout().is_terminal())
    }
}
