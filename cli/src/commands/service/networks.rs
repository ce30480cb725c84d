//! How the networking flags of `service create` and `service update` become a spec:
//! `--network` (parsed by `args::parse_network`: a name, or docker's long form
//! `name=N,alias=A,alias=B`), `--network-add/--network-rm`, the `--dns*` flags and their
//! `-add/-rm` forms.
//!
//! Network names are sent as given; the manager resolves them to IDs (it knows the networks).
//! Only `--network-rm` needs the IDs here, to find the attachment the stored spec names by ID:
//! [`network_ids`] asks the manager for them.

use anyhow::Result;
use shoal_proto::validate::NETWORK_NONE;
use shoal_proto::{ContainerSpec, DnsConfig, NetworkAttachmentConfig, ServiceSpec};

use super::args::UpdateArgs;
use crate::client::Client;
use crate::commands::list_networks;

/// The `--dns*` settings, or none when no flag was given (the node's DNS stays the default).
pub fn dns_config(
    nameservers: &[String],
    search: &[String],
    options: &[String],
) -> Option<DnsConfig> {
    let dns = DnsConfig {
        nameservers: nameservers.to_vec(),
        search: search.to_vec(),
        options: options.to_vec(),
    };
    (dns != DnsConfig::default()).then_some(dns)
}

/// `service update`'s `--hostname` and `--dns*-rm` then `--dns*-add` (each value once).
pub fn apply_container_update(container: &mut ContainerSpec, args: &UpdateArgs) {
    if let Some(hostname) = &args.hostname {
        container.hostname.clone_from(hostname);
    }
    let mut dns = container.dns.take().unwrap_or_default();
    for (list, rm, add) in [
        (&mut dns.nameservers, &args.dns_rm, &args.dns_add),
        (&mut dns.search, &args.dns_search_rm, &args.dns_search_add),
        (&mut dns.options, &args.dns_option_rm, &args.dns_option_add),
    ] {
        list.retain(|v| !rm.contains(v));
        for v in add {
            if !list.contains(v) {
                list.push(v.clone());
            }
        }
    }
    container.dns = dns_config(&dns.nameservers, &dns.search, &dns.options);
}

/// `--network none` (docker's "none" network) is the container's network mode, not a network:
/// "none" when it is among the `--network` values.
pub fn network_mode(networks: &[NetworkAttachmentConfig]) -> String {
    if networks.iter().any(is_none) {
        NETWORK_NONE.to_string()
    } else {
        String::new()
    }
}

/// The `--network` values that are networks (all but `none`).
pub fn without_none(networks: &[NetworkAttachmentConfig]) -> Vec<NetworkAttachmentConfig> {
    networks.iter().filter(|n| !is_none(n)).cloned().collect()
}

fn is_none(n: &NetworkAttachmentConfig) -> bool {
    n.target == NETWORK_NONE
}

/// `service update`'s `--network-rm` (by the IDs `removed` resolves them to, or as given), then
/// `--network-add`; `none` in either sets or clears the network mode.
pub fn apply_network_update(spec: &mut ServiceSpec, args: &UpdateArgs, removed: &[String]) {
    spec.networks
        .retain(|n| !removed.contains(&n.target) && !args.network_rm.contains(&n.target));
    spec.networks.extend(without_none(&args.network_add));
    let container = spec.container.get_or_insert_with(Default::default);
    if args.network_rm.iter().any(|n| n == NETWORK_NONE) {
        container.network_mode.clear();
    }
    if !network_mode(&args.network_add).is_empty() {
        container.network_mode = NETWORK_NONE.to_string();
    }
}

