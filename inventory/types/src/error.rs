//! What is wrong with a value: a name, an id or a setting that its type does not allow.

/// A value refused by its type, on construction or on decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A db name that is not allowed.
    #[error("invalid db name {name:?}: use 1-64 of A-Z a-z 0-9 _ - . starting with a letter or digit")]
    InvalidDbName {
        /// The name given.
        name: String,
    },
    /// A malformed id.
    #[error("invalid {what} {value:?}: expected 32 hex digits")]
    InvalidId {
        /// Which kind of id.
        what: &'static str,
        /// The text given.
        value: String,
    },
    /// A setting (or any bounded value) out of its allowed range.
    #[error("invalid {what}: {why}")]
    InvalidSetting {
        /// The setting.
        what: &'static str,
        /// The allowed range or rule.
        why: String,
    },
}
