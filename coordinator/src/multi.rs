//! Multi calls (`POST /internal/multi`): several keyed requests of this service in one
//! exchange, sent by another service's replica (the order service's saga steps). They are
//! grouped by primary, each primary gets its group in one multi call of its own, and every
//! answer is what the request would have got alone.
//!
//! A multi call only saves exchanges; it decides nothing. A request whose answer in a group
//! is not final (misdirected, a replica without a lease or recovering), and every request of
//! a group whose primary did not answer, is forwarded alone afterwards, through the same
//! [`Coordinator::forward_keyed`] as a single request: following views, re-probing and
//! evicting exactly as it would.

use crate::error::CoordError;
use crate::forward::{classify, Outcome, Outgoing, ReplicaReply};
use crate::state::{Coordinator, Forward};
use actix_web::web::Bytes;
use model::reply::Reply;
use model::routing::{resolve, Method, Route, Target};
use model::wire::{MultiCall, View, MULTI_PATH};
use net::server::route_error_reply;
use std::collections::BTreeMap;
use std::time::Duration;

/// Most calls in one multi call: bounds its body well inside the coordinator's body limit.
pub const MAX_CALLS: usize = 256;

/// A call of a multi call, resolved against the route table.
pub enum Resolved<'a> {
    /// A keyed route: forwarded.
    Keyed { route: &'static Route, key: String, call: &'a MultiCall },
    /// Answered here at once (a path that does not resolve, or a route without a key).
    Answered(Reply),
}

impl<'a> Resolved<'a> {
    /// The route, key and call of a forwarded call; `None` for one answered here.
    fn keyed(&self) -> Option<(&'static Route, &str, &'a MultiCall)> {
        match self {
            Resolved::Keyed { route, key, call } => Some((route, key, call)),
            Resolved::Answered(_) => None,
        }
    }
}

/// Resolves every call; only argument-keyed routes are forwarded.
pub fn resolve_all<'a>(service: model::topology::Service, calls: &'a [MultiCall]) -> Vec<Resolved<'a>> {
    calls
        .iter()
        .map(|call| match resolve(service, call.method, &call.path) {
            Err(e) => Resolved::Answered(route_error_reply(e)),
            Ok(t) => keyed(&t, call),
        })
        .collect()
}

fn keyed<'a>(t: &Target, call: &'a MultiCall) -> Resolved<'a> {
    match t.key() {
        Some(key) => Resolved::Keyed { route: t.route, key: key.to_string(), call },
        None => Resolved::Answered(Reply::bad("multi call: only routes keyed by an argument")),
    }
}

