//! A new user's papercut check (issue 12): with a few hundred services, some with names of
//! docker's maximum length, and a service with many tasks, `service ls` and `service ps` answer
//! quickly and their tables stay aligned: every row's cells start under their column's header.
//! How long they took is printed (not asserted: the machine is shared and noisy).

use std::time::{Duration, Instant};

use shoal_tests::daemon::{words, ShoalHost};

/// Where each column of a table starts, from its header (columns are separated by runs of
/// at least two spaces; a header itself may hold one space, e.g. "DESIRED STATE").
fn column_starts(header: &str) -> Vec<usize> {
    let bytes = header.as_bytes();
    let mut starts = vec![0];
    for i in 2..bytes.len() {
        if bytes[i] != b' ' && bytes[i - 1] == b' ' && bytes[i - 2] == b' ' {
            starts.push(i);
        }
    }
    starts
}

/// Every row's non-empty cells start exactly at their column, after a space.
fn assert_aligned(table: &str) {
    let mut lines = table.lines();
    let header = lines.next().expect("a header line");
    let starts = column_starts(header);
    assert!(starts.len() >= 4, "too few columns in {header:?}");
    for row in lines {
        for &p in starts.iter().skip(1) {
            let Some(cell_start) = row.as_bytes().get(p) else {
                continue; // an empty last cell
            };
            assert!(
                row.as_bytes()[p - 1] == b' ' && *cell_start != b' ',
                "misaligned at column {p}:\n{header}\n{row}"
            );
        }
    }
}

fn timed(host: &ShoalHost, args: &[&str]) -> (String, Duration) {
    let started = Instant::now();
    let out = host.shoal_ok(args);
    (out, started.elapsed())
}

#[test]
fn hundreds_of_services_list_quickly_and_aligned() {
    let host = ShoalHost::start_swarm();
    const SERVICES: usize = 300;
    for i in 0..SERVICES {
        // Every tenth name is docker's longest (63 characters).
        let name = if i % 10 == 0 {
            format!("{i:03}-{}", "x".repeat(59))
        } else {
            format!("svc-{i}")
        };
        host.shoal_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            &name,
            "--replicas",
            "0",
            "busybox",
            "true",
        ]);
    }
    host.shoal_ok(&words(
        "service create --name many --replicas 20 --stop-grace-period 1s busybox sleep 3600",
    ));
    host.wait_for(Duration::from_secs(120), "many at 20/20", || {
        host.replicas("many").as_deref() == Some("20/20")
    });

    let (ls, ls_took) = timed(&host, &["service", "ls"]);
    assert_eq!(ls.lines().count(), SERVICES + 2, "header + every service");
    assert_aligned(&ls);
    let long = format!("000-{}", "x".repeat(59));
    assert!(ls.contains(&long), "long names are shown whole");

    let (ps, ps_took) = timed(&host, &["service", "ps", "many"]);
    assert_eq!(ps.lines().count(), 21, "{ps}");
    assert_aligned(&ps);
    let (ps_all, ps_all_took) = timed(&host, &["service", "ps", "many", &long, "svc-1"]);
    assert_aligned(&ps_all);
    println!(
        "service ls ({} services): {ls_took:?}; service ps (20 tasks): {ps_took:?}; \
         service ps (3 services): {ps_all_took:?}",
        SERVICES + 1
    );
}

#[test]
fn column_starts_read_docker_headers() {
    assert_eq!(
        column_starts("ID     NAME   DESIRED STATE   CURRENT STATE"),
        vec![0, 7, 14, 30]
    );
}
