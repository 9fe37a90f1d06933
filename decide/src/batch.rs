//! How many queued items go out together: whoever takes the next item of a queue also takes
//! every item queued behind it, up to a cap. The fan-out to a peer, the order service's calls
//! to another service and the MongoDB writer batch this way (`net::batching`,
//! `store::mongo`).

/// `first` and every item `next` still gives (`None`: the queue is empty), while the total
/// weight taken stays under `cap` (the last item taken may cross it; a heavy first item goes
/// alone).
pub fn take_queued<T>(
    first: T,
    mut next: impl FnMut() -> Option<T>,
    cap: usize,
    weight: impl Fn(&T) -> usize,
) -> Vec<T> {
    let mut n = weight(&first);
    let mut batch = vec![first];
    while n < cap {
        match next() {
            Some(item) => {
                n += weight(&item);
                batch.push(item);
            }
            None => break,
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_what_is_queued_up_to_the_cap() {
        let mut queue = std::collections::VecDeque::from([2, 3, 4, 1]);
        let mut next = || queue.pop_front();
        // 1 + 2 + 3 = 6 reaches the cap of 5 after the third item.
        assert_eq!(take_queued(1, &mut next, 5, |w| *w), vec![1, 2, 3]);
        assert_eq!(take_queued(9, &mut next, 5, |w| *w), vec![9], "a heavy first item goes alone");
        assert_eq!(take_queued(0, &mut next, 5, |w| *w), vec![0, 4, 1], "stops when the queue is empty");
    }
}
