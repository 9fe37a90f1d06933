//! The conversions of the one answer type, [`model::reply::Reply`], to and from the forms it
//! travels in: an HTTP response (to a client, or to a peer over HTTP) and the answer of an
//! internal call ([`crate::rpc`]). A multi call's answers are a JSON list of replies
//! (serde), read by [`multi_answers`].
//!
//! Headers: `Content-Type` says whether the body is JSON, [`UNAVAILABLE_CAUSE`] carries
//! [`Reply::cause`], and `x-webshop-reason` carries [`Reply::reason`] (for people reading
//! logs; never read back).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use bytes::Bytes;
use model::reply::Reply;
use model::wire::UNAVAILABLE_CAUSE;

/// The header that says why a request was misdirected.
pub const REASON: &str = "x-webshop-reason";

/// As an HTTP response. A status that is no valid code is sent as a 500.
pub fn http(r: Reply) -> HttpResponse {
    let mut b = HttpResponse::build(StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    b.content_type(r.content_type());
    if let Some(cause) = &r.cause {
        b.insert_header((UNAVAILABLE_CAUSE, cause.as_str()));
    }
    if let Some(reason) = r.reason {
        b.insert_header((REASON, reason));
    }
    b.body(r.body)
}

/// As the answer of an internal call: the status and headers an HTTP response would carry.
pub fn rpc(r: Reply) -> crate::rpc::Response {
    let mut headers = vec![("content-type".to_string(), r.content_type().to_string())];
    if let Some(cause) = r.cause {
        headers.push((UNAVAILABLE_CAUSE.to_string(), cause));
    }
    if let Some(reason) = r.reason {
        headers.push((REASON.to_string(), reason.to_string()));
    }
    crate::rpc::Response { status: r.status, headers, body: Bytes::from(r.body) }
}

/// An internal call's answer read back (a body that is not UTF-8 is read lossily).
pub fn of_rpc(r: &crate::rpc::Response) -> Reply {
    Reply {
        json: Reply::is_json(r.header("content-type")),
        cause: r.header(UNAVAILABLE_CAUSE).map(str::to_string),
        ..Reply::text(r.status, String::from_utf8_lossy(&r.body).into_owned())
    }
}

/// The answers of a multi call of `calls` calls from its reply's status and body: one per
/// call, in order, or why there are none.
pub fn multi_answers(status: u16, body: &[u8], calls: usize) -> Result<Vec<Reply>, String> {
    if status != 200 {
        return Err(format!("answered {status} to a multi call: {}", String::from_utf8_lossy(body)));
    }
    let answers: Vec<Reply> = serde_json::from_slice(body).map_err(|e| format!("unreadable multi answer: {e}"))?;
    if answers.len() != calls {
        return Err(format!("{} answers to {calls} calls", answers.len()));
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form says the same: what goes out as an internal call's answer reads back as it
    /// was (but the reason, which is for logs), and a multi call's list keeps every field
    /// but the reason too.
    #[test]
    fn an_answer_reads_back_as_it_was_sent() {
        let cases = [
            Reply::ok_text("Item: i added"),
            Reply::json_text(200, "{\"paid\":true}"),
            Reply::bad("not enough credit"),
            Reply::unavailable("no-lease", "no lease"),
            Reply { reason: Some("not the primary"), ..Reply::json_text(421, "{\"epoch\":2}") },
        ];
        for sent in cases {
            let kept = Reply { reason: None, ..sent.clone() };
            assert_eq!(of_rpc(&rpc(sent.clone())), kept);
            let list = serde_json::to_vec(&vec![sent.clone()]).unwrap();
            assert_eq!(multi_answers(200, &list, 1).unwrap(), vec![kept]);
            let h = http(sent.clone());
            assert_eq!(h.status().as_u16(), sent.status);
            let header = |name: &str| h.headers().get(name).map(|v| v.to_str().unwrap().to_string());
            assert_eq!(header("content-type").as_deref(), Some(sent.content_type()));
            assert_eq!(header(UNAVAILABLE_CAUSE), sent.cause);
            assert_eq!(header(REASON).as_deref(), sent.reason);
        }
    }

    /// A reply stored before the cause field existed (a request's record) reads as one
    /// without a cause, and one without a cause is stored as before.
    #[test]
    fn a_reply_without_a_cause_keeps_its_stored_form() {
        let old = r#"{"status":200,"body":"5","json":false}"#;
        assert_eq!(serde_json::from_str::<Reply>(old).unwrap(), Reply::ok_text("5"));
        assert_eq!(serde_json::to_string(&Reply::ok_text("5")).unwrap(), old);
    }

    #[test]
    fn a_multi_answer_must_answer_every_call() {
        let two = serde_json::to_vec(&vec![Reply::ok_text("a"), Reply::ok_text("b")]).unwrap();
        assert!(multi_answers(200, &two, 2).is_ok());
        assert_eq!(multi_answers(200, &two, 3).unwrap_err(), "2 answers to 3 calls");
        assert!(multi_answers(503, b"down", 2).unwrap_err().contains("answered 503"));
        assert!(multi_answers(200, b"{", 2).unwrap_err().starts_with("unreadable"));
    }
}
