//! Server-sent events of a conversation (`GET …/events`): new messages and the typing
//! indicator, resuming after `Last-Event-ID`; the caps on open streams (in all, per
//! conversation, per client address); and their maximum life (`WEBCHAT_STREAM_MAX_SECS`: the
//! page reconnects with `Last-Event-ID`, so a stream ended this way loses nothing).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shared::http::json_error;

use super::{ChatMessage, Conversation, Direction, Note, Reject, Webchat, history, unavailable};
use crate::config::TransportKind;
use crate::transport::ReceiptStatus;

/// Open event streams: per conversation, per client address, and in all.
#[derive(Default)]
pub(super) struct OpenStreams {
    per_contact: HashMap<String, usize>,
    per_address: HashMap<IpAddr, usize>,
    total: usize,
}

/// An open event stream's place under the caps, given back when the stream ends.
struct StreamSlot {
    wc: Webchat,
    contact: String,
    address: Option<IpAddr>,
}

/// One fewer under `key` in `counts`, and no entry once none is left.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.wc.inner.streams.lock().expect("streams lock");
        open.total -= 1;
        release(&mut open.per_contact, &self.contact);
        if let Some(a) = &self.address {
            release(&mut open.per_address, a);
        }
    }
}

impl Webchat {
    /// A place for one more event stream of `contact` from the client `address`, unless a cap
    /// is reached.
    fn open_stream(&self, contact: &str, address: Option<IpAddr>) -> Result<StreamSlot, Reject> {
        let inner = &self.inner;
        let mut open = inner.streams.lock().expect("streams lock");
        let n = open.per_contact.get(contact).copied().unwrap_or(0);
        if n >= inner.max_streams_per_contact {
            return Err(Reject::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "this conversation has {n} event streams open already (WEBCHAT_MAX_STREAMS_PER_CONTACT)"
                ),
            ));
        }
        let from_address = address.map_or(0, |a| open.per_address.get(&a).copied().unwrap_or(0));
        if from_address >= inner.max_streams_per_address {
            return Err(Reject::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "this address has {from_address} event streams open already \
                     (WEBCHAT_MAX_STREAMS_PER_ADDRESS)"
                ),
            ));
        }
        if open.total >= inner.max_streams {
            return Err(Reject::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many event streams open on this server (WEBCHAT_MAX_STREAMS); try again shortly",
            ));
        }
        open.total += 1;
        open.per_contact.insert(contact.to_owned(), n + 1);
        if let Some(a) = address {
            open.per_address.insert(a, from_address + 1);
        }
        Ok(StreamSlot {
            wc: self.clone(),
            contact: contact.to_owned(),
            address,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct EventsQuery {
    after: Option<String>,
}

fn valid_entry_id(id: &str) -> bool {
    id == "0"
        || id.split_once('-').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        })
}

pub(super) async fn events(
    State(wc): State<Webchat>,
    Conversation(contact): Conversation,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
) -> Response {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(q.after);
    let last = match resume {
        Some(id) if valid_entry_id(&id) => {
            if id == "0" {
                "0-0".to_owned()
            } else {
                id
            }
        }
        Some(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "Last-Event-ID must be an event id this stream sent (like 1700000000000-0)",
            );
        }
        None => match wc.inner.history.last_id(&contact).await {
            Ok(id) => id,
            Err(e) => return unavailable(&e),
        },
    };
    let peer = extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let address = wc.inner.visitors.client.key(&headers, peer);
    let slot = match wc.open_stream(&contact, address) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    use futures_util::StreamExt;
    // Ends at shutdown, or at the end of its life: the page reconnects with Last-Event-ID.
    let shutdown = wc.inner.shutdown.clone().cancelled_owned();
    let life = tokio::time::sleep(wc.inner.stream_max_life);
    let end = async move {
        tokio::select! {
            () = shutdown => {}
            () = life => {}
        }
    };
    let stream = sse_stream(wc, contact, last, slot).take_until(end);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

struct SseState {
    wc: Webchat,
    contact: String,
    last: String,
    pending: std::collections::VecDeque<Event>,
    notes: history::Listener,
    /// Held while the stream is open.
    _slot: StreamSlot,
    /// The last read returned less than a page: nothing newer until the next notification
    /// (one arriving meanwhile is queued in `notes`), so no read before waiting.
    caught_up: bool,
}

impl SseState {
    /// Queues history entries as `message` events; the customer's page has an answer once it
    /// is streamed, so answers are receipted as delivered.
    fn queue(&mut self, entries: Vec<(String, ChatMessage)>) {
        for (id, msg) in entries {
            if msg.direction == Direction::Out {
                let receipts = self.wc.inner.receipts.clone();
                let mid = msg.id.clone();
                tokio::spawn(async move {
                    let _ = receipts
                        .receipt(TransportKind::Webchat, &mid, ReceiptStatus::Delivered)
                        .await;
                });
            }
            let data = serde_json::to_string(&msg).expect("serialises");
            self.pending
                .push_back(Event::default().event("message").id(id.clone()).data(data));
            self.last = id;
        }
    }

    /// Nothing new: waits for a notification (or polls again after a while). Only this
    /// contact's notifications arrive here, so any of them ends the wait.
    async fn wait(&mut self) {
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        tokio::select! {
            () = &mut deadline => self.caught_up = false,
            note = self.notes.notes.recv() => match note {
                Ok(Note::Typing(on)) => {
                    self.pending.push_back(
                        Event::default().event("typing").data(format!("{{\"on\":{on}}}")),
                    );
                }
                Ok(Note::Message) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    self.caught_up = false;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    deadline.as_mut().await;
                    self.caught_up = false;
                }
            }
        }
    }
}

/// Entries read from the history at a time.
const READ_PAGE: usize = 100;

fn sse_stream(
    wc: Webchat,
    contact: String,
    last: String,
    slot: StreamSlot,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> {
    let notes = wc
        .inner
        .history
        .listen(&wc.inner.history.contact_hash(&contact));
    let state = SseState {
        wc,
        contact,
        last,
        pending: std::collections::VecDeque::new(),
        notes,
        _slot: slot,
        caught_up: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(ev) = s.pending.pop_front() {
                return Some((Ok(ev), s));
            }
            if s.caught_up {
                s.wait().await;
                continue;
            }
            let read =
                s.wc.inner
                    .history
                    .after(&s.contact, Some(&s.last), READ_PAGE);
            match read.await {
                Ok(entries) => {
                    s.caught_up = entries.len() < READ_PAGE;
                    s.queue(entries);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "web chat events: Redis unavailable; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })
}
