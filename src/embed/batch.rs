//! Token-budget batching: rows sorted by length so a batch pads little, cut so that
//! `rows × longest row ≤ max_batch_tokens`.

/// Rows of one batch (indices into the chunk), longest first, and the padded length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPlan {
    pub rows: Vec<usize>,
    pub seq_len: usize,
}

/// Groups rows into batches of at most `max_batch_tokens` padded tokens. A single row longer
/// than the budget still forms a batch of its own.
pub fn plan_batches(lengths: &[usize], max_batch_tokens: usize) -> Vec<BatchPlan> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Stable sort: equal lengths keep input order, so plans are deterministic.
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
    let mut batches: Vec<BatchPlan> = Vec::new();
    for row in order {
        match batches.last_mut() {
            // Rows come longest first, so the batch's padded length is its first row's.
            Some(batch) if (batch.rows.len() + 1) * batch.seq_len <= max_batch_tokens => {
                batch.rows.push(row)
            }
            _ => batches.push(BatchPlan {
                rows: vec![row],
                seq_len: lengths[row],
            }),
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_budget_and_cover_every_row_once() {
        let lengths = [5, 40, 7, 7, 300, 12, 1, 40];
        let plans = plan_batches(&lengths, 100);
        let mut seen: Vec<usize> = plans.iter().flat_map(|p| p.rows.clone()).collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for plan in &plans {
            let longest = plan.rows.iter().map(|&r| lengths[r]).max().unwrap();
            assert_eq!(plan.seq_len, longest);
            assert!(plan.rows.len() == 1 || plan.rows.len() * plan.seq_len <= 100);
        }
        // The over-long row sits alone; the two 40s share a batch.
        assert_eq!(plans[0].rows, vec![4]);
        assert_eq!(plans[1].rows, vec![1, 7]);
    }

    #[test]
    fn empty_input_has_no_batches() {
        assert!(plan_batches(&[], 64).is_empty());
    }
}
