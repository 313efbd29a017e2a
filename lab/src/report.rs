//! Text output of the experiment harness: an aligned table that can be printed row by row while
//! a long experiment runs, and the machine-readable report that ends stdout under `--json`.

use serde::Serialize;

/// A right-aligned text table whose column widths are fixed up front, so rows can be printed as
/// soon as they are measured instead of after the whole (possibly hour-long) run.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(&'static str, usize)>,
}

impl Table {
    /// `columns` are `(header, minimum width)`; a column is never narrower than its header.
    pub fn new(columns: &[(&'static str, usize)]) -> Self {
        let columns = columns
            .iter()
            .map(|&(header, width)| (header, width.max(header.chars().count())))
            .collect();
        Self { columns }
    }

    /// The header line.
    pub fn header(&self) -> String {
        let cells: Vec<&str> = self.columns.iter().map(|&(header, _)| header).collect();
        self.line(&cells)
    }

    /// One row; a value wider than its column pushes the rest of that line right.
    ///
    /// # Panics
    /// If `cells` does not have one value per column (a bug in the caller).
    pub fn row<S: AsRef<str>>(&self, cells: &[S]) -> String {
        assert_eq!(cells.len(), self.columns.len(), "one cell per column");
        self.line(cells)
    }

    fn line<S: AsRef<str>>(&self, cells: &[S]) -> String {
        let mut line = String::new();
        for (index, (cell, &(_, width))) in cells.iter().zip(&self.columns).enumerate() {
            if index > 0 {
                line.push_str("  ");
            }
            line.push_str(&format!("{:>width$}", cell.as_ref()));
        }
        line
    }
}

#[derive(Serialize)]
struct Report<'a, R> {
    mode: &'a str,
    rows: &'a [R],
}

/// The `--json` report: exactly one line, `{"mode": ..., "rows": [...]}`, so scripts can take the
/// last line of stdout whatever was printed before it.
pub fn json_line<R: Serialize>(mode: &str, rows: &[R]) -> serde_json::Result<String> {
    serde_json::to_string(&Report { mode, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_right() {
        let table = Table::new(&[("nodes", 6), ("mean hops", 0)]);
        assert_eq!(table.header(), " nodes  mean hops");
        assert_eq!(table.row(&["64", "2.500"]), "    64      2.500");
    }

    #[test]
    fn json_report_is_one_line() {
        #[derive(Serialize)]
        struct Row {
            nodes: usize,
        }
        let line = json_line("sim-hops", &[Row { nodes: 1 }, Row { nodes: 2 }]).unwrap();
        assert_eq!(
            line,
            r#"{"mode":"sim-hops","rows":[{"nodes":1},{"nodes":2}]}"#
        );
    }
}
