//! The one answer type: what a service's handler answers, what a request's record keeps,
//! what one answer of a multi call carries, and what a node's client gets back. The forms
//! it travels in (an HTTP response, an internal call's answer) are made from it and read
//! back into it in one place, `net::answer`.

use serde::{Deserialize, Serialize};

/// The content type of a JSON body.
pub const JSON: &str = "application/json";

/// The content type of a plain-text body.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// One answer: status, body text, whether the body is JSON, and what marks a 503 that is not
/// the answering node's own failure. Serialized (a request's record, a multi call's answers)
/// as `{"status", "body", "json", "cause"?}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Body text (JSON when `json` is set).
    pub body: String,
    /// Whether the body is JSON (`Content-Type: application/json`) or plain text.
    #[serde(default)]
    pub json: bool,
    /// The cause of a 503 that is not the answering node's own failure
    /// (`wire::UNAVAILABLE_CAUSE`: no lease, recovering, a dependency, a quorum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Why a request was misdirected (`x-webshop-reason`), for people reading logs. Sent as a
    /// header only; never kept or passed on.
    #[serde(skip)]
    pub reason: Option<&'static str>,
}

impl Reply {
    /// A plain-text answer.
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply { status, body: body.into(), json: false, cause: None, reason: None }
    }

    /// A JSON answer whose body is already JSON text.
    pub fn json_text(status: u16, body: impl Into<String>) -> Reply {
        Reply { json: true, ..Reply::text(status, body) }
    }

    /// A 503 that is not the answering node's own failure, with its cause marker.
    pub fn unavailable(cause: impl Into<String>, body: impl Into<String>) -> Reply {
        Reply { cause: Some(cause.into()), ..Reply::text(503, body) }
    }

    /// 200 with a plain-text body.
    pub fn ok_text(body: impl Into<String>) -> Reply {
        Reply::text(200, body)
    }

    /// 200 with a JSON body.
    pub fn ok_json(value: &serde_json::Value) -> Reply {
        Reply::json_text(200, value.to_string())
    }

    /// 400: a business or input error, with a short text.
    pub fn bad(body: impl Into<String>) -> Reply {
        Reply::text(400, body)
    }

    /// The `Content-Type` of the body.
    pub fn content_type(&self) -> &'static str {
        if self.json {
            JSON
        } else {
            TEXT
        }
    }

    /// Whether a `Content-Type` says JSON.
    pub fn is_json(content_type: Option<&str>) -> bool {
        content_type.is_some_and(|c| c.starts_with(JSON))
    }

    /// Whether this is a success.
    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}
