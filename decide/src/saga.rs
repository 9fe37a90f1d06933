//! The checkout saga's decisions (docs/design.md §6): whether a checkout starts an attempt,
//! finishes one found in flight or answers at once; and, once every step of an attempt has a
//! business answer, whether it rolls forward or what it undoes.
//!
//! An attempt is the payment step and one stock step per item, all sent together under the
//! attempt's transaction id. The order records `in flight` before any step is sent, and the
//! attempt's end: paid, or failed once its compensations are answered. A failing attempt
//! records `compensating` before its first compensation, so that a driver that was deposed
//! meanwhile (its write fails) never undoes a step that a newer driver may roll forward. The
//! driver of `order::saga` reads the record, asks [`start`], sends the steps, asks
//! [`after_steps`], and writes what it decided. Whoever drives an attempt in flight that it
//! did not start (a new primary, a later request) sends every step again: each is applied at
//! most once per transaction, and a refused or compensated one stays refused.

use serde::{Deserialize, Serialize};

/// Where an order's last checkout attempt stands, as recorded in the order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Its steps may have been sent: any driver finishes it before the order changes.
    /// (`paying` and `reserving` are two records an attempt went through before one record
    /// replaced them: a driver finishes them the same way.)
    #[serde(rename = "in_flight", alias = "paying", alias = "reserving")]
    InFlight,
    /// A step was refused: every step that may have applied is being undone. Never rolls
    /// forward.
    #[serde(rename = "compensating")]
    Compensating,
    /// Paid and every item's stock taken.
    #[serde(rename = "paid")]
    Paid,
    /// Undone; the order may be checked out again with a new attempt.
    #[serde(rename = "failed")]
    Failed,
}

impl Phase {
    /// Whether a driver must finish the attempt before anything else happens to the order.
    pub fn under_way(self) -> bool {
        matches!(self, Phase::InFlight | Phase::Compensating)
    }
}

/// Why the saga is driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A client's checkout: start a new attempt unless the order is paid.
    Checkout,
    /// Finish an attempt found in flight (at start or before another write); start nothing.
    Resume,
}

/// What the driver does with the order it read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Answer that the order is paid (nothing is charged).
    AlreadyPaid,
    /// Answer with the last attempt's failure (a resume that found nothing in flight).
    LastOutcome,
    /// Record a new attempt in flight, then send its steps.
    NewAttempt,
    /// Send the steps of the attempt in flight again and finish it.
    Finish,
    /// Undo every step of the attempt being compensated (its driver's list of what to undo
    /// is not recorded; undoing a step that never applied only fences it), then record it
    /// failed.
    Undo,
}

/// The first decision, from the order as read: whether it is `paid`, and the `phase` of its
/// last attempt, if any.
pub fn start(mode: Mode, paid: bool, phase: Option<Phase>) -> Start {
    match (phase, paid, mode) {
        (Some(Phase::InFlight), _, _) => Start::Finish,
        (Some(Phase::Compensating), _, _) => Start::Undo,
        (_, true, _) => Start::AlreadyPaid,
        (_, false, Mode::Checkout) => Start::NewAttempt,
        (_, false, Mode::Resume) => Start::LastOutcome,
    }
}

/// A participant's business answer to a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied (or applied before under the same transaction).
    Done,
    /// Refused, with the participant's text (not enough credit, item not found, ...).
    Refused(String),
}

/// A step's answer, and whether some try of it went unanswered (a copy of it may then still
/// arrive at the participant later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answered {
    /// The business answer.
    pub outcome: Outcome,
    /// Whether an earlier try got no answer.
    pub unsure: bool,
}

/// What an attempt does once every step has answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterSteps {
    /// Every step applied: record the order paid.
    RollForward,
    /// Some step refused: record the attempt compensating for `reason` (the first refusal's
    /// text, in step order), compensate these steps (indices into the steps), then record it
    /// failed.
    Compensate {
        /// The steps to undo.
        undo: Vec<usize>,
        /// The client's 400 text.
        reason: String,
    },
}

