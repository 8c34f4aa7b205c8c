//! What a rule reports: a [`Problem`] names the field that breaks it and says why; checks
//! collect every problem rather than stopping at the first, so one answer lists all of them.

use std::fmt;

/// Which kind of rule a problem breaks. Control maps each kind to an ELB error code
/// (`ValidationError`, `DuplicateListener`, `InvalidConfigurationRequest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// A value outside its range or grammar.
    Invalid,
    /// Two listeners on one LoadBalancerPort.
    DuplicateListener,
    /// Values that are valid alone but not together (back-end security of a shared instance
    /// port, a policy on the wrong kind of listener).
    Conflict,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field in the ELB API's spelling, e.g. `Listeners[1].InstanceProtocol` or
    /// `HealthCheck.Timeout`.
    pub field: String,
    /// The kind of rule.
    pub kind: ProblemKind,
    /// What is wrong, in a sentence that says what would be right.
    pub message: String,
}

impl Problem {
    /// A value outside its range or grammar.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: ProblemKind::Invalid,
            message: message.into(),
        }
    }

    /// Values that conflict with each other.
    pub fn conflict(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: ProblemKind::Conflict,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem a check found (never empty when returned as an error).
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// `Ok` when nothing was found.
    pub fn into_result(self) -> Result<(), Problems> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    /// The first problem (the one whose kind decides an API error code).
    pub fn first(&self) -> Option<&Problem> {
        self.0.first()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Text shown back in a message: cut to 64 characters, control characters replaced.
pub fn printable(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Free-form values (cookie names, policy attribute values...): at most `max` characters and
/// no control characters.
pub fn free_text_ok(value: &str, max: usize) -> bool {
    value.chars().count() <= max && !value.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_list_every_field() {
        let ps = Problems(vec![
            Problem::invalid("HealthCheck.Interval", "must be 5-300"),
            Problem::conflict("Listeners[1]", "clashes"),
        ]);
        assert_eq!(
            ps.to_string(),
            "HealthCheck.Interval: must be 5-300; Listeners[1]: clashes"
        );
        assert_eq!(ps.first().unwrap().kind, ProblemKind::Invalid);
        assert!(Problems::default().into_result().is_ok());
        assert_eq!(printable("a\nb"), "a?b");
        assert!(free_text_ok("abc", 3) && !free_text_ok("abcd", 3) && !free_text_ok("a\u{7}", 9));
    }
}
