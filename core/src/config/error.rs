//! Validation errors that name the field and the reason, so a form can show each
//! one next to its input and the API can answer `{"error", "field", "reason"}`.

use std::fmt;

/// One rejected field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigError {
    /// Dotted path of the field (`mask_ratio`, `tags[2]`); empty when the whole
    /// document is at fault (not a table, not valid TOML/JSON).
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

/// Every problem found in one config, in field order; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn one(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self(vec![ConfigError::new(field, reason)])
    }

    /// The first error (there is always one).
    pub fn first(&self) -> &ConfigError {
        &self.0[0]
    }

    /// The reason given for `field`, if it was rejected.
    pub fn for_field(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.reason.as_str())
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "invalid run config: {}", parts.join("; "))
    }
}
