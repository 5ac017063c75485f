//! Volume calls: remove and list.

use std::collections::HashMap;

use bollard::models::Volume;
use bollard::query_parameters::{ListVolumesOptionsBuilder, RemoveVolumeOptionsBuilder};
use executor_base::Error;
use executor_base::engine::{CallClass, Idempotency};

use super::{Engine, gone_is_false};

impl Engine {
    /// Removes a volume; `Ok(false)` when it did not exist.
    pub(crate) async fn remove_volume(&self, name: &str) -> Result<bool, Error> {
        self.call_expecting(
            CallClass::Stop,
            "remove_volume",
            Idempotency::Idempotent,
            gone_is_false,
            |d| async move {
                d.remove_volume(
                    name,
                    Some(RemoveVolumeOptionsBuilder::new().force(false).build()),
                )
                .await
                .map(|()| true)
            },
        )
        .await
    }

    /// All volumes carrying every one of `labels`.
    pub(crate) async fn list_volumes(&self, labels: &[String]) -> Result<Vec<Volume>, Error> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        self.call(
            CallClass::Read,
            "list_volumes",
            Idempotency::Idempotent,
            |d| {
                let filters = filters.clone();
                async move {
                    let opts = ListVolumesOptionsBuilder::new().filters(&filters).build();
                    d.list_volumes(Some(opts))
                        .await
                        .map(|r| r.volumes.unwrap_or_default())
                }
            },
        )
        .await
    }
}
