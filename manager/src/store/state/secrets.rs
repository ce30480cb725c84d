//! The rules for secrets and configs (`secret create/rm`, `config create/rm`): a name is held
//! by one secret (one config) at a time, a service references only secrets and configs that
//! exist, and one that a service references is not deleted. The control API checks the same
//! first, for a clean refusal; this re-check when the entry applies is what makes a create
//! racing a delete safe.
//!
//! The two kinds differ only in words, so one generic set of rules ([`FileObject`]) serves
//! both. Secret data lives here as in the rest of the store: in memory, and on disk only inside
//! the sealed Raft log and snapshots.

use std::collections::BTreeMap;

use shoal_proto::validate::secrets::Kind;
use shoal_proto::{Config, Meta, Secret, Service};

use super::{stamp, ApplyError, StoreState};

/// What the rules need of a secret or a config.
pub trait FileObject: Clone {
    const KIND: Kind;
    fn id(&self) -> &str;
    fn name(&self) -> &str;
    fn meta_mut(&mut self) -> &mut Option<Meta>;
    /// The IDs of the objects of this kind a service references.
    fn referenced_by(service: &Service) -> Vec<&str>;
}

/// One kind's [`FileObject`]: its words, and the field of a service's container that lists
/// its references.
macro_rules! file_object {
    ($ty:ty, $kind:expr, $refs:ident, $ref_id:ident) => {
        impl FileObject for $ty {
            const KIND: Kind = $kind;
            fn id(&self) -> &str {
                &self.id
            }
            fn name(&self) -> &str {
                self.spec.as_ref().map_or("", |s| s.name.as_str())
            }
            fn meta_mut(&mut self) -> &mut Option<Meta> {
                &mut self.meta
            }
            fn referenced_by(service: &Service) -> Vec<&str> {
                container_of(service)
                    .map(|c| c.$refs.iter().map(|r| r.$ref_id.as_str()).collect())
                    .unwrap_or_default()
            }
        }
    };
}

file_object!(Secret, Kind::Secret, secrets, secret_id);
file_object!(Config, Kind::Config, configs, config_id);

fn container_of(service: &Service) -> Option<&shoal_proto::ContainerSpec> {
    service.spec.as_ref().and_then(|s| s.container.as_ref())
}

/// The object of `map` named `name`.
pub fn by_name<'a, T: FileObject>(map: &'a BTreeMap<String, T>, name: &str) -> Option<&'a T> {
    map.values().find(|o| o.name() == name)
}

/// Stores a new object under its own ID and name; returns what the ID held before (nothing).
pub(super) fn create<T: FileObject>(
    map: &mut BTreeMap<String, T>,
    index: u64,
    object: &T,
) -> Result<Option<T>, ApplyError> {
    if by_name(map, object.name()).is_some() {
        return Err(ApplyError::SecretNameTaken {
            kind: T::KIND,
            name: object.name().to_string(),
        });
    }
    if map.contains_key(object.id()) {
        return Err(ApplyError::SecretIdTaken {
            kind: T::KIND,
            id: object.id().to_string(),
        });
    }
    let mut object = object.clone();
    stamp(object.meta_mut(), index);
    Ok(map.insert(object.id().to_string(), object))
}

impl StoreState {
    /// The names of the services that reference object `id` of kind `T`, sorted.
    pub fn services_using<T: FileObject>(&self, id: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .services
            .values()
            .filter(|s| T::referenced_by(s).contains(&id))
            .map(|s| {
                s.spec
                    .as_ref()
                    .map_or("", |sp| sp.name.as_str())
                    .to_string()
            })
            .collect();
        names.sort();
        names
    }

    /// Object `id` of `map` may go: no service references it (its tasks of removed services,
    /// already told to stop, do not count: their files are in their containers already).
    pub fn check_unused<T: FileObject>(
        &self,
        map: &BTreeMap<String, T>,
        id: &str,
    ) -> Result<(), ApplyError> {
        let object = map.get(id).ok_or_else(|| ApplyError::NoSuchSecret {
            kind: T::KIND,
            id: id.to_string(),
        })?;
        let services = self.services_using::<T>(id);
        if services.is_empty() {
            return Ok(());
        }
        Err(ApplyError::SecretInUse {
            kind: T::KIND,
            name: object.name().to_string(),
            services,
        })
    }

