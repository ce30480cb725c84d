//! `network ls`: docker's table of networks, sorted by name, or one JSON object per line, or
//! a template.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::{Map, Value};
use shoal_proto::{Network, NetworkSpec};

use super::{LsArgs, SCOPE};
use crate::client::Client;
use crate::output::{self, Format, Listing, Row};

const NETWORK_COLUMNS: &[(&str, &str)] = &[
    ("ID", "NETWORK ID"),
    ("Name", "NAME"),
    ("Driver", "DRIVER"),
    ("Scope", "SCOPE"),
];

pub(super) async fn ls(client: &Client, args: LsArgs) -> Result<()> {
    let networks = crate::commands::list_networks(client).await?;
    let listing = network_listing(&networks, args.no_trunc);
    if args.quiet {
        for row in &listing.rows {
            if let Some(Value::String(id)) = row.fields.get("ID") {
                println!("{id}");
            }
        }
        return Ok(());
    }
    print!(
        "{}",
        listing.render(&Format::parse(args.format.as_deref()))?
    );
    Ok(())
}

/// Sorted by name, as docker lists networks. The JSON fields are docker's, strings throughout.
pub fn network_listing(networks: &[Network], no_trunc: bool) -> Listing {
    let mut sorted: Vec<(&Network, NetworkSpec)> = networks
        .iter()
        .map(|n| (n, n.spec.clone().unwrap_or_default()))
        .collect();
    sorted.sort_by(|(a, sa), (b, sb)| sa.name.cmp(&sb.name).then(a.id.cmp(&b.id)));
    let rows = sorted
        .into_iter()
        .map(|(network, spec)| {
            let id = if no_trunc {
                network.id.clone()
            } else {
                output::short_id(&network.id).to_string()
            };
            let cells = vec![
                id,
                spec.name.clone(),
                spec.driver.clone(),
                SCOPE.to_string(),
            ];
            let mut fields: Map<String, Value> = NETWORK_COLUMNS
                .iter()
                .zip(&cells)
                .map(|((k, _), v)| (k.to_string(), v.clone().into()))
                .collect();
            fields.insert("Internal".into(), spec.internal.to_string().into());
            fields.insert("IPv6".into(), "false".into());
            fields.insert("Labels".into(), labels_text(&spec).into());
            let created = network.meta.as_ref().map_or(0, |m| m.created_at_ms);
            fields.insert("CreatedAt".into(), output::rfc3339(created).into());
            Row { cells, fields }
        })
        .collect();
    Listing {
        columns: NETWORK_COLUMNS,
        rows,
    }
}

/// `a=1,b=2`, sorted so that the output is stable.
fn labels_text(spec: &NetworkSpec) -> String {
    let sorted: BTreeMap<&String, &String> = spec.labels.iter().collect();
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::fixtures::network;

    #[test]
    fn ls_table_sorted_by_name() {
        let networks = vec![
            network("zzzzzzzzzzzzzzzzzzzzzzzzz", "web", 4097),
            network("abcdefghijklmnopqrstuvwxy", "backend", 4098),
        ];
        let out = network_listing(&networks, false)
            .render(&Format::Table)
            .unwrap();
        assert_eq!(
            out,
            "NETWORK ID     NAME      DRIVER    SCOPE\n\
             abcdefghijkl   backend   overlay   swarm\n\
             zzzzzzzzzzzz   web       overlay   swarm\n"
        );
        let long = network_listing(&networks, true);
        assert_eq!(long.rows[0].cells[0], "abcdefghijklmnopqrstuvwxy");
    }

    #[test]
    fn ls_json_has_dockers_fields() {
        let mut n = network("abcdefghijklmnopqrstuvwxy", "backend", 4097);
        if let Some(spec) = n.spec.as_mut() {
            spec.internal = true;
            spec.labels = [("b".to_string(), "2".to_string()), ("a".into(), "1".into())].into();
        }
        let out = network_listing(&[n], false).render(&Format::Json).unwrap();
        assert_eq!(
            out,
            "{\"CreatedAt\":\"2023-11-14T22:13:20.000Z\",\"Driver\":\"overlay\",\
             \"ID\":\"abcdefghijkl\",\"IPv6\":\"false\",\"Internal\":\"true\",\
             \"Labels\":\"a=1,b=2\",\"Name\":\"backend\",\"Scope\":\"swarm\"}\n"
        );
    }
}
