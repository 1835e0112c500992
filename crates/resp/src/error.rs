use thiserror::Error;

/// Why a byte stream is not valid RESP, in words a client (or its developer)
/// can act on. Every variant ends the offending connection: after a framing
/// error there is no way to know where the next command starts.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("Protocol error: expected '{expected}', got '{got}'")]
    UnexpectedByte { expected: char, got: char },
    #[error("Protocol error: invalid {what} length")]
    InvalidLength { what: &'static str },
    #[error("Protocol error: invalid bulk length {len} (limit {limit})")]
    BulkTooLong { len: i64, limit: usize },
    #[error("Protocol error: invalid multibulk length {len} (limit {limit})")]
    ArrayTooLong { len: i64, limit: usize },
    #[error("Protocol error: too big inline request (limit {limit} bytes)")]
    InlineTooLong { limit: usize },
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("Protocol error: nesting deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("Protocol error: unknown RESP type byte '{0}'")]
    UnknownType(char),
    #[error("Protocol error: invalid {what} value")]
    InvalidValue { what: &'static str },
    /// One request over [`Limits::max_request_len`](crate::Limits::max_request_len)
    /// (Redis's `client-query-buffer-limit`), refused as soon as that is known.
    #[error("Protocol error: request larger than the query buffer limit ({limit} bytes)")]
    RequestTooLarge { limit: u64 },
}
