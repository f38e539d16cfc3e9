//! The stand-in's producers and consumers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde_json::{Value, json};

use super::memory::{RouterState, later, lock};
use super::{
    BoxFuture, Consumer, ConsumerEvent, ConsumerHandler, MediaError, MediaKind, MediaResult,
    Producer,
};

pub(super) struct MemoryProducer {
    pub(super) id: String,
    pub(super) kind: MediaKind,
    pub(super) rtp_parameters: Value,
    pub(super) app_data: Value,
    pub(super) router: Weak<Mutex<RouterState>>,
    pub(super) paused: AtomicBool,
    pub(super) closed: AtomicBool,
    pub(super) consumers: Mutex<Vec<Arc<MemoryConsumer>>>,
}

impl MemoryProducer {
    /// Tells its open consumers.
    fn tell(&self, event: &ConsumerEvent) {
        let consumers = lock(&self.consumers).clone();
        for consumer in consumers {
            consumer.emit(event);
        }
    }

    fn set_paused(&self, paused: bool) -> MediaResult<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(MediaError(format!("producer {} closed", self.id)));
        }
        if self.paused.swap(paused, Ordering::SeqCst) != paused {
            self.tell(&if paused {
                ConsumerEvent::ProducerPause
            } else {
                ConsumerEvent::ProducerResume
            });
        }
        Ok(())
    }
}

impl Producer for MemoryProducer {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> MediaKind {
        self.kind
    }

    fn app_data(&self) -> Value {
        self.app_data.clone()
    }

    fn pause(&self) -> BoxFuture<'_, MediaResult<()>> {
        later(move || self.set_paused(true))
    }

    fn resume(&self) -> BoxFuture<'_, MediaResult<()>> {
        later(move || self.set_paused(false))
    }

    fn stats(&self) -> BoxFuture<'_, MediaResult<Value>> {
        later(move || {
            Ok(
                json!([{ "type": "inbound-rtp", "kind": self.kind, "producerId": self.id,
                        "packetCount": 0, "byteCount": 0, "score": 10 }]),
            )
        })
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(router) = self.router.upgrade() {
            lock(&router).producers.remove(&self.id);
        }
        let consumers = std::mem::take(&mut *lock(&self.consumers));
        for consumer in consumers {
            consumer.close_because(ConsumerEvent::ProducerClose);
        }
    }
}

pub(super) struct MemoryConsumer {
    pub(super) id: String,
    pub(super) kind: MediaKind,
    pub(super) rtp_parameters: Value,
    pub(super) simulcast: bool,
    pub(super) producer: Weak<MemoryProducer>,
    pub(super) paused: AtomicBool,
    pub(super) closed: AtomicBool,
    pub(super) handlers: Mutex<Vec<ConsumerHandler>>,
}

impl MemoryConsumer {
    /// Calls the handlers (outside the lock: they may call back).
    fn emit(&self, event: &ConsumerEvent) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let handlers = lock(&self.handlers).clone();
        for handler in handlers {
            handler(event.clone());
        }
    }

    /// Closed by its transport or its producer: tells the handlers why.
    pub(super) fn close_because(&self, event: ConsumerEvent) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let handlers = std::mem::take(&mut *lock(&self.handlers));
        for handler in handlers {
            handler(event.clone());
        }
    }

    fn open(&self) -> MediaResult<()> {
        if self.closed.load(Ordering::SeqCst) {
            Err(MediaError(format!("consumer {} closed", self.id)))
        } else {
            Ok(())
        }
    }
}

impl Consumer for MemoryConsumer {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> MediaKind {
        self.kind
    }

    fn rtp_parameters(&self) -> Value {
        self.rtp_parameters.clone()
    }

    fn consumer_type(&self) -> &'static str {
        if self.simulcast {
            "simulcast"
        } else {
            "simple"
        }
    }

    fn producer_paused(&self) -> bool {
        self.producer
            .upgrade()
            .is_some_and(|producer| producer.paused.load(Ordering::SeqCst))
    }

    fn score(&self) -> Value {
        json!({ "score": 10, "producerScore": 10, "producerScores": [10] })
    }

    fn on_event(&self, handler: ConsumerHandler) {
        if !self.closed.load(Ordering::SeqCst) {
            lock(&self.handlers).push(handler);
        }
    }

    fn pause(&self) -> BoxFuture<'_, MediaResult<()>> {
        later(move || {
            self.open()?;
            self.paused.store(true, Ordering::SeqCst);
            Ok(())
        })
    }

    fn resume(&self) -> BoxFuture<'_, MediaResult<()>> {
        later(move || {
            self.open()?;
            self.paused.store(false, Ordering::SeqCst);
            Ok(())
        })
    }

    fn set_preferred_layers(
        &self,
        spatial: u8,
        temporal: Option<u8>,
    ) -> BoxFuture<'_, MediaResult<()>> {
        later(move || {
            self.open()?;
            if self.simulcast {
                let layers = json!({ "spatialLayer": spatial, "temporalLayer": temporal });
                self.emit(&ConsumerEvent::LayersChange(Some(layers)));
            }
            Ok(())
        })
    }

    fn set_priority(&self, priority: u8) -> BoxFuture<'_, MediaResult<()>> {
        later(move || {
            self.open()?;
            if priority == 0 {
                return Err(MediaError("priority must be 1 or more".into()));
            }
            Ok(())
        })
    }

    fn request_key_frame(&self) -> BoxFuture<'_, MediaResult<()>> {
        later(move || {
            self.open()?;
            // The key frame refreshes the stream: a new score.
            self.emit(&ConsumerEvent::Score(self.score()));
            Ok(())
        })
    }

    fn stats(&self) -> BoxFuture<'_, MediaResult<Value>> {
        later(move || {
            Ok(
                json!([{ "type": "outbound-rtp", "kind": self.kind, "consumerId": self.id,
                        "paused": self.paused.load(Ordering::SeqCst),
                        "packetCount": 0, "byteCount": 0, "score": 10 }]),
            )
        })
    }
}
