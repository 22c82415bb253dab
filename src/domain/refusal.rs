//! Why a domain rule said no, without any HTTP: a stable snake_case code, a sentence a person
//! can act on, and what kind of "no" it is. `error.rs` maps each kind to a status, once.

/// The kinds of refusal a rule can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request contradicts what is stored (409).
    Conflict,
    /// The input is malformed (400).
    Invalid,
    /// What the request names does not exist (404).
    NotFound,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: RefusalKind::Conflict,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: RefusalKind::NotFound,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: RefusalKind::Invalid,
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Refusal {}
