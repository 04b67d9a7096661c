//! A command the plan runs, as data: program, arguments, environment and deadline. The cluster
//! stage carries it out ([`crate::cluster::runner`]); the plan only says what it is.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One command to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSpec {
    /// Program name, looked up on `PATH`.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    /// Deadline.
    pub timeout_secs: u64,
}

impl CommandSpec {
    /// A command with a deadline.
    pub fn new(program: &str, args: impl IntoIterator<Item = impl Into<String>>, timeout: Duration) -> CommandSpec {
        CommandSpec {
            program: program.to_string(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            timeout_secs: timeout.as_secs().max(1),
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> CommandSpec {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The value of a `--flag value` argument, if the command has one.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.args.windows(2).find(|w| w[0] == name).map(|w| w[1].as_str())
    }

    /// The command line as one shell-like string (for messages and plans).
    pub fn display(&self) -> String {
        let mut parts: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={}", quote(v))).collect();
        parts.push(self.program.clone());
        parts.extend(self.args.iter().map(|a| quote(a)));
        parts.join(" ")
    }
}

fn quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