/// The decision once every step of the attempt answered. `started_here`: this driver
/// recorded the attempt in flight, so its tries are the only copies of the steps that were
/// ever sent. A refused step needs no undo only then, and only if each of its tries was
/// answered; every other step is undone: applied ones are put back, and the compensation of
/// one that never arrived is recorded, which refuses a late copy of it.
pub fn after_steps(answers: &[Answered], started_here: bool) -> AfterSteps {
    let Some(reason) = answers.iter().find_map(|a| match &a.outcome {
        Outcome::Refused(reason) => Some(reason.clone()),
        Outcome::Done => None,
    }) else {
        return AfterSteps::RollForward;
    };
    let undo = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.outcome == Outcome::Done || a.unsure || !started_here)
        .map(|(i, _)| i)
        .collect();
    AfterSteps::Compensate { undo, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_follows_the_record() {
        use Mode::*;
        use Start::*;
        let cases = [
            // mode, paid, phase, decision
            (Checkout, false, None, NewAttempt),
            (Resume, false, None, LastOutcome),
            (Checkout, false, Some(Phase::Failed), NewAttempt),
            (Resume, false, Some(Phase::Failed), LastOutcome),
            (Checkout, true, Some(Phase::Paid), AlreadyPaid),
            (Resume, true, Some(Phase::Paid), AlreadyPaid),
            // An attempt in flight is finished first, whoever asks; its end is the answer.
            (Checkout, false, Some(Phase::InFlight), Finish),
            (Resume, false, Some(Phase::InFlight), Finish),
            // A compensation under way only ever ends in a failure.
            (Checkout, false, Some(Phase::Compensating), Undo),
            (Resume, false, Some(Phase::Compensating), Undo),
        ];
        for (mode, paid, phase, want) in cases {
            assert_eq!(start(mode, paid, phase), want, "{mode:?} paid={paid} {phase:?}");
        }
    }

    fn done(unsure: bool) -> Answered {
        Answered { outcome: Outcome::Done, unsure }
    }

    fn refused(text: &str, unsure: bool) -> Answered {
        Answered { outcome: Outcome::Refused(text.into()), unsure }
    }

    fn undo(steps: &[usize], reason: &str) -> AfterSteps {
        AfterSteps::Compensate { undo: steps.to_vec(), reason: reason.into() }
    }

    #[test]
    fn after_the_steps() {
        let cases: Vec<(Vec<Answered>, bool, AfterSteps)> = vec![
            // Every step applied: roll forward, however the attempt was reached.
            (vec![done(false), done(false), done(true)], true, AfterSteps::RollForward),
            (vec![done(true), done(false)], false, AfterSteps::RollForward),
            // Payment refused at once, items taken: the items are put back.
            (
                vec![refused("not enough credit", false), done(false), done(false)],
                true,
                undo(&[1, 2], "not enough credit"),
            ),
            // An item refused: the payment and the other item are undone.
            (
                vec![done(false), refused("not enough stock", false), done(false)],
                true,
                undo(&[0, 2], "not enough stock"),
            ),
            // A refusal after an unanswered try: a late copy may still apply, so it is fenced.
            (vec![refused("not enough credit", true), done(false)], true, undo(&[0, 1], "not enough credit")),
            // Everything refused at once by this driver's only tries: nothing to undo.
            (
                vec![refused("not enough credit", false), refused("item not found", false)],
                true,
                undo(&[], "not enough credit"),
            ),
            // An attempt another driver started: any step may have been sent by it, so every
            // step is undone, refused or not.
            (vec![done(false), refused("not enough stock", false)], false, undo(&[0, 1], "not enough stock")),
            // The first refusal in step order gives the reason.
            (vec![done(false), refused("b", false), refused("c", false)], true, undo(&[0], "b")),
        ];
        for (answers, started_here, want) in cases {
            assert_eq!(after_steps(&answers, started_here), want, "{answers:?} started_here={started_here}");
        }
    }

    #[test]
    fn the_records_of_an_attempt_before_one_record_read_as_in_flight() {
        for old in ["paying", "reserving", "in_flight"] {
            let p: Phase = serde_json::from_str(&format!("\"{old}\"")).unwrap();
            assert_eq!(p, Phase::InFlight, "{old}");
        }
        assert_eq!(serde_json::from_str::<Phase>("\"compensating\"").unwrap(), Phase::Compensating);
        assert_eq!(serde_json::to_string(&Phase::InFlight).unwrap(), "\"in_flight\"");
        assert_eq!(serde_json::from_str::<Phase>("\"paid\"").unwrap(), Phase::Paid);
        assert_eq!(serde_json::from_str::<Phase>("\"failed\"").unwrap(), Phase::Failed);
    }
}
