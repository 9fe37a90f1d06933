//! The order service's clients of the other services, through their coordinators: the
//! saga's participants and the price lookup of addItem.

use crate::saga::{Participants, Step};
use async_trait::async_trait;
use common::client::{Answer, Batcher, Unavailable};
use common::routing::{Command, LedgerCommand};
use common::topology::Service;

/// How long one call to another service may take before it counts as unavailable (the saga
/// then retries it with the same transaction id).
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A step's business answer from an HTTP answer: 200 applied, 400 refused; anything else
/// is not an answer about the step (misrouted, refused for the secret) and is retried.
fn step(answer: Answer) -> Result<Step, Unavailable> {
    match answer.status {
        200 => Ok(Step::Done),
        400 => Ok(Step::Refused(answer.body)),
        s => Err(Unavailable(format!("unexpected status {s}: {}", answer.body))),
    }
}

/// The payment and stock services over HTTP. Calls made at the same time (the steps of
/// concurrent checkouts) travel together as multi calls (`common::client::Batcher`).
pub struct Remote {
    /// The payment service's coordinators.
    pub payment: Batcher,
    /// The stock service's coordinators.
    pub stock: Batcher,
}

/// A ledger command's call to `service` (its path from the route table).
async fn call(to: &Batcher, service: Service, command: LedgerCommand) -> Result<Answer, Unavailable> {
    let (method, path) = Command::Ledger(command)
        .path(service)
        .ok_or_else(|| Unavailable(format!("{service} has no route for the call")))?;
    to.call(method, path).await
}

#[async_trait]
impl Participants for Remote {
    async fn pay(&self, user: &str, amount: i64, tx: &str) -> Result<Step, Unavailable> {
        let c = LedgerCommand::TxDebit { key: user.into(), amount, tx: tx.into() };
        step(call(&self.payment, Service::Payment, c).await?)
    }

    async fn refund(&self, user: &str, tx: &str) -> Result<Step, Unavailable> {
        let c = LedgerCommand::TxCompensate { key: user.into(), tx: tx.into() };
        step(call(&self.payment, Service::Payment, c).await?)
    }

    async fn reserve(&self, item: &str, qty: i64, tx: &str) -> Result<Step, Unavailable> {
        let c = LedgerCommand::TxDebit { key: item.into(), amount: qty, tx: tx.into() };
        step(call(&self.stock, Service::Stock, c).await?)
    }

    async fn release(&self, item: &str, tx: &str) -> Result<Step, Unavailable> {
        let c = LedgerCommand::TxCompensate { key: item.into(), tx: tx.into() };
        step(call(&self.stock, Service::Stock, c).await?)
    }

    async fn forget_payment(&self, user: &str, tx: &str) -> Result<(), Unavailable> {
        let c = LedgerCommand::TxForget { key: user.into(), tx: tx.into() };
        told(call(&self.payment, Service::Payment, c).await?)
    }

    async fn forget_stock(&self, item: &str, tx: &str) -> Result<(), Unavailable> {
        let c = LedgerCommand::TxForget { key: item.into(), tx: tx.into() };
        told(call(&self.stock, Service::Stock, c).await?)
    }
}

/// A forget's answer: 200 (forgotten, or nothing to forget) is done; anything else is tried
/// again later.
fn told(answer: Answer) -> Result<(), Unavailable> {
    match answer.status {
        200 => Ok(()),
        s => Err(Unavailable(format!("forget answered {s}: {}", answer.body))),
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
        let a = |status, body: &str| Answer { status, body: body.into() };
        assert_eq!(step(a(200, "applied")).unwrap(), Step::Done);
        assert_eq!(step(a(400, "not enough stock")).unwrap(), Step::Refused("not enough stock".into()));
        assert!(step(a(421, "{}")).is_err());
        assert!(step(a(403, "secret")).is_err());
    }
}
