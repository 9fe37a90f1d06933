//! A reply as the services produce it and the dedup table remembers it.

use serde::{Deserialize, Serialize};

/// One HTTP answer: status, body text and whether the body is JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Body text (JSON when `json` is set).
    pub body: String,
    /// Whether the body is JSON (`Content-Type: application/json`) or plain text.
    #[serde(default)]
    pub json: bool,
}

impl Reply {
    /// 200 with a plain-text body.
    pub fn ok_text(body: impl Into<String>) -> Reply {
        Reply { status: 200, body: body.into(), json: false }
    }

    /// 200 with a JSON body.
    pub fn ok_json(value: &serde_json::Value) -> Reply {
        Reply { status: 200, body: value.to_string(), json: true }
    }

    /// 400: a business or input error, with a short text.
    pub fn bad(body: impl Into<String>) -> Reply {
        Reply { status: 400, body: body.into(), json: false }
    }

    /// Whether this is a success.
    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}
