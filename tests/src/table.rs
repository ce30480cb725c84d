//! The CLI's tables (`service ls`, `service ps` without `--format`), parsed for tests that
//! check what a user sees.

use std::collections::BTreeMap;

/// Parses a table as the CLI prints it (a header line, then rows aligned under it, columns
/// separated by at least two spaces) into one map per row, keyed by header name.
///
/// Cells are cut at the header's column offsets, so cells with single spaces ("Running 5
/// seconds ago") and empty cells parse correctly.
pub fn parse_table(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let header: Vec<char> = header.chars().collect();
    // Column starts: a non-space preceded by line start or by two or more spaces.
    let mut columns: Vec<(usize, String)> = Vec::new();
    let mut i = 0;
    while i < header.len() {
        if header[i] != ' ' && (i == 0 || (i >= 2 && header[i - 1] == ' ' && header[i - 2] == ' '))
        {
            let start = i;
            // A name runs until two spaces in a row (names such as "DESIRED STATE" hold one).
            while i < header.len() && !(header[i] == ' ' && header.get(i + 1) == Some(&' ')) {
                i += 1;
            }
            let name: String = header[start..i].iter().collect();
            columns.push((start, name.trim().to_string()));
        } else {
            i += 1;
        }
    }
    lines
        .map(|line| {
            let chars: Vec<char> = line.chars().collect();
            columns
                .iter()
                .enumerate()
                .map(|(n, (start, name))| {
                    let end = columns.get(n + 1).map_or(chars.len(), |(s, _)| *s);
                    let cell: String = chars
                        .get(*start.min(&chars.len())..end.min(chars.len()))
                        .map(|c| c.iter().collect())
                        .unwrap_or_default();
                    (name.clone(), cell.trim().to_string())
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table_cuts_cells_at_header_offsets() {
        let text = "\
ID         NAME        DESIRED STATE   CURRENT STATE           ERROR
abc123     web.1       Running         Running 5 seconds ago
def456      \\_ web.1   Shutdown        Failed 9 seconds ago    task: non-zero exit (137)
";
        let rows = parse_table(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["ID"], "abc123");
        assert_eq!(rows[0]["CURRENT STATE"], "Running 5 seconds ago");
        assert_eq!(rows[0]["ERROR"], "");
        assert_eq!(rows[1]["NAME"], "\\_ web.1");
        assert_eq!(rows[1]["DESIRED STATE"], "Shutdown");
        assert_eq!(rows[1]["ERROR"], "task: non-zero exit (137)");
    }

    #[test]
    fn parse_table_of_empty_output_has_no_rows() {
        assert!(parse_table("").is_empty());
        assert!(parse_table("ID   NAME\n").is_empty());
    }
}
