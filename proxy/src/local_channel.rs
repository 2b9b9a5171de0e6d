//! An unbounded queue between tasks of one worker thread (sessions and backend connections):
//! no atomics, no locks, and no memory until something is queued.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Inner<T> {
    items: RefCell<VecDeque<T>>,
    /// The receiver's task, while it waits for an item.
    waker: Cell<Option<Waker>>,
    senders: Cell<usize>,
    receiving: Cell<bool>,
}

/// The sending half; clones send to the same receiver.
pub struct Sender<T>(Rc<Inner<T>>);

/// The receiving half.
pub struct Receiver<T>(Rc<Inner<T>>);

pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Rc::new(Inner {
        items: RefCell::new(VecDeque::new()),
        waker: Cell::new(None),
        senders: Cell::new(1),
        receiving: Cell::new(true),
    });
    (Sender(inner.clone()), Receiver(inner))
}

impl<T> Sender<T> {
    /// Queues `item` and wakes the receiver; `Err(item)` if the receiver is gone.
    pub fn send(&self, item: T) -> Result<(), T> {
        if !self.0.receiving.get() {
            return Err(item);
        }
        self.0.items.borrow_mut().push_back(item);
        if let Some(w) = self.0.waker.take() {
            w.wake();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.senders.set(self.0.senders.get() + 1);
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let left = self.0.senders.get() - 1;
        self.0.senders.set(left);
        if left == 0
            && let Some(w) = self.0.waker.take()
        {
            w.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The next item, or `None` once it is empty and every sender is gone.
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(item) = self.try_recv() {
            return Poll::Ready(Some(item));
        }
        if self.0.senders.get() == 0 {
            return Poll::Ready(None);
        }
        let waker = match self.0.waker.take() {
            Some(w) if w.will_wake(cx.waker()) => w,
            _ => cx.waker().clone(),
        };
        self.0.waker.set(Some(waker));
        Poll::Pending
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        self.0.items.borrow_mut().pop_front()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.receiving.set(false);
        self.0.waker.take();
        // Items may hold senders of other channels: drop them outside the borrow.
        let items = std::mem::take(&mut *self.0.items.borrow_mut());
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn items_come_in_order_and_the_end_when_every_sender_is_gone() {
        let (tx, mut rx) = channel();
        let tx2 = tx.clone();
        tx.send(1).unwrap();
        tx2.send(2).unwrap();
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), None);
        drop(tx);
        tx2.send(3).unwrap();
        drop(tx2);
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiting_receiver_is_woken_and_a_gone_one_refuses() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let (tx, mut rx) = channel::<u32>();
                let got = tokio::task::spawn_local(async move { rx.recv().await });
                tokio::task::yield_now().await;
                tx.send(7).unwrap();
                assert_eq!(got.await.unwrap(), Some(7));
                assert_eq!(tx.send(8), Err(8), "the receiver is gone");
            })
            .await;
    }
}
