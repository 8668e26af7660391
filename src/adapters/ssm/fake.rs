//! Parameter Store in memory, for unit tests.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{ParameterError, Parameters};

/// Parameters by name; `down` makes every read fail as SSM being unreachable.
#[derive(Default)]
pub struct FakeParameters {
    pub values: Mutex<HashMap<String, String>>,
    pub down: std::sync::atomic::AtomicBool,
}

impl FakeParameters {
    pub fn put(&self, name: &str, value: &str) {
        self.values.lock().unwrap().insert(name.into(), value.into());
    }
}

#[async_trait]
impl Parameters for FakeParameters {
    async fn get(&self, name: &str) -> Result<String, ParameterError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ParameterError::Unavailable {
                name: name.into(),
                code: "unavailable".into(),
                message: "connection refused".into(),
            });
        }
        self.values.lock().unwrap().get(name).cloned().ok_or(ParameterError::NotFound { name: name.into() })
    }
}
