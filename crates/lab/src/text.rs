//! Plain-text tables for terminal output (`belay up`, `belay status`,
//! `belay drill` reports): one implementation for every command.

/// Left-aligned columns, two spaces apart, indented by two; no trailing
/// spaces.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::from("  ");
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up() {
        let t = super::table(&[
            vec!["NAME".into(), "PORT".into()],
            vec!["redis-1".into(), "6379".into()],
        ]);
        assert_eq!(t, "  NAME     PORT\n  redis-1  6379\n");
    }
}