    /// Every secret and config a service references exists (by ID, as the control API
    /// resolved the names).
    pub(super) fn check_service_references(&self, s: &Service) -> Result<(), ApplyError> {
        let missing = |kind: Kind, id: &str| ApplyError::NoSuchSecret {
            kind,
            id: id.to_string(),
        };
        if let Some(id) = Secret::referenced_by(s)
            .into_iter()
            .find(|id| !self.secrets.contains_key(*id))
        {
            return Err(missing(Kind::Secret, id));
        }
        if let Some(id) = Config::referenced_by(s)
            .into_iter()
            .find(|id| !self.configs.contains_key(*id))
        {
            return Err(missing(Kind::Config, id));
        }
        Ok(())
    }
}

/// The "in use" refusal's list, docker's way: "service: web" or "services: a, b".
pub fn service_list(services: &[String]) -> String {
    let plural = if services.len() == 1 { "" } else { "s" };
    format!("service{plural}: {}", services.join(", "))
}

#[cfg(test)]
mod tests {
    use shoal_proto::{
        store_action::Action, ContainerSpec, Proposal, SecretReference, SecretSpec, ServiceSpec,
        StoreAction,
    };

    use super::*;

    fn apply(st: &mut StoreState, index: u64, actions: Vec<Action>) -> Result<(), ApplyError> {
        let actions = actions
            .into_iter()
            .map(|a| StoreAction { action: Some(a) })
            .collect();
        st.apply(index, &Proposal { actions })
    }

    fn secret(id: &str, name: &str) -> Secret {
        Secret {
            id: id.into(),
            spec: Some(SecretSpec {
                name: name.into(),
                data: b"pw".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn service(id: &str, name: &str, secret_id: &str) -> Service {
        Service {
            id: id.into(),
            spec: Some(Box::new(ServiceSpec {
                name: name.into(),
                container: Some(ContainerSpec {
                    secrets: vec![SecretReference {
                        secret_id: secret_id.into(),
                        secret_name: "pw".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn names_are_unique_references_exist_and_used_secrets_stay() {
        let mut st = StoreState::default();
        apply(
            &mut st,
            1,
            vec![Action::CreateSecret(secret("x1", "pw").into())],
        )
        .expect("created");
        let err = apply(
            &mut st,
            2,
            vec![Action::CreateSecret(secret("x2", "pw").into())],
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("secret pw already exists"),
            "{err}"
        );

        // A service may reference only what exists; the whole entry is refused.
        let err = apply(
            &mut st,
            3,
            vec![
                Action::CreateSecret(secret("x3", "other").into()),
                Action::CreateService(service("s1", "web", "ghost").into()),
            ],
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "secret not found: ghost");
        assert!(!st.secrets.contains_key("x3"), "rolled back");

        apply(
            &mut st,
            4,
            vec![Action::CreateService(service("s1", "web", "x1").into())],
        )
        .expect("service");
        apply(
            &mut st,
            5,
            vec![Action::CreateService(service("s2", "api", "x1").into())],
        )
        .expect("service");
        let err = apply(&mut st, 6, vec![Action::DeleteSecret("x1".into())]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("secret 'pw' is in use by the following services: api, web"),
            "{err}"
        );
        apply(
            &mut st,
            7,
            vec![
                Action::DeleteService("s1".into()),
                Action::DeleteService("s2".into()),
                Action::DeleteSecret("x1".into()),
            ],
        )
        .expect("unused now");
        assert!(st.secrets.is_empty());
    }

    #[test]
    fn secrets_and_configs_ride_in_snapshots() {
        let mut st = StoreState::default();
        let config = Config {
            id: "c1".into(),
            spec: Some(shoal_proto::ConfigSpec {
                name: "app".into(),
                data: b"x".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        apply(
            &mut st,
            1,
            vec![
                Action::CreateSecret(secret("x1", "pw").into()),
                Action::CreateConfig(config.into()),
            ],
        )
        .expect("created");
        let back = StoreState::from_snapshot(st.to_snapshot(), 1);
        assert_eq!(back, st);
        assert_eq!(back.secrets["x1"].meta.as_ref().map(|m| m.version), Some(1));
    }
}
