//! A service's rolling-update status (docker's UpdateStatus) is the orchestrator's to move on
//! (completed, paused) once the control API has started an update. It is not part of the spec:
//! changing it leaves the service's version alone, so a user's `service update` read before
//! it still applies, and the orchestrator's change applies only to the version it judged.

use shoal_proto::UpdateStatusChange;

use super::{check_version, version, ApplyError, StoreState, Undo};

impl StoreState {
    pub(super) fn apply_update_status(
        &mut self,
        change: &UpdateStatusChange,
        undo: &mut Vec<Undo>,
    ) -> Result<(), ApplyError> {
        let id = &change.service_id;
        let stored = self
            .services
            .get_mut(id)
            .ok_or_else(|| ApplyError::NoSuchService(id.clone()))?;
        check_version("service", id, change.service_version, version(&stored.meta))?;
        let before = stored.clone();
        stored.update_status = change.status.clone();
        undo.push(Undo::Service(id.clone(), Some(before.into())));
        Ok(())
    }
}
