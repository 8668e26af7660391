//! A scripted [`AlertSource`] for the service's tests.

use std::sync::Mutex;

use async_trait::async_trait;

use super::{AlertSource, AlertSourceError, SilenceInfo};
use crate::core::sync::ReplicaAnswer;

/// Answers what the test last set; counts the calls.
#[derive(Default)]
pub struct FakeAlertSource {
    answers: Mutex<Vec<ReplicaAnswer>>,
    silences: Mutex<Vec<SilenceInfo>>,
}

impl FakeAlertSource {
    /// Every later sync gets these answers, one per replica.
    pub fn answer(&self, answers: Vec<ReplicaAnswer>) {
        *self.answers.lock().unwrap() = answers;
    }

    /// The silences `/api/v2/silences` lists from now on.
    pub fn set_silences(&self, silences: Vec<SilenceInfo>) {
        *self.silences.lock().unwrap() = silences;
    }
}

#[async_trait]
impl AlertSource for FakeAlertSource {
    async fn alerts(&self) -> Vec<ReplicaAnswer> {
        self.answers.lock().unwrap().clone()
    }

    async fn silences(&self, ids: &[String]) -> Result<Vec<SilenceInfo>, AlertSourceError> {
        Ok(self.silences.lock().unwrap().iter().filter(|s| ids.contains(&s.id)).cloned().collect())
    }
}
