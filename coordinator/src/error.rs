//! Why the coordinator could not get an answer for a request, and the one mapping of those
//! failures to HTTP responses. Client errors never come through here: they are answered by
//! the route table (`net::server::route_error_response`) or passed through from replicas.

use actix_web::HttpResponse;

/// A failure of the system to answer a well-formed request.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// The key's primary did not answer (connection error or timeout).
    #[error("replica {replica}: {reason}")]
    Unavailable {
        /// The replica that did not answer.
        replica: u32,
        /// What went wrong.
        reason: String,
    },
    /// Part of a batch_init could not be written.
    #[error("batch incomplete: {0}")]
    Batch(String),
    /// The view has no full member, so the key has no primary.
    #[error("no replica is a full member of the view")]
    NoPrimary,
    /// Replicas kept rejecting the request as misdirected.
    #[error("request still misdirected after {0} retries")]
    Misdirected(u32),
    /// The coordinator's own failure.
    #[error("coordinator failure: {0}")]
    Internal(String),
}

impl CoordError {
    /// The response the client gets: 503 while the service is unavailable, 500 for the
    /// coordinator's own failure.
    pub fn response(&self) -> HttpResponse {
        let status = actix_web::http::StatusCode::from_u16(self.status()).expect("500 and 503 are statuses");
        HttpResponse::build(status).body(self.body())
    }

    /// The status of [`CoordError::response`].
    pub fn status(&self) -> u16 {
        match self {
            CoordError::Internal(_) => 500,
            _ => 503,
        }
    }

    /// The body text of [`CoordError::response`].
    pub fn body(&self) -> String {
        match self {
            CoordError::Internal(_) => self.to_string(),
            _ => format!("service unavailable: {self}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let cases = [
            (CoordError::Unavailable { replica: 1, reason: "timed out".into() }, 503),
            (CoordError::NoPrimary, 503),
            (CoordError::Batch("replica 2: timed out".into()), 503),
            (CoordError::Misdirected(3), 503),
            (CoordError::Internal("panic".into()), 500),
        ];
        for (e, want) in cases {
            assert_eq!(e.response().status().as_u16(), want, "{e}");
        }
    }
}
