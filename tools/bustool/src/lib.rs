//! A handler for exercising the shared bus from separate processes (tests and benchmarks).
//!
//! For every event it records the handling in Redis (`{prefix}:test:handled`, a hash of event
//! id → times handled, and `{prefix}:test:order:<chat>`, the order events of one chat were
//! handled in) and answers with an `Outbound` event published atomically with the ack.

use std::time::Duration;

use shared::bus::{Bus, Delivery, HandleError, Handler, Publish, Stream};
use shared::proto::{Envelope, Outbound, Payload};

/// How the worker behaves (from `WORKER_*` variables).
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Sleep this long in every handling.
    pub sleep: Duration,
    /// Fail every time (retryable).
    pub fail: bool,
    /// Publish an answer for every event.
    pub answer: bool,
    /// Record handling in Redis.
    pub record: bool,
    /// Panic on the first delivery of every event.
    pub panic_first: bool,
    /// What the handler declares as its deadline (the stuck watchdog's measure).
    pub deadline: Option<Duration>,
}

pub struct TestHandler {
    pub bus: Bus,
    pub name: String,
    pub behaviour: Behaviour,
}

fn chat_of(env: &Envelope) -> String {
    match &env.payload {
        Some(Payload::Inbound(i)) => i.chat_id.clone(),
        Some(Payload::Outbound(o)) => o.chat_id.clone(),
        _ => String::new(),
    }
}

impl Handler for TestHandler {
    async fn handle(&self, d: Delivery) -> Result<Vec<Publish>, HandleError> {
        tokio::time::sleep(self.behaviour.sleep).await;
        assert!(
            !(self.behaviour.panic_first && d.deliveries == 1),
            "induced panic on the first delivery of {}",
            d.envelope.event_id
        );
        if self.behaviour.fail {
            return Err(HandleError::Retry(
                format!(
                    "induced failure #{} of {}",
                    d.deliveries, d.envelope.event_id
                )
                .into(),
            ));
        }
        let chat = chat_of(&d.envelope);
        if self.behaviour.record {
            let keys = self.bus.keys();
            let mut pipe = redis::pipe();
            pipe.cmd("HINCRBY")
                .arg(keys.key("test:handled"))
                .arg(&d.envelope.event_id)
                .arg(1)
                .ignore()
                .cmd("RPUSH")
                .arg(keys.key(&format!("test:order:{chat}")))
                .arg(&d.envelope.event_id)
                .ignore();
            pipe.query_async::<()>(&mut self.bus.connection())
                .await
                .map_err(|e| HandleError::retry("failed", e))?;
        }
        if !self.behaviour.answer {
            return Ok(Vec::new());
        }
        let answer = Envelope::new(
            "bus-worker",
            Payload::Outbound(Outbound {
                message_id: d.envelope.event_id.clone(),
                chat_id: chat.clone(),
                text: self.name.clone(),
                in_reply_to: d.envelope.event_id.clone(),
                ..Default::default()
            }),
        );
        Ok(vec![Publish::ordered(Stream::Outbound, answer, chat)])
    }

    fn deadline(&self) -> Duration {
        self.behaviour.deadline.unwrap_or(Duration::from_secs(30))
    }
}
