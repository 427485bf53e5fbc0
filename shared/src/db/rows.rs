//! Writing a group of rows in few statements: multi-row `VALUES` lists in chunks whose sizes
//! are powers of two (at most [`MAX_ROWS`]), so a group of any size is a handful of
//! statements, and each table has only a few statement texts for the connection's cache.

/// The most rows one statement writes.
pub const MAX_ROWS: usize = 64;

/// `items` in chunks of 64, 32, … 1 (the largest power of two that fits, each time).
pub fn chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = MAX_ROWS.min(1 << rest.len().ilog2());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// `($1, $2, …), (…)`: the placeholders of `rows` rows of `columns` values, for a statement
/// whose only parameters these are, bound in order. On SQLite they are anonymous (`(?, ?, …)`):
/// binding a numbered parameter looks its name up in a list (`sqlite3_bind_parameter_name`),
/// so a statement of n numbered parameters costs n² to bind — 2.9% of the brain's CPU with
/// groups of 64 rows.
pub fn values(conn: &sqlx::AnyConnection, rows: usize, columns: usize) -> String {
    placeholders(conn.backend_name() == "SQLite", rows, columns)
}

fn placeholders(anonymous: bool, rows: usize, columns: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(rows * columns * 6);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            if anonymous {
                sql.push('?');
            } else {
                let _ = write!(sql, "${}", r * columns + c + 1);
            }
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_split_into_powers_of_two_and_placeholders_count_up() {
        let sizes = |n: usize| -> Vec<usize> {
            let v: Vec<usize> = (0..n).collect();
            chunks(&v).map(<[usize]>::len).collect()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(13), [8, 4, 1]);
        assert_eq!(sizes(64), [64]);
        assert_eq!(sizes(150), [64, 64, 16, 4, 2]);
        let v: Vec<usize> = (0..13).collect();
        let flat: Vec<usize> = chunks(&v).flatten().copied().collect();
        assert_eq!(flat, v, "every row once, in order");
        assert_eq!(placeholders(false, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(true, 2, 2), "(?, ?), (?, ?)");
    }
}
