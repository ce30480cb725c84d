//! A fault-injection run's history and the checks made on it afterwards (Jepsen's way: record
//! every request with when it started, when it ended and what it returned, then look for
//! outcomes no correct system could give).
//!
//! Each service is written by one client only, one request at a time, so its writes are
//! totally ordered: the final value of a field must be the last *acknowledged* write's, or one
//! written after it whose outcome is unknown (a timeout or a failover may have let it through).
//! Reads of a service must never go back in time: a read that began after another read ended
//! returns a version at least as new, whichever managers served them; and a name keeps one ID.

use std::collections::BTreeMap;
use std::time::Instant;

/// What a request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: the command succeeded.
    Ok,
    /// Refused or failed: it may still have taken effect (a refusal after a failover, a
    /// timeout), so it neither counts as done nor as not done.
    Unknown(String),
}

/// What a request was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Create,
    /// `service scale NAME=N`.
    Scale(u64),
    /// `service update --env-add SEQ=N`.
    Env(u64),
    /// `service inspect`: the ID and version read, when it answered.
    Read(Option<(String, u64)>),
}

#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub service: String,
    pub request: Request,
    pub start: Instant,
    pub end: Instant,
    pub outcome: Outcome,
}

/// A service as it stands after the run: its ID, replicas and `SEQ` environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Final {
    pub id: String,
    pub replicas: u64,
    pub seq: Option<u64>,
}

/// Every anomaly found, in words.
pub fn anomalies(ops: &[Op], finals: &BTreeMap<String, Final>) -> Vec<String> {
    let mut found = Vec::new();
    let mut services: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        services.entry(&op.service).or_default().push(op);
    }
    for (name, ops) in &services {
        let created = ops
            .iter()
            .any(|o| o.request == Request::Create && o.outcome == Outcome::Ok);
        let Some(fin) = finals.get(*name) else {
            if created {
                found.push(format!("acknowledged create of {name} is lost"));
            }
            continue;
        };
        let scales = writes(ops, |r| match r {
            Request::Scale(n) => Some(*n),
            _ => None,
        });
        if !allowed(&scales, 1).contains(&fin.replicas) {
            found.push(format!(
                "{name} has {} replicas; the scales were {scales:?}",
                fin.replicas
            ));
        }
        let envs = writes(ops, |r| match r {
            Request::Env(n) => Some(*n),
            _ => None,
        });
        if !allowed(&envs, 0).contains(&fin.seq.unwrap_or(0)) {
            found.push(format!(
                "{name} has SEQ={:?}; the writes of SEQ were {envs:?}",
                fin.seq
            ));
        }
        found.extend(read_anomalies(name, ops, fin));
    }
    found.extend(shared_ids(finals));
    found
}

/// The values a client wrote to one field, in order, with their outcomes.
fn writes(ops: &[&Op], value: impl Fn(&Request) -> Option<u64>) -> Vec<(u64, bool)> {
    ops.iter()
        .filter_map(|o| value(&o.request).map(|v| (v, o.outcome == Outcome::Ok)))
        .collect()
}

/// What the field may hold at the end: the last acknowledged value (`initial` if none) and
/// any value written after it with an unknown outcome.
fn allowed(writes: &[(u64, bool)], initial: u64) -> Vec<u64> {
    let last_ok = writes.iter().rposition(|(_, ok)| *ok);
    let base = last_ok.map_or(initial, |i| writes[i].0);
    let after = last_ok.map_or(0, |i| i + 1);
    std::iter::once(base)
        .chain(writes[after..].iter().map(|(v, _)| *v))
        .collect()
}

fn read_anomalies(name: &str, ops: &[&Op], fin: &Final) -> Vec<String> {
    let reads: Vec<(&Op, &String, u64)> = ops
        .iter()
        .filter_map(|o| match &o.request {
            Request::Read(Some((id, version))) => Some((*o, id, *version)),
            _ => None,
        })
        .collect();
    let mut found = Vec::new();
    for (op, id, _) in &reads {
        if **id != fin.id {
            found.push(format!(
                "{name} was read with ID {id} by client {} but has ID {} (an ID reused or a \
                 service re-created)",
                op.client, fin.id
            ));
        }
    }
    for (earlier, _, v1) in &reads {
        for (later, _, v2) in &reads {
            if later.start > earlier.end && v2 < v1 {
                found.push(format!(
                    "a read of {name} went back in time: version {v1} was read, then a read \
                     that began after it returned version {v2}"
                ));
            }
        }
    }
    found
}

/// Two services never share an ID.
fn shared_ids(finals: &BTreeMap<String, Final>) -> Vec<String> {
    let mut by_id: BTreeMap<&str, &str> = BTreeMap::new();
    let mut found = Vec::new();
    for (name, f) in finals {
        if let Some(other) = by_id.insert(&f.id, name) {
            found.push(format!("services {other} and {name} share ID {}", f.id));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn op(request: Request, ok: bool, start_ms: u64, end_ms: u64) -> Op {
        let t0 = *T0;
        Op {
            client: 0,
            service: "s".into(),
            request,
            start: t0 + Duration::from_millis(start_ms),
            end: t0 + Duration::from_millis(end_ms),
            outcome: if ok {
                Outcome::Ok
            } else {
                Outcome::Unknown("timeout".into())
            },
        }
    }

    static T0: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

    fn fin(replicas: u64, seq: Option<u64>) -> BTreeMap<String, Final> {
        BTreeMap::from([(
            "s".to_string(),
            Final {
                id: "id1".into(),
                replicas,
                seq,
            },
        )])
    }

    #[test]
    fn the_last_acknowledged_write_or_a_later_unknown_one_holds() {
        let ops = vec![
            op(Request::Create, true, 0, 1),
            op(Request::Scale(3), true, 2, 3),
            op(Request::Scale(2), false, 4, 5),
        ];
        assert!(anomalies(&ops, &fin(3, None)).is_empty());
        assert!(anomalies(&ops, &fin(2, None)).is_empty());
        // 1 is the initial count, overwritten by an acknowledged scale: a lost write.
        assert_eq!(anomalies(&ops, &fin(1, None)).len(), 1);
        // A lost acknowledged create.
        assert_eq!(anomalies(&ops, &BTreeMap::new()).len(), 1);
    }

    #[test]
    fn reads_going_back_in_time_and_changed_ids_are_found() {
        let read =
            |id: &str, v: u64, s: u64, e: u64| op(Request::Read(Some((id.into(), v))), true, s, e);
        let mut ops = vec![
            op(Request::Create, true, 0, 1),
            read("id1", 5, 2, 3),
            read("id1", 7, 4, 5),
            // Overlapping the first: may see either.
            read("id1", 4, 2, 6),
        ];
        assert!(anomalies(&ops, &fin(1, None)).is_empty());
        ops.push(read("id1", 6, 10, 11));
        assert_eq!(anomalies(&ops, &fin(1, None)).len(), 1, "7 then 6");
        ops.push(read("id2", 9, 12, 13));
        assert_eq!(anomalies(&ops, &fin(1, None)).len(), 2, "another ID");
    }

    #[test]
    fn two_services_with_one_id_are_found() {
        let mut finals = fin(1, None);
        finals.insert(
            "t".into(),
            Final {
                id: "id1".into(),
                replicas: 1,
                seq: None,
            },
        );
        assert_eq!(shared_ids(&finals).len(), 1);
    }
}