/// The IDs of the networks `keys` name (exact ID, exact name or unique ID prefix, the
/// manager's lookup order); a key that names none is left for the caller to match as is.
pub async fn network_ids(client: &Client, keys: &[String]) -> Result<Vec<String>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let networks = list_networks(client).await?;
    let name =
        |n: &shoal_proto::Network| n.spec.as_ref().map_or("", |s| s.name.as_str()).to_string();
    Ok(keys
        .iter()
        .filter_map(|key| {
            if let Some(n) = networks.iter().find(|n| n.id == *key || name(n) == *key) {
                return Some(n.id.clone());
            }
            let mut by_prefix = networks.iter().filter(|n| n.id.starts_with(key.as_str()));
            match (by_prefix.next(), by_prefix.next()) {
                (Some(n), None) => Some(n.id.clone()),
                _ => None,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::service::args::parse_network;
    use crate::commands::service::spec::{apply_update, build_spec};
    use crate::commands::service::testing::{create_args, parse, update_args};

    fn attach(target: &str, aliases: &[&str]) -> NetworkAttachmentConfig {
        NetworkAttachmentConfig {
            target: target.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn network_values_short_and_long() {
        assert_eq!(parse_network("front"), Ok(attach("front", &[])));
        assert_eq!(
            parse_network("name=front,alias=web,alias=www"),
            Ok(attach("front", &["web", "www"]))
        );
        assert_eq!(
            parse_network("alias=a,target=back"),
            Ok(attach("back", &["a"]))
        );
        for (bad, why) in [
            ("alias=x", "name= is required"),
            ("name=a,name=b", "name= is given twice"),
            ("name=a,ip=198.18.0.9", "unknown key \"ip\""),
            ("name=a,alias", "\"alias\" is not KEY=VALUE"),
            ("name=", "name= needs a value"),
            ("", "give a network name or ID"),
        ] {
            let err = parse_network(bad).unwrap_err();
            assert!(
                err.starts_with(&format!("invalid --network value {bad:?}: ")) && err.contains(why),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn create_takes_networks_and_dns() {
        let spec = build_spec(&create_args(&[
            "--name",
            "web",
            "--network",
            "front",
            "--network",
            "name=back,alias=api",
            "--dns",
            "198.18.0.53",
            "--dns-search",
            "example.com",
            "--dns-option",
            "ndots:2",
            "busybox",
        ]))
        .unwrap();
        assert_eq!(
            spec.networks,
            [attach("front", &[]), attach("back", &["api"])]
        );
        assert_eq!(
            spec.container.unwrap().dns,
            Some(DnsConfig {
                nameservers: vec!["198.18.0.53".into()],
                search: vec!["example.com".into()],
                options: vec!["ndots:2".into()],
            })
        );
        let plain = build_spec(&create_args(&["--name", "web", "busybox"])).unwrap();
        assert!(plain.networks.is_empty());
        assert_eq!(plain.container.unwrap().dns, None);
    }

    #[test]
    fn bad_networking_flags_fail_locally() {
        let err = parse(&["create", "--name", "web", "--network", "alias=x", "busybox"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("invalid --network value \"alias=x\": name= is required"),
            "{err}"
        );
        let err = build_spec(&create_args(&[
            "--name",
            "web",
            "--dns",
            "dns.example",
            "busybox",
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("invalid --dns value \"dns.example\""), "{err}");
        let spec = build_spec(&create_args(&["--name", "web", "busybox"])).unwrap();
        let err = apply_update(&spec, &update_args(&["--dns-add", "nope", "web"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid --dns value \"nope\""), "{err}");
    }

    #[test]
    fn network_none_is_the_network_mode_and_stands_alone() {
        let spec = build_spec(&create_args(&[
            "--name",
            "dark",
            "--network",
            "none",
            "busybox",
        ]))
        .unwrap();
        assert!(spec.networks.is_empty());
        assert_eq!(spec.container.as_ref().unwrap().network_mode, "none");
        let err = build_spec(&create_args(&[
            "--name",
            "dark",
            "--network",
            "none",
            "--network",
            "front",
            "busybox",
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("cannot be combined with other networks (front)"),
            "{err}"
        );

        let mut back = spec.clone();
        let args = update_args(&["--network-rm", "none", "--network-add", "front", "dark"]);
        apply_network_update(&mut back, &args, &[]);
        assert_eq!(back.networks, [attach("front", &[])]);
        assert_eq!(back.container.as_ref().unwrap().network_mode, "");
        let args = update_args(&["--network-rm", "front", "--network-add", "none", "dark"]);
        apply_network_update(&mut back, &args, &[]);
        assert!(back.networks.is_empty());
        assert_eq!(back.container.unwrap().network_mode, "none");
    }

    #[test]
    fn update_adds_and_removes_networks_and_dns() {
        let mut spec = build_spec(&create_args(&[
            "--name",
            "web",
            "--dns",
            "198.18.0.53",
            "--dns-search",
            "a.example",
            "busybox",
        ]))
        .unwrap();
        spec.networks = vec![attach("id-front", &[]), attach("id-back", &[])];
        let args = update_args(&[
            "--network-rm",
            "front",
            "--network-add",
            "name=extra,alias=x",
            "--dns-rm",
            "198.18.0.53",
            "--dns-add",
            "198.18.0.54",
            "--dns-search-rm",
            "a.example",
            "--dns-option-add",
            "ndots:1",
            "--hostname",
            "h2",
            "web",
        ]);
        let mut updated = apply_update(&spec, &args).unwrap();
        apply_network_update(&mut updated, &args, &["id-front".to_string()]);
        assert_eq!(
            updated.networks,
            [attach("id-back", &[]), attach("extra", &["x"])]
        );
        let c = updated.container.unwrap();
        assert_eq!(c.hostname, "h2");
        assert_eq!(
            c.dns,
            Some(DnsConfig {
                nameservers: vec!["198.18.0.54".into()],
                search: vec![],
                options: vec!["ndots:1".into()],
            })
        );

        // Removing every setting leaves no DNS config; an ID given as is matches too.
        let args = update_args(&[
            "--dns-rm",
            "198.18.0.54",
            "--dns-option-rm",
            "ndots:1",
            "--network-rm",
            "id-back",
            "web",
        ]);
        let mut again = apply_update(&spec, &args).unwrap();
        apply_network_update(&mut again, &args, &[]);
        assert_eq!(again.networks, [attach("id-front", &[])]);
        let dns = again.container.unwrap().dns.unwrap();
        assert_eq!(dns.nameservers, ["198.18.0.53"]);
        assert_eq!(dns.search, ["a.example"]);
        assert!(dns.options.is_empty());
    }
}