/// Groups the forwarded calls (by index) by their key's primary in `view`; calls whose key
/// has no primary (no full member) go in the second list.
pub fn group_by_primary(resolved: &[Resolved<'_>], view: &View) -> (BTreeMap<u32, Vec<usize>>, Vec<usize>) {
    let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut homeless = Vec::new();
    for (i, r) in resolved.iter().enumerate() {
        if let Some((_, key, _)) = r.keyed() {
            match view.primary(key) {
                Some(p) => groups.entry(p).or_default().push(i),
                None => homeless.push(i),
            }
        }
    }
    (groups, homeless)
}

/// A failure to answer as an answer of a multi call: what [`CoordError::response`] says.
fn failed(e: &CoordError) -> Reply {
    Reply::text(e.status(), e.body())
}

impl Coordinator {
    /// Answers a multi call: one answer per call, in order.
    pub async fn forward_multi(&self, calls: &[MultiCall], request_id: &str) -> Vec<Reply> {
        let resolved = resolve_all(self.service, calls);
        let mut answers: Vec<Option<Reply>> = resolved
            .iter()
            .map(|r| match r {
                Resolved::Answered(a) => Some(a.clone()),
                Resolved::Keyed { .. } => None,
            })
            .collect();
        let view = self.view.get();
        let (groups, mut alone) = group_by_primary(&resolved, &view);
        let sends = groups.into_iter().map(|(primary, idx)| {
            let resolved = &resolved;
            let view = &view;
            async move {
                let keyed: Vec<_> =
                    idx.iter().map(|&i| resolved[i].keyed().expect("only forwarded calls are grouped")).collect();
                let group: Vec<&MultiCall> = keyed.iter().map(|(_, _, call)| *call).collect();
                let timeout = keyed.iter().map(|(route, _, _)| self.timeout_for(route)).max();
                let out = Outgoing {
                    method: reqwest::Method::POST,
                    path_and_query: MULTI_PATH,
                    request_id,
                    epoch: view.epoch,
                    minted: None,
                    body: Bytes::from(serde_json::to_vec(&group).expect("calls serialize")),
                    content_type: Some("application/json"),
                    timeout: timeout.unwrap_or(Duration::ZERO),
                };
                (idx, self.forwarder.send(primary, &out).await)
            }
        });
        for (idx, result) in futures::future::join_all(sends).await {
            let group_answers = match result {
                Ok(r) if r.status == 200 => serde_json::from_slice::<Vec<Reply>>(&r.body).ok(),
                _ => None,
            };
            match group_answers {
                Some(got) if got.len() == idx.len() => {
                    for (i, a) in idx.into_iter().zip(got) {
                        match classify(Ok(ReplicaReply::from(a))) {
                            Outcome::Answer(r) => answers[i] = Some(r.into_reply()),
                            Outcome::Misdirected(offered) => {
                                self.view.offer(offered);
                                alone.push(i);
                            }
                            Outcome::Unavailable(_) => alone.push(i),
                        }
                    }
                }
                // The primary did not answer the group (or answered something unreadable):
                // each request goes alone, and forward_keyed handles the primary's failure.
                _ => alone.extend(idx),
            }
        }
        let singles = alone.into_iter().map(|i| {
            let resolved = &resolved;
            async move {
                let (route, key, call) = resolved[i].keyed().expect("only forwarded calls go alone");
                let fwd = Forward {
                    route: route.name,
                    method: match call.method {
                        Method::Get => reqwest::Method::GET,
                        Method::Post => reqwest::Method::POST,
                    },
                    path_and_query: &call.path,
                    request_id,
                    body: Bytes::new(),
                    content_type: None,
                    timeout: self.timeout_for(route),
                };
                let answer = match self.forward_keyed(&fwd, key, None).await {
                    Ok(r) => r.into_reply(),
                    Err(e) => failed(&e),
                };
                (i, answer)
            }
        });
        for (i, a) in futures::future::join_all(singles).await {
            answers[i] = Some(a);
        }
        answers.into_iter().map(|a| a.expect("every call answered")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::placement::primary;
    use model::topology::Service;

    fn call(method: Method, path: &str) -> MultiCall {
        MultiCall { method, path: path.into() }
    }

    #[test]
    fn resolves_keyed_routes_and_answers_the_rest() {
        let calls = vec![
            call(Method::Post, "/stock/tx/subtract/i1/2/o%231"),
            call(Method::Get, "/stock/find/i2"),
            call(Method::Post, "/stock/nothing/x"),
            call(Method::Post, "/stock/item/create/5"),
            call(Method::Post, "/stock/add/x/-1"),
            call(Method::Get, "/stock/add/x/1"),
        ];
        let r = resolve_all(Service::Stock, &calls);
        let keys: Vec<Option<&str>> = r
            .iter()
            .map(|r| match r {
                Resolved::Keyed { key, .. } => Some(key.as_str()),
                Resolved::Answered(_) => None,
            })
            .collect();
        assert_eq!(keys, vec![Some("i1"), Some("i2"), None, None, None, None]);
        let statuses: Vec<u16> = r
            .iter()
            .filter_map(|r| match r {
                Resolved::Answered(a) => Some(a.status),
                Resolved::Keyed { .. } => None,
            })
            .collect();
        // Unknown path, a create (minted key: not keyed by an argument), a bad number, a
        // wrong method: the same statuses a single request gets.
        assert_eq!(statuses, vec![404, 400, 400, 405]);
    }

    #[test]
    fn groups_by_primary_and_keeps_order() {
        let calls: Vec<MultiCall> =
            (0..40).map(|i| call(Method::Post, &format!("/payment/tx/pay/u{i}/1/o{i}"))).collect();
        let r = resolve_all(Service::Payment, &calls);
        let view = View { epoch: 2, members: vec![0, 2], learners: vec![1] };
        let (groups, homeless) = group_by_primary(&r, &view);
        assert!(homeless.is_empty());
        assert!(!groups.contains_key(&1), "a learner is never primary");
        let mut seen = 0;
        for (p, idx) in &groups {
            assert!(idx.windows(2).all(|w| w[0] < w[1]), "calls keep their order");
            for &i in idx {
                assert_eq!(primary(&format!("u{i}"), &[0, 2]), Some(*p));
            }
            seen += idx.len();
        }
        assert_eq!(seen, 40);
        let empty = View { epoch: 3, members: vec![], learners: vec![0] };
        let (groups, homeless) = group_by_primary(&r, &empty);
        assert!(groups.is_empty());
        assert_eq!(homeless.len(), 40);
    }

    #[test]
    fn answers_round_trip_through_replies() {
        for a in [Reply::bad("not enough credit"), Reply::json_text(200, "{}"), Reply::unavailable("dependency", "x")] {
            assert_eq!(ReplicaReply::from(a.clone()).into_reply(), a);
        }
        assert_eq!(failed(&CoordError::NoPrimary).status, 503);
        assert_eq!(failed(&CoordError::Internal("x".into())).status, 500);
    }
}
