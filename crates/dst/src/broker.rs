//! The simulated broker: what RabbitMQ promises the pipeline, and no more.
//!
//! - At least once: a delivery not acked when its consumer goes (a crash, a
//!   lost connection) goes back to its queue, at a position of the
//!   schedule's choosing, and is delivered again.
//! - A publish can be duplicated (a confirm lost, the message sent again).
//! - The batches queue has a single active consumer: the first subscribed;
//!   when it goes, the next one becomes active and is given what the first
//!   held.
//! - Streams (events, roster) are append-only logs read whole.
//! - Retries go through a delay, like the delay-queue tiers.

use std::collections::{BTreeMap, VecDeque};

use time::OffsetDateTime;
use xaas_core::roster::RosterRecord;
use xaas_core::{FetchPage, Page, RunEvent, UploaderMessage};

use crate::rng::Rng;

/// What travels on the work queues.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Fetch(FetchPage),
    Page(Page),
    Upload(UploaderMessage),
}

impl Msg {
    pub fn queue(&self) -> QueueName {
        match self {
            Msg::Fetch(_) => QueueName::Fetch,
            Msg::Page(_) => QueueName::Pages,
            Msg::Upload(_) => QueueName::Batches,
        }
    }

    /// A short label for the trace.
    pub fn label(&self) -> String {
        match self {
            Msg::Fetch(f) => format!("FetchPage {}#{}", f.run_id, f.seq),
            Msg::Page(p) => format!("Page {}#{} copy {}", p.run_id, p.seq, p.copy),
            Msg::Upload(UploaderMessage::Batch(b)) => {
                format!(
                    "Batch {}#{}.{} copy {} ({} {:?})",
                    b.run_id,
                    b.page_seq,
                    b.part,
                    b.copy,
                    b.profiles.len(),
                    b.op
                )
            }
            Msg::Upload(UploaderMessage::FinishRun(f)) => format!("FinishRun {}", f.run_id),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QueueName {
    Fetch,
    Pages,
    Batches,
}

/// A subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConsumerId(pub u64);

/// One delivery, to be acked by its tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tag(pub u64);

#[derive(Debug, Default)]
struct Queue {
    ready: VecDeque<Msg>,
}

#[derive(Debug)]
struct Consumer {
    queue: QueueName,
    prefetch: usize,
    held: usize,
}

#[derive(Debug, Default)]
pub struct SimBroker {
    fetch: Queue,
    pages: Queue,
    batches: Queue,
    unacked: BTreeMap<Tag, (ConsumerId, Msg)>,
    consumers: BTreeMap<ConsumerId, Consumer>,
    /// Subscribers of the batches queue, in order: the first is active.
    sac: Vec<ConsumerId>,
    delayed: Vec<(OffsetDateTime, Msg)>,
    pub events: Vec<RunEvent>,
    pub roster: Vec<RosterRecord>,
    pub parked: Vec<Msg>,
    next: u64,
}

impl SimBroker {
    fn queue(&mut self, q: QueueName) -> &mut Queue {
        match q {
            QueueName::Fetch => &mut self.fetch,
            QueueName::Pages => &mut self.pages,
            QueueName::Batches => &mut self.batches,
        }
    }

    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub fn subscribe(&mut self, queue: QueueName, prefetch: usize) -> ConsumerId {
        let id = ConsumerId(self.id());
        self.consumers.insert(id, Consumer { queue, prefetch, held: 0 });
        if queue == QueueName::Batches {
            self.sac.push(id);
        }
        id
    }

    /// The consumer goes (crash, lost connection, cancel): what it held is
    /// delivered again, each at a position the schedule picks.
    pub fn unsubscribe(&mut self, consumer: ConsumerId, rng: &mut Rng) {
        self.consumers.remove(&consumer);
        self.sac.retain(|c| *c != consumer);
        let held: Vec<Tag> = self.unacked.iter().filter(|(_, (c, _))| *c == consumer).map(|(t, _)| *t).collect();
        for tag in held {
            if let Some((_, msg)) = self.unacked.remove(&tag) {
                let queue = self.queue(msg.queue());
                let at = rng.below(queue.ready.len() + 1);
                queue.ready.insert(at, msg);
            }
        }
    }

    /// Whether `consumer` may be given a delivery now.
    pub fn can_deliver(&self, consumer: ConsumerId) -> bool {
        let Some(c) = self.consumers.get(&consumer) else { return false };
        if c.held >= c.prefetch {
            return false;
        }
        if c.queue == QueueName::Batches && self.sac.first() != Some(&consumer) {
            return false;
        }
        let ready = match c.queue {
            QueueName::Fetch => &self.fetch.ready,
            QueueName::Pages => &self.pages.ready,
            QueueName::Batches => &self.batches.ready,
        };
        !ready.is_empty()
    }

    pub fn deliver(&mut self, consumer: ConsumerId) -> Option<(Tag, Msg)> {
        if !self.can_deliver(consumer) {
            return None;
        }
        let queue = self.consumers.get(&consumer)?.queue;
        let msg = self.queue(queue).ready.pop_front()?;
        let tag = Tag(self.id());
        self.unacked.insert(tag, (consumer, msg.clone()));
        if let Some(c) = self.consumers.get_mut(&consumer) {
            c.held += 1;
        }
        Some((tag, msg))
    }

    /// Acks `tag`; false when the delivery is no longer held by `consumer`
    /// (it went back to the queue when its consumer went).
    pub fn ack(&mut self, consumer: ConsumerId, tag: Tag) -> bool {
        match self.unacked.get(&tag) {
            Some((c, _)) if *c == consumer => {
                self.unacked.remove(&tag);
                if let Some(c) = self.consumers.get_mut(&consumer) {
                    c.held -= 1;
                }
                true
            }
            _ => false,
        }
    }

    /// Publishes, sometimes twice (`dup` is the chance).
    pub fn publish(&mut self, msg: Msg, dup: f64, rng: &mut Rng) {
        if rng.chance(dup) {
            self.queue(msg.queue()).ready.push_back(msg.clone());
        }
        self.queue(msg.queue()).ready.push_back(msg);
    }

    /// Moves a held delivery to a delay: it comes back at `at`.
    pub fn retry_later(&mut self, consumer: ConsumerId, tag: Tag, msg: Msg, at: OffsetDateTime) {
        if self.ack(consumer, tag) {
            self.delayed.push((at, msg));
        }
    }

    pub fn park(&mut self, consumer: ConsumerId, tag: Tag, msg: Msg) {
        if self.ack(consumer, tag) {
            self.parked.push(msg);
        }
    }

    /// Delayed messages whose time has come go back to their queues.
    pub fn release(&mut self, now: OffsetDateTime) {
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.delayed).into_iter().partition(|(at, _)| *at <= now);
        self.delayed = later;
        for (_, msg) in due {
            self.queue(msg.queue()).ready.push_back(msg);
        }
    }

    /// When the next delayed message comes back.
    pub fn next_release(&self) -> Option<OffsetDateTime> {
        self.delayed.iter().map(|(at, _)| *at).min()
    }

    /// The active consumer of the batches queue.
    pub fn active_uploader(&self) -> Option<ConsumerId> {
        self.sac.first().copied()
    }
}
