//! A scripted [`NoticeQueue`] for the service's tests: messages queued by the test, one
//! receive hands out everything visible, deletes are recorded, undeleted messages are handed
//! out again on the next receive (as after a visibility timeout).

use std::sync::Mutex;

use async_trait::async_trait;

use super::{NoticeMessage, NoticeQueue, QueueError};

/// The queue's messages and what happened to them.
#[derive(Default)]
pub struct FakeNoticeQueue {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Not yet deleted: (message, times handed out).
    messages: Vec<(NoticeMessage, u32)>,
    deleted: Vec<String>,
    next_id: u32,
}

impl FakeNoticeQueue {
    /// Queues a message with `body`.
    pub fn send(&self, body: &str) {
        let mut state = self.state.lock().unwrap();
        state.next_id += 1;
        let id = format!("m-{}", state.next_id);
        let message =
            NoticeMessage { message_id: id.clone(), receipt_handle: id, body: body.into(), receive_count: 0 };
        state.messages.push((message, 0));
    }

    /// Bodies of the messages deleted so far, in order.
    pub fn deleted(&self) -> Vec<String> {
        self.state.lock().unwrap().deleted.clone()
    }

    /// Messages not deleted yet.
    pub fn remaining(&self) -> usize {
        self.state.lock().unwrap().messages.len()
    }
}

#[async_trait]
impl NoticeQueue for FakeNoticeQueue {
    async fn receive(&self) -> Result<Vec<NoticeMessage>, QueueError> {
        let mut state = self.state.lock().unwrap();
        Ok(state
            .messages
            .iter_mut()
            .map(|(message, count)| {
                *count += 1;
                NoticeMessage { receive_count: *count, ..message.clone() }
            })
            .collect())
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        let mut state = self.state.lock().unwrap();
        if let Some(at) = state.messages.iter().position(|(m, _)| m.receipt_handle == receipt_handle) {
            let (message, _) = state.messages.remove(at);
            state.deleted.push(message.body);
        }
        Ok(())
    }
}
