//! `--with-registry-auth` credentials: stored with the spec so that the tasks' workers can
//! pull, but never answered to a client (docker's API does not show them either), and kept
//! across an update that does not send them (the CLI reads the spec without them).

use shoal_proto::{Service, ServiceSpec};

/// `service` as a client may see it: without the registry credentials.
pub(super) fn hidden(mut service: Service) -> Service {
    for spec in [service.spec.as_mut(), service.previous_spec.as_mut()]
        .into_iter()
        .flatten()
    {
        spec.registry_auth = None;
    }
    service
}

/// An update that carries no credentials keeps the ones stored.
pub(super) fn keep_stored(current: Option<&ServiceSpec>, new: &mut ServiceSpec) {
    if new.registry_auth.is_none() {
        new.registry_auth = current.and_then(|c| c.registry_auth.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::RegistryAuth;

    #[test]
    fn credentials_are_hidden_and_kept() {
        let auth = RegistryAuth {
            server: "198.18.0.1:5000".into(),
            username: "u".into(),
            password: "p".into(),
        };
        let spec = ServiceSpec {
            registry_auth: Some(auth.clone()),
            ..Default::default()
        };
        let shown = hidden(Service {
            spec: Some(Box::new(spec.clone())),
            previous_spec: Some(Box::new(spec.clone())),
            ..Default::default()
        });
        assert!(shown.spec.unwrap().registry_auth.is_none());
        assert!(shown.previous_spec.unwrap().registry_auth.is_none());
        let mut update = ServiceSpec::default();
        keep_stored(Some(&spec), &mut update);
        assert_eq!(update.registry_auth, Some(auth));
        assert!(
            !format!("{spec:?}").contains("\"p\""),
            "Debug redacts the password"
        );
    }
}
