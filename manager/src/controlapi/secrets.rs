//! `secret create/ls/inspect/rm` and `config create/ls/inspect/rm`, and the resolution of a
//! service's `--secret`/`--config` names to IDs. A secret's data goes into the store (the
//! sealed Raft log) and out only to the workers that run a task using it (the dispatcher):
//! no answer of this API carries it. A secret or config that a service references is not
//! removed (checked here for the message, and again when the entry applies).

use std::collections::HashMap;

use shoal_proto::validate::secrets::{self as checks, Kind};
use shoal_proto::{
    store_action::Action, Config, ConfigSpec, Meta, Secret, SecretSpec, ServiceSpec, StoreAction,
};
use tonic::Status;

use super::{act, lookup, store_status, ActiveManager};
use crate::ids::{new_id, now_ms};
use crate::store::state::{by_name, FileObject};
use crate::store::{ApplyError, StoreState};

/// What the two kinds' calls need beyond [`FileObject`]: where the store keeps them, how the
/// user's spec becomes one, and how an answer is made.
pub(super) trait Stored: FileObject {
    fn map(st: &StoreState) -> &std::collections::BTreeMap<String, Self>;
    fn create_action(self) -> Action;
    fn delete_action(id: String) -> Action;
    /// What ListSecrets/GetSecret answer: a secret without its data; a config as it is.
    fn answer(self) -> Self;
}

impl Stored for Secret {
    fn map(st: &StoreState) -> &std::collections::BTreeMap<String, Self> {
        &st.secrets
    }
    fn create_action(self) -> Action {
        Action::CreateSecret(self.into())
    }
    fn delete_action(id: String) -> Action {
        Action::DeleteSecret(id)
    }
    fn answer(mut self) -> Self {
        if let Some(spec) = self.spec.as_mut() {
            spec.data = Vec::new();
        }
        self
    }
}

impl Stored for Config {
    fn map(st: &StoreState) -> &std::collections::BTreeMap<String, Self> {
        &st.configs
    }
    fn create_action(self) -> Action {
        Action::CreateConfig(self.into())
    }
    fn delete_action(id: String) -> Action {
        Action::DeleteConfig(id)
    }
    fn answer(self) -> Self {
        self
    }
}

fn meta_now() -> Option<Meta> {
    let now = now_ms();
    Some(Meta {
        version: 0,
        created_at_ms: now,
        updated_at_ms: now,
    })
}

fn checked(
    kind: Kind,
    name: &str,
    labels: &HashMap<String, String>,
    data: &[u8],
) -> Result<(), Status> {
    checks::object(kind, name, labels, data).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// `secret create`: the stored secret, without its data.
pub(super) async fn create_secret(m: &ActiveManager, spec: SecretSpec) -> Result<Secret, Status> {
    checked(Kind::Secret, &spec.name, &spec.labels, &spec.data)?;
    let secret = Secret {
        id: new_id(),
        meta: meta_now(),
        spec: Some(spec),
    };
    create(m, secret).await
}

/// `config create`: the stored config.
pub(super) async fn create_config(m: &ActiveManager, spec: ConfigSpec) -> Result<Config, Status> {
    checked(Kind::Config, &spec.name, &spec.labels, &spec.data)?;
    let config = Config {
        id: new_id(),
        meta: meta_now(),
        spec: Some(spec),
    };
    create(m, config).await
}

async fn create<T: Stored>(m: &ActiveManager, object: T) -> Result<T, Status> {
    let (id, name) = (object.id().to_string(), object.name().to_string());
    if m.store.view(|st| by_name(T::map(st), &name).is_some()) {
        let taken = ApplyError::SecretNameTaken {
            kind: T::KIND,
            name,
        };
        return Err(Status::already_exists(taken.to_string()));
    }
    m.store
        .propose(vec![act(object.create_action())])
        .await
        .map_err(store_status)?;
    m.store
        .view(|st| T::map(st).get(&id).cloned())
        .map(T::answer)
        .ok_or_else(|| Status::internal(format!("{} vanished right after creation", T::KIND)))
}

/// Every object of a kind, by name, as answered.
pub(super) fn list<T: Stored>(st: &StoreState) -> Vec<T> {
    let mut all: Vec<T> = T::map(st).values().cloned().map(T::answer).collect();
    all.sort_by(|a, b| a.name().cmp(b.name()));
    all
}

/// One object by exact ID, exact name or unique ID prefix, as answered.
pub(super) fn find<T: Stored>(st: &StoreState, key: &str) -> Result<T, Status> {
    lookup(T::map(st), key, T::id, T::name, T::KIND.name())
        .cloned()
        .map(T::answer)
}

/// `secret rm`/`config rm`: refused while a service references it.
pub(super) async fn remove<T: Stored>(m: &ActiveManager, key: &str) -> Result<(), Status> {
    let id = m.store.view(|st| {
        let id = find::<T>(st, key)?.id().to_string();
        st.check_unused(T::map(st), &id)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok::<_, Status>(id)
    })?;
    m.store
        .propose(vec![StoreAction {
            action: Some(T::delete_action(id)),
        }])
        .await
        .map_err(store_status)?;
    Ok(())
}

/// The ID of the object of kind `T` named `name`: docker resolves `--secret` sources by name.
fn resolve<T: Stored>(st: &StoreState, name: &str) -> Result<String, Status> {
    by_name(T::map(st), name)
        .map(|o| o.id().to_string())
        .ok_or_else(|| {
            Status::not_found(format!(
                "{kind} not found: {name}; create it first with `shoal {kind} create {name} FILE`",
                kind = T::KIND
            ))
        })
}

/// Gives every `--secret` and `--config` of the spec the ID of the object its name names.
pub(super) fn resolve_references(st: &StoreState, spec: &mut ServiceSpec) -> Result<(), Status> {
    let Some(c) = spec.container.as_mut() else {
        return Ok(());
    };
    for r in &mut c.secrets {
        r.secret_id = resolve::<Secret>(st, &r.secret_name)?;
    }
    for r in &mut c.configs {
        r.config_id = resolve::<Config>(st, &r.config_name)?;
    }
    Ok(())
}
