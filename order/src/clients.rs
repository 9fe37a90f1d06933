//! The order service's clients of the other services: the saga's participants and the price
//! lookup of addItem. Each call goes to its key's primary directly, by the views the
//! replicas' rejections carry, and through the service's coordinators when it cannot
//! (`net::direct`, docs/design.md §6.6).

use crate::saga::{Outcome, Participants};
use async_trait::async_trait;
use model::reply::Reply;
use model::routing::{Command, LedgerCommand};
use model::topology::Service;
use net::client::Unavailable;
use net::direct::Direct;

/// How long one call to another service may take before it counts as unavailable (the saga
/// then retries it with the same transaction id).
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a direct call to a primary may take before it goes through the coordinators:
/// a primary answers a step in milliseconds, unless it waits on a peer that is gone, which
/// the coordinators find and evict.
pub const DIRECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a replica that did not answer a direct call is passed over: calls for its keys
/// go through the coordinators meanwhile, and the first one after learns the view that
/// evicted it, if one did.
pub const PASS_OVER: std::time::Duration = std::time::Duration::from_secs(2);

/// A step's business answer from an HTTP answer: 200 applied, 400 refused; anything else
/// is not an answer about the step (misrouted, refused for the secret) and is retried.
fn step(answer: Reply) -> Result<Outcome, Unavailable> {
    match answer.status {
        200 => Ok(Outcome::Done),
        400 => Ok(Outcome::Refused(answer.body)),
        s => Err(Unavailable(format!("unexpected status {s}: {}", answer.body))),
    }
}

/// The payment and stock services. Calls made at the same time (the steps of concurrent
/// checkouts) travel together as multi calls, to a primary or to a coordinator.
pub struct Remote {
    /// The payment service's primaries.
    pub payment: Direct,
    /// The stock service's primaries.
    pub stock: Direct,
}

/// A ledger command's call to `service` (its path from the route table), to its key's
/// primary.
async fn call(to: &Direct, service: Service, command: LedgerCommand) -> Result<Reply, Unavailable> {
    let command = Command::Ledger(command);
    let key = command.key().ok_or_else(|| Unavailable(format!("{command:?} names no key")))?.to_string();
    let (method, path) =
        command.path(service).ok_or_else(|| Unavailable(format!("{service} has no route for the call")))?;
    to.call(&key, method, path).await
}

#[async_trait]
impl Participants for Remote {
    async fn pay(&self, user: &str, amount: i64, tx: &str) -> Result<Outcome, Unavailable> {
        let c = LedgerCommand::TxDebit { key: user.into(), amount, tx: tx.into() };
        step(call(&self.payment, Service::Payment, c).await?)
    }

    async fn refund(&self, user: &str, tx: &str) -> Result<Outcome, Unavailable> {
        let c = LedgerCommand::TxCompensate { key: user.into(), tx: tx.into() };
        step(call(&self.payment, Service::Payment, c).await?)
    }

    async fn reserve(&self, item: &str, qty: i64, tx: &str) -> Result<Outcome, Unavailable> {
        let c = LedgerCommand::TxDebit { key: item.into(), amount: qty, tx: tx.into() };
        step(call(&self.stock, Service::Stock, c).await?)
    }

    async fn release(&self, item: &str, tx: &str) -> Result<Outcome, Unavailable> {
        let c = LedgerCommand::TxCompensate { key: item.into(), tx: tx.into() };
        step(call(&self.stock, Service::Stock, c).await?)
    }
}

impl Remote {
    /// An item's price: `Ok(Err(text))` if the stock service refuses (unknown item).
    pub async fn price(&self, item: &str) -> Result<Result<i64, String>, Unavailable> {
        let a = call(&self.stock, Service::Stock, LedgerCommand::Find { key: item.into() }).await?;
        match a.status {
            200 => {
                let v: serde_json::Value =
                    serde_json::from_str(&a.body).map_err(|e| Unavailable(format!("stock find reply: {e}")))?;
                v["price"]
                    .as_i64()
                    .map(Ok)
                    .ok_or_else(|| Unavailable(format!("stock find reply without price: {}", a.body)))
            }
            400 => Ok(Err(a.body)),
            s => Err(Unavailable(format!("stock find answered {s}: {}", a.body))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_answers() {
        let a = |status, body: &str| Reply::text(status, body);
        assert_eq!(step(a(200, "applied")).unwrap(), Outcome::Done);
        assert_eq!(step(a(400, "not enough stock")).unwrap(), Outcome::Refused("not enough stock".into()));
        assert!(step(a(421, "{}")).is_err());
        assert!(step(a(403, "secret")).is_err());
    }
}
